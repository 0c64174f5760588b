"""Graph optimization with named passes, in the spirit of the Graph Transform Tool.

Each pass is a Grappler optimizer list and/or one of our own GraphDef rewrites (see
`rewrite`: what Grappler leaves undone on real Keras models) run offline on a frozen
ServingGraph, so the exported model carries the result. Names follow the Graph Transform
Tool's transforms that TF 1.x users know. Each pass reports what it changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import components.core.tf_setup  # noqa: F401  (TensorFlow, quietly, first)

from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework import graph_util

from components.core.choices import DEFAULT_PASSES, validate_passes
from components.core.grappler import run_grappler
from components.core.model_io import ServingGraph
from components.core.rewrite import fold_batch_norms, remove_identity

# A rewrite edits the GraphDef in place, keeping the named nodes, and counts its changes.
Rewrite = Callable[[graph_pb2.GraphDef, set[str]], dict[str, int]]


def _remove_identity(graph_def: graph_pb2.GraphDef, keep: set[str]) -> dict[str, int]:
    return {"identity_removed": remove_identity(graph_def, keep)}


def _fold_batch_norms(graph_def: graph_pb2.GraphDef, keep: set[str]) -> dict[str, int]:
    removed = remove_identity(graph_def, keep)  # constant folding may leave Identity behind
    return fold_batch_norms(graph_def, keep) | ({"identity_removed": removed} if removed else {})


@dataclass(frozen=True)
class GraphPass:
    name: str
    description: str
    grappler_optimizers: tuple[str, ...] = ()  # run first
    rewrite: Rewrite | None = None  # then this
    pin_to_cpu: bool = False  # the remapper fuses only ops it knows run on a CPU


PASSES: dict[str, GraphPass] = {p.name: p for p in (
    GraphPass("strip_unused_nodes",
              "keep only nodes that signature outputs and the init op depend on"),
    GraphPass("remove_identity",
              "remove Identity, NoOp and redundant control dependencies",
              ("pruning", "dependency"), _remove_identity),
    GraphPass("fold_constants",
              "evaluate constant subgraphs and shapes once, at export time",
              ("constfold", "shape")),
    GraphPass("fold_batch_norms",
              "fold batch-norm scale and offset (and bias adds) after Conv2D, "
              "DepthwiseConv2dNative and MatMul into their weights and one BiasAdd",
              ("constfold",), _fold_batch_norms),
    GraphPass("merge_duplicate_nodes",
              "merge nodes that compute the same thing from the same inputs",
              ("common_subgraph_elimination",)),
    GraphPass("fuse_ops",
              # Only what the plain CPU kernels run, wherever this runs (see grappler): not
              # DepthwiseConv2dNative, whose fused CPU kernel is a placeholder that only
              # oneDNN's layout pass replaces; TF Serving's own Grappler fuses it there.
              "fuse Conv2D/MatMul + BiasAdd + activation into single CPU kernels",
              ("remap",), pin_to_cpu=True),
)}


@dataclass
class PassResult:
    name: str
    nodes_before: int
    nodes_after: int
    changes: dict[str, int] = field(default_factory=dict)  # e.g. {"batch_norms_folded": 53}
    skipped: str | None = None  # why the pass's output was dropped (the graph kept as it was)

    def summary(self) -> str:
        if self.skipped:
            return f"{self.name}: skipped ({self.skipped})"
        said = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.changes.items() if v)
        return f"{self.name}: {self.nodes_before} -> {self.nodes_after} nodes" + (
            f" ({said})" if said else "")


def fused_op_counts(graph_def: graph_pb2.GraphDef) -> dict[str, int]:
    """'fused Conv2D+BiasAdd+Relu': count, for every Grappler-fused node in the graph."""
    counts: Counter[str] = Counter()
    for node in graph_def.node:
        if node.op.startswith("_Fused") and "fused_ops" in node.attr:
            ops = "+".join(op.decode() for op in node.attr["fused_ops"].list.s)
            counts[f"fused {node.op.removeprefix('_Fused')}+{ops}"] += 1
    return dict(sorted(counts.items()))


def optimize(graph: ServingGraph, passes=DEFAULT_PASSES
             ) -> tuple[ServingGraph, list[PassResult]]:
    """Applies `passes` in order to a frozen graph; returns it with per-pass node counts."""
    results = []
    keep = set(graph.fetch_nodes() + graph.feed_nodes())
    for name in validate_passes(passes, PASSES):
        graph_pass = PASSES[name]
        before = len(graph.graph_def.node)
        fused_before = fused_op_counts(graph.graph_def)
        graph_def = graph.graph_def
        if graph_pass.grappler_optimizers:
            graph_def = run_grappler(graph, list(graph_pass.grappler_optimizers),
                                     place_on_cpu=graph_pass.pin_to_cpu)
        changes: dict[str, int] = {}
        if graph_pass.rewrite is not None:
            graph_def = _copy(graph_def)
            changes = graph_pass.rewrite(graph_def, keep)
        dangling = dangling_inputs(graph_def)
        if dangling:  # never publish (or prune) a graph that names nodes it lacks
            node, tensor = dangling[0]
            results.append(PassResult(name, before, before, skipped=(
                f"its output left node '{node}' reading '{tensor}', which it does not hold")))
            continue
        present = {node.name for node in graph_def.node}  # a pass may drop unused assets
        graph_def = graph_util.extract_sub_graph(graph_def, sorted(keep & present))
        fused = fused_op_counts(graph_def)
        changes |= {k: v - fused_before.get(k, 0) for k, v in fused.items()
                    if v > fused_before.get(k, 0)}
        graph = graph.with_graph(graph_def)
        results.append(PassResult(name, before, len(graph_def.node), changes))
    return graph, results


def dangling_inputs(graph_def: graph_pb2.GraphDef) -> list[tuple[str, str]]:
    """(node, input) for every input, data or control, naming a node the graph lacks."""
    names = {node.name for node in graph_def.node}
    return [(node.name, tensor) for node in graph_def.node for tensor in node.input
            if tensor.lstrip("^").split(":")[0] not in names]


def _copy(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    copy = graph_pb2.GraphDef()
    copy.CopyFrom(graph_def)
    return copy
