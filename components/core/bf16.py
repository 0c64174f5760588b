"""bfloat16 compute baked into the graph, for CPUs with bf16 units.

Grappler's `auto_mixed_precision_onednn_bfloat16`, run offline, rewrites Conv2D / MatMul
(and their fused forms) to bfloat16 with Casts around them; a plain Session, as TF Serving
creates, then runs bf16 kernels. It exists only where TensorFlow runs oneDNN, which TF
enables by default on x86 Linux CPUs with AVX512_BF16 / AMX (`TF_ENABLE_ONEDNN_OPTS=1`
forces it). On a CPU without bf16 units TF would emulate bf16, slower than fp32: the
variant is skipped there, never produced to lose.
"""

from __future__ import annotations

import os

from components.core.tf_setup import tf

from tensorflow.core.framework import graph_pb2

from components.core.errors import StepSkipped
from components.core.grappler import all_nodes, run_grappler
from components.core.model_io import ServingGraph
from components.core.requirements import BF16_CPU_FEATURES, ServingRequirements, cpu_flags

BF16_OPTIMIZER = "auto_mixed_precision_onednn_bfloat16"
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
BF16_REQUIREMENTS = ServingRequirements(
    precision="bfloat16", cpu_features=BF16_CPU_FEATURES, environment={ONEDNN_ENV: "1"},
    note="runs fast only on CPUs with avx512_bf16 or amx_bf16, with oneDNN on "
         "(TF's default there); TF Serving's --mixed_precision=bfloat16 is not needed, the "
         "rewrite is in the graph")


def onednn_enabled() -> bool:
    from tensorflow.python.util import _pywrap_util_port  # stable internal, TF >= 2.5

    return bool(_pywrap_util_port.IsMklEnabled())


def bf16_unavailable_reason(flags: set[str] | None = None) -> str | None:
    """Why this machine cannot produce (and verify) a bf16 variant, or None if it can."""
    flags = cpu_flags() if flags is None else flags
    if not set(BF16_CPU_FEATURES) & flags:
        return ("this CPU has no bf16 compute units (no avx512_bf16 or amx_bf16 flag); TF "
                "would emulate bf16, slower than float32")
    if not onednn_enabled():
        return (f"TensorFlow runs without oneDNN here ({ONEDNN_ENV}="
                f"{os.environ.get(ONEDNN_ENV, 'unset')}); the bf16 rewrite needs it")
    return None


def bf16_op_count(graph_def: graph_pb2.GraphDef) -> int:
    bf16 = tf.bfloat16.as_datatype_enum
    return sum(1 for node in all_nodes(graph_def)
               if node.op != "Cast" and "T" in node.attr and node.attr["T"].type == bf16)


def to_bfloat16(graph: ServingGraph) -> tuple[ServingGraph, dict]:
    """The graph with bf16 compute; StepSkipped where this CPU or TF cannot do it."""
    reason = bf16_unavailable_reason()
    if reason:
        raise StepSkipped(reason)
    rewritten = run_grappler(graph, [BF16_OPTIMIZER], place_on_cpu=True)
    converted = bf16_op_count(rewritten)
    if converted == 0:
        raise StepSkipped("Grappler's bf16 rewrite changed no op of this model")
    casts = sum(1 for node in rewritten.node if node.op == "Cast")
    return graph.with_graph(rewritten), {"bf16_ops": converted, "casts": casts}
