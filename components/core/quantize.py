"""Weight quantization that TF Serving can serve as it is.

Large float32 weight constants are stored in a smaller type and turned back into float32
by ordinary ops in the graph, so every TF Serving build runs the result:
- float16: Const(half) -> Cast(float32)                                    about 2x smaller
- int8:    Const(int8) -> Cast(float32) -> Mul(per-channel scale)           about 4x smaller
  Symmetric, one scale per output channel (the last axis: HWIO conv filters, [in, out]
  dense kernels), scale = max|w| / 127.
The dequantizing node takes the original constant's name, so consumers are unchanged.
Compute stays float32: this shrinks the model on disk and in transfer, not the FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.core.tf_setup import tf

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2

from components.core.choices import DEFAULT_MIN_ELEMENTS, WEIGHT_MODES
from components.core.errors import ServoptError, StepSkipped
from components.core.model_io import ServingGraph

_FLOAT = tf.float32.as_datatype_enum


@dataclass
class QuantizeResult:
    graph: ServingGraph
    mode: str
    tensors_quantized: int
    weight_bytes_before: int
    weight_bytes_after: int


def _const(name: str, value: np.ndarray, controls=()) -> node_def_pb2.NodeDef:
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.input.extend(controls)
    node.attr["dtype"].type = tf.dtypes.as_dtype(value.dtype).as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    return node


def _cast(name: str, source: str, src_dtype) -> node_def_pb2.NodeDef:
    node = node_def_pb2.NodeDef(name=name, op="Cast", input=[source])
    node.attr["SrcT"].type = src_dtype.as_datatype_enum
    node.attr["DstT"].type = _FLOAT
    node.attr["Truncate"].b = False
    return node


def int8_per_channel(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 along the last axis: returns (int8 values, scales)."""
    reduce_axes = tuple(range(weights.ndim - 1))
    scale = np.max(np.abs(weights), axis=reduce_axes) / 127.0 if reduce_axes else (
        np.array(np.max(np.abs(weights)) / 127.0))
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(weights / scale), -127, 127).astype(np.int8)
    return quantized, scale


def _quantized_nodes(node: node_def_pb2.NodeDef, weights: np.ndarray, mode: str
                     ) -> list[node_def_pb2.NodeDef]:
    controls = [i for i in node.input if i.startswith("^")]
    name = node.name
    if mode == "float16":
        return [_const(f"{name}/float16", weights.astype(np.float16), controls),
                _cast(name, f"{name}/float16", tf.float16)]
    quantized, scale = int8_per_channel(weights)
    multiply = node_def_pb2.NodeDef(name=name, op="Mul",
                                    input=[f"{name}/dequantize", f"{name}/scale"])
    multiply.attr["T"].type = _FLOAT
    return [_const(f"{name}/int8", quantized, controls),
            _cast(f"{name}/dequantize", f"{name}/int8", tf.int8),
            _const(f"{name}/scale", scale),
            multiply]


def quantize_weights(graph: ServingGraph, mode: str,
                     min_elements: int = DEFAULT_MIN_ELEMENTS) -> QuantizeResult:
    if mode not in WEIGHT_MODES:
        raise ServoptError(f"unknown quantization mode {mode!r}; known modes: "
                           f"{', '.join(WEIGHT_MODES)}")
    output = graph_pb2.GraphDef()
    output.versions.CopyFrom(graph.graph_def.versions)
    output.library.CopyFrom(graph.graph_def.library)
    count = before = after = 0
    for node in graph.graph_def.node:
        is_weight = (node.op == "Const" and node.attr["dtype"].type == _FLOAT
                     and _num_elements(node) >= min_elements)
        if not is_weight:
            output.node.add().CopyFrom(node)
            continue
        weights = tf.make_ndarray(node.attr["value"].tensor)
        replacement = _quantized_nodes(node, weights, mode)
        output.node.extend(replacement)
        count += 1
        before += weights.nbytes
        after += sum(len(n.attr["value"].tensor.tensor_content) for n in replacement
                     if n.op == "Const")
    if count == 0:
        raise StepSkipped(f"no float32 weight tensor has {min_elements} or more elements")
    return QuantizeResult(graph.with_graph(output), mode, count, before, after)


def _num_elements(node: node_def_pb2.NodeDef) -> int:
    dims = [d.size for d in node.attr["value"].tensor.tensor_shape.dim]
    return int(np.prod(dims)) if dims else 1
