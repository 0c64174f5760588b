"""Graph optimization with named passes, in the spirit of the Graph Transform Tool.

Each pass is a Grappler optimizer (or a short list of them) run offline on a frozen
ServingGraph, so the exported model carries the result. Names follow the Graph Transform
Tool's transforms that TF 1.x users know.
"""

from __future__ import annotations

from dataclasses import dataclass

from tensorflow.python.framework import graph_util

from components.core.errors import ServoptError
from components.core.grappler import run_grappler
from components.core.model_io import ServingGraph


@dataclass(frozen=True)
class GraphPass:
    name: str
    description: str
    grappler_optimizers: tuple[str, ...] = ()
    pin_to_cpu: bool = False  # the remapper fuses only ops it knows run on a CPU


PASSES: dict[str, GraphPass] = {p.name: p for p in (
    GraphPass("strip_unused_nodes",
              "keep only nodes that signature outputs and the init op depend on"),
    GraphPass("remove_identity",
              "remove Identity, NoOp and redundant control dependencies",
              ("pruning", "dependency")),
    GraphPass("fold_constants",
              "evaluate constant subgraphs and shapes once, at export time",
              ("constfold", "shape")),
    GraphPass("fold_batch_norms",
              "fold batch-norm scale and offset into the preceding Conv2D/MatMul weights",
              ("arithmetic", "constfold")),
    GraphPass("merge_duplicate_nodes",
              "merge nodes that compute the same thing from the same inputs",
              ("common_subgraph_elimination",)),
    GraphPass("fuse_ops",
              "fuse Conv2D/MatMul + BiasAdd + activation into single CPU kernels",
              ("remap",), pin_to_cpu=True),
)}
DEFAULT_PASSES = ("strip_unused_nodes", "remove_identity", "fold_constants",
                  "fold_batch_norms", "merge_duplicate_nodes", "fuse_ops")


@dataclass
class PassResult:
    name: str
    nodes_before: int
    nodes_after: int


def validate_passes(names) -> list[str]:
    passes = list(names)
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ServoptError(f"unknown optimization pass {', '.join(map(repr, unknown))}; "
                           f"known passes: {', '.join(PASSES)}")
    if not passes:
        raise ServoptError(f"no optimization passes given; known passes: {', '.join(PASSES)}")
    return passes


def optimize(graph: ServingGraph, passes=DEFAULT_PASSES
             ) -> tuple[ServingGraph, list[PassResult]]:
    """Applies `passes` in order to a frozen graph; returns it with per-pass node counts."""
    results = []
    for name in validate_passes(passes):
        graph_pass = PASSES[name]
        before = len(graph.graph_def.node)
        if graph_pass.grappler_optimizers:
            graph_def = run_grappler(graph, list(graph_pass.grappler_optimizers),
                                     place_on_cpu=graph_pass.pin_to_cpu)
        else:
            graph_def = graph_util.extract_sub_graph(
                graph.graph_def, graph.fetch_nodes() + graph.feed_nodes())
        graph = graph.with_graph(graph_def)
        results.append(PassResult(name, before, len(graph_def.node)))
    return graph, results
