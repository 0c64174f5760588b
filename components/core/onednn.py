"""oneDNN: when TensorFlow runs it, and which ops only it can run.

TF builds for x86 Linux contain oneDNN, and whether a process uses it is decided once, at
its start (tensorflow/core/util/port.cc `IsMklEnabled`): `TF_ENABLE_ONEDNN_OPTS` if set,
else on by default only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX
(`DefaultOneDnnPolicy`). TF Serving links the same runtime, so the servers that run a
model may have it on or off. Grappler's remapper (tensorflow/core/grappler/optimizers/
remapper.cc) fuses more where oneDNN is on, into ops whose CPU kernels exist only under
oneDNN; a graph carrying them fails where it is off. `onednn_only_nodes` names them, from
TF's kernel registry and the plain CPU kernels' own fusion lists cited below.
"""

from __future__ import annotations

import os

from components.core.tf_setup import tf

from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.python.framework import kernels

from components.core.requirements import ONEDNN_ENV

# tensorflow/core/util/port.cc DefaultOneDnnPolicy (Linux x86), as /proc/cpuinfo flags.
ONEDNN_DEFAULT_CPU_FEATURES = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
                               "amx_int8", "amx_bf16")

# The fusions the plain (Eigen) CPU kernels accept; anything else is refused at kernel
# construction ("Fusion is not implemented"). tensorflow/core/kernels/
# conv_ops_fused_impl.h `FusedConv2DOp` and matmul_op_fused.cc `FusedMatMulOp`, CPUDevice.
_ACTIVATIONS = ("Relu", "Relu6", "Elu", "LeakyRelu")
PLAIN_CPU_FUSIONS: dict[str, frozenset[tuple[str, ...]]] = {
    "_FusedConv2D": frozenset({("BiasAdd",), ("FusedBatchNorm",)}
                              | {(first, act) for first in ("BiasAdd", "FusedBatchNorm")
                                 for act in _ACTIVATIONS}),
    "_FusedMatMul": frozenset({("BiasAdd",)} | {("BiasAdd", act) for act in _ACTIVATIONS}),
}
# CPU kernels registered as NoOp placeholders that only oneDNN's layout pass replaces
# (tensorflow/core/kernels/mkl/mkl_conv_ops.cc): with oneDNN off they produce no output
# ("Missing 0-th output"). The registry lists them as ordinary CPU kernels.
_BF16 = tf.bfloat16.as_datatype_enum
PLACEHOLDER_CPU_KERNELS: dict[str, set[int] | None] = {  # op -> dtypes (None: all)
    "_FusedDepthwiseConv2dNative": None,
    "DepthwiseConv2dNative": {_BF16},
}


def onednn_enabled() -> bool:
    """Whether this process runs oneDNN (TF's own answer; fixed at its start)."""
    from tensorflow.python.util import _pywrap_util_port  # stable internal, TF >= 2.5

    return bool(_pywrap_util_port.IsMklEnabled())


def onednn_default_on(cpu_flags: set[str]) -> bool:
    """Whether TF turns oneDNN on by default on a CPU with these flags (port.cc)."""
    return bool(set(ONEDNN_DEFAULT_CPU_FEATURES) & cpu_flags)


def onednn_setting() -> str:
    """'on' / 'off', and why: for reports."""
    value = os.environ.get(ONEDNN_ENV)
    why = f"{ONEDNN_ENV}={value}" if value is not None else "TF's default for this CPU"
    return f"{'on' if onednn_enabled() else 'off'} ({why})"


def _fused_ops(node: node_def_pb2.NodeDef) -> tuple[str, ...]:
    attr = node.attr.get("fused_ops")
    return tuple(op.decode() for op in attr.list.s) if attr is not None else ()


def _has_plain_cpu_kernel(op: str) -> bool:
    """A CPU kernel without a oneDNN label in TF's kernel registry (the `_Mkl*` kernels are
    labelled `MklLayoutDependentOp` / `MklNameChangeOp`, or exist only in oneDNN builds)."""
    if op.startswith("_Mkl"):
        return False
    registered = kernels.get_registered_kernels_for_op(op).kernel
    return any(k.device_type == "CPU" and not k.label.startswith("Mkl") for k in registered)


def onednn_only_reason(node: node_def_pb2.NodeDef) -> str | None:
    """Why `node` fails on a CPU where TF runs without oneDNN, or None if it runs there."""
    if node.op in PLACEHOLDER_CPU_KERNELS:
        dtypes = PLACEHOLDER_CPU_KERNELS[node.op]
        dtype = node.attr.get("T")
        if dtypes is None or (dtype is not None and dtype.type in dtypes):
            return (f"{node.op}'s CPU kernel is a placeholder that only oneDNN replaces "
                    "(mkl_conv_ops.cc)")
    if node.op in PLAIN_CPU_FUSIONS and _fused_ops(node) not in PLAIN_CPU_FUSIONS[node.op]:
        return (f"{node.op} fusing {'+'.join(_fused_ops(node))} has only a oneDNN CPU "
                "kernel (the plain kernel fuses BiasAdd or FusedBatchNorm + activation)")
    if node.op.startswith("_") and not _has_plain_cpu_kernel(node.op):
        return f"{node.op} has no CPU kernel outside oneDNN in TF's kernel registry"
    return None


def onednn_only_nodes(graph_def: graph_pb2.GraphDef) -> dict[str, str]:
    """Node name -> why it runs only where oneDNN is on, for the graph and its functions."""
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    found = {}
    for node in nodes:
        reason = onednn_only_reason(node)
        if reason:
            found[node.name] = reason
    return found
