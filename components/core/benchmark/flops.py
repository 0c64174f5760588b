"""Model FLOPs per example, counted by TensorFlow's profiler.

The serving graph is read from the SavedModel, its function calls inlined by Grappler
(a Keras export hides every layer inside function calls, which the profiler cannot see
into), the batch dimension of the signature inputs set to 1, and the graph profiled with
`tf.compat.v1.profiler`'s float_operation option. Fused kernels that Grappler's remapper
produces (`_FusedConv2D`, `_FusedMatMul`, ...) get flop counts here, registered the way
TensorFlow registers them for Conv2D and MatMul, so that an optimized model is counted
like its source. A graph whose shapes stay unknown with batch 1 is not countable: None.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
from tensorflow.python.framework import graph_util, ops

from components.core.errors import ServoptError
from components.core.grappler import run_grappler
from components.core.model_io import read_serving_graph

_ELEMENTWISE_FUSED = {"BiasAdd", "BiasAddV1", "Add", "AddV2"}


def _shape(graph, name: str) -> list[int]:
    shape = graph_util.tensor_shape_from_node_def_name(graph, name)
    shape.assert_is_fully_defined()
    return shape.as_list()


def _fused_extra(node, output_count: int) -> int:
    fused = [op.decode() for op in node.attr["fused_ops"].list.s]
    return output_count * sum(1 for op in fused if op in _ELEMENTWISE_FUSED)


def _fused_conv_flops(graph, node):
    filter_shape = _shape(graph, node.input[1])
    output_count = int(np.prod(_shape(graph, node.name), dtype=np.int64))
    per_output = 2 * filter_shape[0] * filter_shape[1]
    if node.op != "_FusedDepthwiseConv2dNative":
        per_output *= filter_shape[2]
    return ops.OpStats("flops", output_count * per_output + _fused_extra(node, output_count))


def _fused_matmul_flops(graph, node):
    a = _shape(graph, node.input[0])
    output = _shape(graph, node.name)
    inner = a[0] if node.attr["transpose_a"].b else a[1]
    output_count = int(np.prod(output, dtype=np.int64))
    return ops.OpStats("flops", 2 * inner * output_count + _fused_extra(node, output_count))


def _register() -> None:
    for op_type, function in (("_FusedConv2D", _fused_conv_flops),
                              ("_FusedDepthwiseConv2dNative", _fused_conv_flops),
                              ("_FusedMatMul", _fused_matmul_flops)):
        with contextlib.suppress(KeyError):  # registered already (module reloaded)
            ops.RegisterStatistics(op_type, "flops")(function)


_register()


def _countable(graph) -> bool:
    """Every op with a flop count has fully known shapes (else the count is partial)."""
    for op in graph.get_operations():
        try:
            ops.get_stats_for_node_def(graph, op.node_def, "flops")
        except ValueError:
            return False
    return True


def flops_per_example(model_dir: Path, signature: str) -> int | None:
    """Float operations for one example through `signature`, or None if not countable."""
    serving = read_serving_graph(Path(model_dir))
    if signature not in serving.signatures:
        raise ServoptError(f"{model_dir}: no signature '{signature}'")
    sig = serving.signatures[signature]
    # Counted, never served: a bf16 variant's oneDNN-only kernels (a bf16 depthwise conv)
    # count like the ops they compute.
    flat = run_grappler(serving, ["function"], served=False)
    outputs = sorted({t.name.split(":")[0] for t in sig.outputs.values()})
    sub = graph_util.extract_sub_graph(flat, outputs)
    inputs = {t.name.split(":")[0] for t in sig.inputs.values()}
    for node in sub.node:
        if node.name in inputs and node.op == "Placeholder":
            dims = node.attr["shape"].shape.dim
            if dims and dims[0].size < 0:
                dims[0].size = 1
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.graph_util.import_graph_def(sub, name="")
    except (ValueError, tf.errors.OpError):
        return None
    if not _countable(graph):
        return None
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph, options=options)
    total = int(profile.total_float_ops) if profile is not None else 0
    return total or None
