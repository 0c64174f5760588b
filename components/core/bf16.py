"""bfloat16 compute baked into the graph, for CPUs with bf16 units.

Grappler's `auto_mixed_precision_onednn_bfloat16`, run offline, rewrites Conv2D / MatMul /
DepthwiseConv2dNative and the ops around them to bfloat16 with Casts at the edges; a plain
Session, as TF Serving creates, then runs bf16 kernels. It exists only where TensorFlow
runs oneDNN (see `onednn`), and the rewrite reads only standard ops: after GraphOptimizer's
`fuse_ops` (`_FusedConv2D`, `_FusedMatMul`) it converts nothing. So the graph is unfused
first (`rewrite.unfuse`: the same function, batch norms still folded) and rewritten; TF
Serving's own Grappler re-fuses the bf16 Conv2D + BiasAdd + activation when it loads the
model (its remapper fuses bf16 contractions where oneDNN is on, which this variant needs
anyway). Rewriting before `fuse_ops` instead would need GraphOptimizer's unfused graph
beside its output: a second artifact for one variant.

On a CPU without bf16 units TF emulates bf16, slower than fp32: the variant is skipped
there, never produced to lose. TF Serving's `--mixed_precision=bfloat16`
(tensorflow_serving/servables/tensorflow/saved_model_bundle_factory.cc: turns on
`auto_mixed_precision_onednn_bfloat16` in the session config of every model the server
loads) does the same rewrite at load time on the fp32 model; the skip reason names it.
"""

from __future__ import annotations

import os

from components.core.tf_setup import tf

from tensorflow.core.framework import graph_pb2

from components.core.errors import StepSkipped
from components.core.grappler import all_nodes, run_grappler
from components.core.model_io import ServingGraph
from components.core.onednn import ONEDNN_ENV, onednn_enabled
from components.core.requirements import (
    BF16_CPU_FEATURES,
    MIXED_PRECISION_BF16_FLAG,
    ServingRequirements,
    cpu_flags,
)
from components.core.rewrite import CannotUnfuse, unfuse

BF16_OPTIMIZER = "auto_mixed_precision_onednn_bfloat16"
BF16_REQUIREMENTS = ServingRequirements(
    precision="bfloat16", cpu_features=BF16_CPU_FEATURES, environment={ONEDNN_ENV: "1"},
    note="runs fast only on CPUs with avx512_bf16 or amx_bf16, and only with oneDNN on "
         "(TF's default on those CPUs; its bf16 depthwise kernels are oneDNN-only); "
         f"{MIXED_PRECISION_BF16_FLAG} is not needed, the rewrite is in the graph")
SERVER_FLAG_ALTERNATIVE = (f"on a serving CPU with avx512_bf16 or amx_bf16, the float32 "
                           f"model with {MIXED_PRECISION_BF16_FLAG} gets the same rewrite "
                           "at load")


def bf16_unavailable_reason(flags: set[str] | None = None) -> str | None:
    """Why this machine cannot produce (and verify) a bf16 variant, or None if it can."""
    flags = cpu_flags() if flags is None else flags
    if not set(BF16_CPU_FEATURES) & flags:
        return ("this CPU has no bf16 compute units (no avx512_bf16 or amx_bf16 flag); TF "
                f"would emulate bf16, slower than float32 ({SERVER_FLAG_ALTERNATIVE})")
    if not onednn_enabled():
        return (f"TensorFlow runs without oneDNN here ({ONEDNN_ENV}="
                f"{os.environ.get(ONEDNN_ENV, 'unset')}); the bf16 rewrite needs it "
                f"({SERVER_FLAG_ALTERNATIVE})")
    return None


def bf16_op_count(graph_def: graph_pb2.GraphDef) -> int:
    bf16 = tf.bfloat16.as_datatype_enum
    return sum(1 for node in all_nodes(graph_def)
               if node.op != "Cast" and "T" in node.attr and node.attr["T"].type == bf16)


def bf16_rewrite_input(graph: ServingGraph) -> ServingGraph:
    """What the rewrite reads: the graph with Grappler's fusions undone."""
    try:
        return graph.with_graph(unfuse(graph.graph_def))
    except CannotUnfuse as err:
        raise StepSkipped(f"{err}: the bf16 rewrite reads only standard ops") from None


def rewrite_to_bfloat16(graph: ServingGraph) -> tuple[ServingGraph, dict]:
    """Grappler's bf16 rewrite of the unfused graph, with no check of this CPU (where it
    has no bf16 units TF emulates them: right results, slowly)."""
    rewritten = run_grappler(bf16_rewrite_input(graph), [BF16_OPTIMIZER], place_on_cpu=True)
    converted = bf16_op_count(rewritten)
    if converted == 0:
        raise StepSkipped("Grappler's bf16 rewrite changed no op of this model")
    casts = sum(1 for node in rewritten.node if node.op == "Cast")
    return graph.with_graph(rewritten), {"bf16_ops": converted, "casts": casts}


def to_bfloat16(graph: ServingGraph) -> tuple[ServingGraph, dict]:
    """The graph with bf16 compute; StepSkipped where this CPU or TF cannot do it."""
    reason = bf16_unavailable_reason()
    if reason:
        raise StepSkipped(reason)
    return rewrite_to_bfloat16(graph)
