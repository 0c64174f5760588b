"""GraphDef rewrites that Grappler does not do on real Keras models, done by hand.

Grappler's arithmetic optimizer folds a batch norm into a convolution only when the
filter constant has a single consumer and the scale follows the conv directly; in Keras
exports the filters are shared by every signature that calls the model, biases come as
AddV2 of a [1, 1, 1, C] constant, and Identity nodes left by inlining sit in between, so
on the demo CNN, ResNet50 and MobileNetV2 it folds nothing (or leaves the bias as an
AddV2 the remapper cannot fuse). These rewrites work on the frozen graph the way the
Graph Transform Tool's `remove_nodes(op=Identity)` and `fold_batch_norms` did:

- `remove_identity` bypasses every Identity that is not a signature input/output.
- `fold_batch_norms` turns `conv -> [bias] -> (Mul | Add | Sub | RealDiv |
  FusedBatchNorm)*` with per-channel constants into `conv(W * s) -> BiasAdd(b * s + t)`,
  the form Grappler's remapper fuses with the activation into `_FusedConv2D` or
  `_FusedMatMul` (and, where oneDNN is on, `_FusedDepthwiseConv2dNative`).
- `unfuse` turns Grappler's fused contractions back into standard ops (for TFLite's
  converter and the bf16 rewrite, which read only those), and `without_onednn_fusions`
  splits the fusions that only oneDNN's kernels run into what the plain kernels run.
All keep the names of nodes other nodes consume, so signatures stay valid.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from components.core.tf_setup import tf

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2

LINEAR_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul")
_FLOAT = tf.float32.as_datatype_enum


def node_name(tensor: str) -> str:
    """'^a', 'a:1', 'a' -> 'a'."""
    return tensor.lstrip("^").split(":")[0]


@dataclass
class _Index:
    """Nodes by name and who consumes each node, data and control edges apart."""

    graph_def: graph_pb2.GraphDef
    nodes: dict[str, node_def_pb2.NodeDef] = field(init=False)
    consumers: dict[str, list[tuple[node_def_pb2.NodeDef, str]]] = field(init=False)

    def __post_init__(self):
        self.nodes = {n.name: n for n in self.graph_def.node}
        self.consumers = defaultdict(list)
        for node in self.graph_def.node:
            for tensor in node.input:
                self.consumers[node_name(tensor)].append((node, tensor))

    def sole_data_consumer(self, name: str) -> node_def_pb2.NodeDef | None:
        """The only consumer of `name`, if it has exactly one and reads output 0."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0][1] not in (name, f"{name}:0"):
            return None
        return users[0][0]

    def const_value(self, tensor: str) -> np.ndarray | None:
        node = self.nodes.get(node_name(tensor))
        if node is None or node.op != "Const" or tensor.startswith("^") or (
                ":" in tensor and not tensor.endswith(":0")):
            return None
        return tf.make_ndarray(node.attr["value"].tensor)


# --- remove_identity -------------------------------------------------------------------

# Grappler's own rules for an Identity it may not remove (tensorflow/core/grappler/
# optimizers/dependency_optimizer.cc `DependencyOptimizer::SafeToRemoveIdentity`): one
# after a variable read or a Recv; one with control inputs that a Merge or a _Retval
# consumes; and one after a Switch that anchors a control dependency (the `pivot_t` /
# `pivot_f` nodes lowered `If`/`cond` leave): `^Switch` would fire on both branches.
_VARIABLE_OPS = frozenset({"Variable", "VariableV2", "AutoReloadVariable", "VarHandleOp",
                           "ReadVariableOp", "_VarHandlesOp", "_ReadVariablesOp"})
_RECV_OPS = frozenset({"_Recv", "_HostRecv"})
_SWITCH_OPS = frozenset({"Switch", "RefSwitch", "_SwitchN"})
_MERGE_OPS = frozenset({"Merge", "RefMerge", "_XlaMerge"})


def _safe_to_remove(identity: node_def_pb2.NodeDef, nodes: dict, consumers: dict) -> bool:
    source = nodes.get(node_name(identity.input[0])) if identity.input else None
    if source is None or source.op in _VARIABLE_OPS | _RECV_OPS:
        return False
    for consumer, tensor in consumers.get(identity.name, []):
        if len(identity.input) > 1 and consumer.op in _MERGE_OPS | {"_Retval"}:
            return False
        if source.op in _SWITCH_OPS and tensor.startswith("^"):
            return False
    return True


def remove_identity(graph_def: graph_pb2.GraphDef, keep: set[str]) -> int:
    """Bypasses Identity nodes not named in `keep` (signature tensors, init op) that
    Grappler's rules allow removing (above); returns how many were removed. An Identity's
    control inputs move to its consumers, except those on constants (constant folding
    leaves `Identity(x, ^const)` for `x + 0`), which order nothing."""
    index = _Index(graph_def)
    nodes = index.nodes
    removable = {n.name for n in graph_def.node if n.op == "Identity" and n.name not in keep
                 and _safe_to_remove(n, nodes, index.consumers)}

    def resolve(tensor: str) -> list[str]:
        """The tensor `tensor` stands for, and the control inputs that must come along
        (each resolved the same way: a removed Identity is never left named)."""
        if node_name(tensor) not in removable:
            return [tensor]
        identity = nodes[node_name(tensor)]
        source = identity.input[0]
        controls = [t for c in identity.input[1:]
                    if nodes.get(node_name(c)) is None or nodes[node_name(c)].op != "Const"
                    for t in resolve(c)]
        head, *more = resolve(f"^{node_name(source)}" if tensor.startswith("^") else source)
        return [head, *more, *controls]

    for node in graph_def.node:
        if node.name in removable:
            continue
        rewired = [t for tensor in node.input for t in resolve(tensor)]
        if rewired != list(node.input):
            del node.input[:]
            node.input.extend(_dedupe_controls(rewired))
    _drop_nodes(graph_def, removable)
    return len(removable)


def _dedupe_controls(inputs: list[str]) -> list[str]:
    """Control inputs after data inputs, each once, none that repeats a data input."""
    data = [t for t in inputs if not t.startswith("^")]
    data_nodes = {node_name(t) for t in data}
    controls = list(dict.fromkeys(t for t in inputs if t.startswith("^")
                                  and node_name(t) not in data_nodes))
    return data + controls


def _drop_nodes(graph_def: graph_pb2.GraphDef, names: set[str]) -> None:
    kept = [n for n in graph_def.node if n.name not in names]
    del graph_def.node[:]
    graph_def.node.extend(kept)


# --- fold_batch_norms ------------------------------------------------------------------

@dataclass
class _Affine:
    """y = conv_output * scale + offset, per output channel."""

    scale: np.ndarray
    offset: np.ndarray
    folds_scale: bool = False  # anything beyond a plain bias add

    def then_add(self, value: np.ndarray) -> None:
        self.offset = self.offset + value

    def then_multiply(self, value: np.ndarray) -> None:
        self.scale, self.offset = self.scale * value, self.offset * value
        self.folds_scale = True


def _channels_vector(value: np.ndarray | None, channels: int, rank: int) -> np.ndarray | None:
    """`value` as a [channels] float vector, if it broadcasts per channel (or is a scalar)."""
    if value is None or value.dtype != np.float32 or value.ndim > rank:
        return None
    if value.size == 1:
        return np.full(channels, value.reshape(()), np.float32)
    if value.shape[-1] == channels and value.size == channels:
        return value.reshape(channels)
    return None


def _channels(conv: node_def_pb2.NodeDef, weights: np.ndarray) -> int | None:
    if conv.op == "Conv2D" and weights.ndim == 4:
        return weights.shape[3]
    if conv.op == "DepthwiseConv2dNative" and weights.ndim == 4:
        return weights.shape[2] * weights.shape[3]
    if conv.op == "MatMul" and weights.ndim == 2 and not conv.attr["transpose_a"].b:
        return weights.shape[0] if conv.attr["transpose_b"].b else weights.shape[1]
    return None


def _scaled_weights(conv: node_def_pb2.NodeDef, weights: np.ndarray, scale: np.ndarray
                    ) -> np.ndarray:
    if conv.op == "DepthwiseConv2dNative":  # output channel = in_channel * multiplier + m
        return weights * scale.reshape(weights.shape[2], weights.shape[3])
    if conv.op == "MatMul" and conv.attr["transpose_b"].b:
        return weights * scale[:, None]
    return weights * scale


def _attr(node: node_def_pb2.NodeDef, name: str):
    """The attribute, or None; `node.attr[name]` would add an empty one to the node."""
    return node.attr.get(name)


def _is_float(node: node_def_pb2.NodeDef) -> bool:
    dtype = _attr(node, "T")
    return dtype is not None and dtype.type == _FLOAT


def _is_nhwc(node: node_def_pb2.NodeDef) -> bool:
    data_format = _attr(node, "data_format")
    return data_format is None or data_format.s in (b"", b"NHWC")


def _affine_step(index: _Index, node: node_def_pb2.NodeDef, current: str, affine: _Affine,
                 channels: int, rank: int) -> bool:
    """Applies `node` (which consumes `current`) to `affine`; False if it is not affine."""
    if not _is_float(node):
        return False
    data = [t for t in node.input if not t.startswith("^")]
    if node.op in ("BiasAdd", "Add", "AddV2", "Sub", "Mul", "RealDiv"):
        if len(data) != 2 or node.op == "BiasAdd" and not _is_nhwc(node):
            return False
        ours = [i for i, t in enumerate(data) if node_name(t) == current]
        if len(ours) != 1 or (ours[0] == 1 and node.op in ("Sub", "RealDiv", "BiasAdd")):
            return False
        value = _channels_vector(index.const_value(data[1 - ours[0]]), channels, rank)
        if value is None:
            return False
        if node.op == "Mul":
            affine.then_multiply(value)
        elif node.op == "RealDiv":
            affine.then_multiply(1.0 / value)
        else:
            affine.then_add(-value if node.op == "Sub" else value)
        return True
    if node.op in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"):
        training = _attr(node, "is_training")
        if training is not None and training.b or not _is_nhwc(node) or (
                node_name(data[0]) != current):
            return False
        if any(t != node.name and t != f"{node.name}:0" for _, t in
               index.consumers.get(node.name, [])):
            return False  # batch statistics outputs are read
        gamma, beta, mean, var = (_channels_vector(index.const_value(t), channels, 1)
                                  for t in data[1:5])
        if any(v is None for v in (gamma, beta, mean, var)):
            return False
        epsilon = node.attr["epsilon"].f if _attr(node, "epsilon") is not None else 1e-4
        factor = gamma / np.sqrt(var + epsilon)
        affine.then_multiply(factor)
        affine.then_add(beta - mean * factor)
        return True
    return False


def _const_node(name: str, value: np.ndarray) -> node_def_pb2.NodeDef:
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = _FLOAT
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.astype(np.float32)))
    return node


def fold_batch_norms(graph_def: graph_pb2.GraphDef, keep: set[str]) -> dict[str, int]:
    """Folds per-channel affine chains after Conv2D / DepthwiseConv2dNative / MatMul into
    the weights and one BiasAdd. Nodes in `keep` (signature tensors) are never folded away.
    Returns counts: batch norms folded (chains with a scale) and biases made BiasAdd."""
    index = _Index(graph_def)
    new_consts: dict[tuple, str] = {}  # identical folds share one constant (signatures)
    dropped: set[str] = set()
    added: list[node_def_pb2.NodeDef] = []
    counts = {"batch_norms_folded": 0, "biases_canonicalized": 0}

    def shared_const(kind: str, owner: str, value: np.ndarray, source: str) -> str:
        key = (kind, source, value.shape, value.astype(np.float32).tobytes())
        if key not in new_consts:
            new_consts[key] = f"{owner}/folded_{kind}"
            added.append(_const_node(new_consts[key], value))
        return new_consts[key]

    for conv in list(graph_def.node):
        if conv.op not in LINEAR_OPS or not _is_float(conv) or not _is_nhwc(conv):
            continue
        weights = index.const_value(conv.input[1])
        channels = _channels(conv, weights) if weights is not None else None
        if channels is None:
            continue
        rank = 2 if conv.op == "MatMul" else 4
        affine = _Affine(np.ones(channels, np.float32), np.zeros(channels, np.float32))
        chain: list[node_def_pb2.NodeDef] = []
        current = conv.name
        while current not in keep:
            nxt = index.sole_data_consumer(current)
            if nxt is None or not _affine_step(index, nxt, current, affine, channels, rank):
                break
            chain.append(nxt)
            current = nxt.name
        if not chain or (len(chain) == 1 and chain[0].op == "BiasAdd"):
            continue
        if affine.folds_scale:
            filter_name = shared_const("filter", conv.name,
                                       _scaled_weights(conv, weights, affine.scale),
                                       node_name(conv.input[1]))
            conv.input[1] = filter_name
            counts["batch_norms_folded"] += 1
        else:
            counts["biases_canonicalized"] += 1
        last = chain[-1]  # becomes the BiasAdd, keeping its name for its consumers
        controls = [t for n in chain for t in n.input if t.startswith("^")]
        bias = shared_const("bias", last.name, affine.offset, "")
        last.Clear()
        last.name, last.op = current, "BiasAdd"
        last.input.extend(_dedupe_controls([conv.name, bias, *controls]))
        last.attr["T"].type = _FLOAT
        last.attr["data_format"].s = b"NHWC"
        dropped.update(n.name for n in chain[:-1])
    _drop_nodes(graph_def, dropped)
    graph_def.node.extend(added)
    return counts



# --- unfuse ----------------------------------------------------------------------------

_FUSED_BASE = {"_FusedConv2D": "Conv2D", "_FusedMatMul": "MatMul",
               "_FusedDepthwiseConv2dNative": "DepthwiseConv2dNative"}
_BASE_ATTRS = {"Conv2D": ("T", "strides", "padding", "explicit_paddings", "data_format",
                          "dilations", "use_cudnn_on_gpu"),
               "DepthwiseConv2dNative": ("T", "strides", "padding", "explicit_paddings",
                                         "data_format", "dilations"),
               "MatMul": ("T", "transpose_a", "transpose_b")}
_SIDE_INPUT_ADDS = ("Add", "AddV2")  # oneDNN's residual fusion: conv + bias + side input
UNFUSABLE_ACTIVATIONS = ("Relu", "Relu6", "Elu", "LeakyRelu", "Sigmoid", "Tanh")


class CannotUnfuse(ValueError):
    """A fused node whose fusion has no standard-op equivalent written here."""


def _decompose(node: node_def_pb2.NodeDef, keep: tuple[str, ...]
               ) -> list[node_def_pb2.NodeDef]:
    """`node` (a Grappler fused contraction) as a chain of nodes computing the same: a
    `node.op` that fuses only `keep` (a prefix of its fused_ops; empty: the plain op), then
    the rest as standard ops. The last node takes `node`'s name, so consumers are kept."""
    fused = tuple(op.decode() for op in node.attr["fused_ops"].list.s)
    rest = fused[len(keep):]
    data = [i for i in node.input if not i.startswith("^")]
    controls = [i for i in node.input if i.startswith("^")]
    num_args = node.attr["num_args"].i if "num_args" in node.attr else len(data) - 2
    shape_ok = fused[:1] == ("BiasAdd",) and fused[:len(keep)] == keep and (
        len(data) == 2 + num_args)
    side = rest[1:2] if rest[:1] == ("BiasAdd",) else rest[:1]
    has_add = bool(side) and side[0] in _SIDE_INPUT_ADDS
    tail = [op for op in rest if op not in ("BiasAdd", *_SIDE_INPUT_ADDS)]
    if (not shape_ok or num_args != 1 + has_add or len(tail) > 1
            or any(op not in UNFUSABLE_ACTIVATIONS for op in tail)):
        raise CannotUnfuse(f"node {node.name} fuses {'+'.join(fused)}, which cannot be "
                           "written as standard ops")
    dtype = node.attr["T"]
    chain: list[node_def_pb2.NodeDef] = []

    def add(op: str, suffix: str, inputs: list[str]) -> node_def_pb2.NodeDef:
        new = node_def_pb2.NodeDef(name=f"{node.name}/{suffix}", op=op, input=inputs)
        new.attr["T"].CopyFrom(dtype)
        chain.append(new)
        return new

    if keep:
        head = node_def_pb2.NodeDef()
        head.CopyFrom(node)
        head.name = f"{node.name}/fused"
        del head.input[:]
        head.input.extend([data[0], data[1], data[2], *controls])
        head.attr["num_args"].i = 1
        if "TArgs" in head.attr:
            del head.attr["TArgs"].list.type[1:]
        del head.attr["fused_ops"].list.s[:]
        head.attr["fused_ops"].list.s.extend(op.encode() for op in keep)
        chain.append(head)
    else:
        base = _FUSED_BASE[node.op]
        head = node_def_pb2.NodeDef(name=f"{node.name}/unfused", op=base,
                                    input=[data[0], data[1], *controls])
        for attr in _BASE_ATTRS[base]:
            if attr in node.attr:
                head.attr[attr].CopyFrom(node.attr[attr])
        chain.append(head)
        head = add("BiasAdd", "bias", [head.name, data[2]])
        if "data_format" in node.attr:
            head.attr["data_format"].CopyFrom(node.attr["data_format"])
    if has_add:
        head = add("AddV2", "add", [head.name, data[3]])
    for op in tail:
        head = add(op, op.lower(), [head.name])
        if op == "LeakyRelu":
            head.attr["alpha"].f = node.attr["leakyrelu_alpha"].f
    head.name = node.name
    return chain


def _rebuild(graph_def: graph_pb2.GraphDef, plan) -> tuple[graph_pb2.GraphDef, int]:
    """A copy of `graph_def` with each node for which `plan(node)` gives a fusion prefix
    replaced by `_decompose(node, prefix)`; returns it and how many nodes were replaced."""
    output = graph_pb2.GraphDef()
    output.CopyFrom(graph_def)
    del output.node[:]
    changed = 0
    for node in graph_def.node:
        keep = plan(node) if node.op in _FUSED_BASE else None
        if keep is None:
            output.node.add().CopyFrom(node)
            continue
        output.node.extend(_decompose(node, keep))
        changed += 1
    return output, changed


def unfuse(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    """Every Grappler-fused contraction (`_FusedConv2D`, `_FusedMatMul`,
    `_FusedDepthwiseConv2dNative` with BiasAdd [+ side-input Add] [+ activation]) back to
    standard ops: the same function, in ops that TFLite's converter and the bf16 rewrite
    read. Raises CannotUnfuse for a fusion it cannot write as standard ops."""
    return _rebuild(graph_def, lambda node: ())[0]


def without_onednn_fusions(graph_def: graph_pb2.GraphDef, is_onednn_only
                           ) -> tuple[graph_pb2.GraphDef, int]:
    """Each fused node for which `is_onednn_only(node)` holds, split into what the plain CPU
    kernels run: `_FusedConv2D`/`_FusedMatMul` keep only their BiasAdd, a depthwise conv
    is not fused at all: what the remapper emits where oneDNN is off. Returns the graph
    and how many nodes were split; raises CannotUnfuse for a fusion it cannot split."""
    def plan(node):
        if not is_onednn_only(node):
            return None
        return () if node.op == "_FusedDepthwiseConv2dNative" else ("BiasAdd",)

    return _rebuild(graph_def, plan)
