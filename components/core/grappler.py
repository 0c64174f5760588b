"""Run Grappler, TensorFlow's graph optimizer, on a ServingGraph.

Grappler is what TF Serving itself runs when it creates a Session; running it offline
with a chosen list of optimizers (`RewriterConfig.optimizers`) bakes the result into the
exported graph, the TF 2.x replacement for the Graph Transform Tool.

What Grappler emits depends on the process that runs it: where TF runs oneDNN (see
`onednn`), its remapper fuses into ops only oneDNN's kernels run (MobileNetV2's depthwise
blocks into `_FusedDepthwiseConv2dNative`, residual adds into `_FusedConv2D`), and the
graph would fail on servers where oneDNN is off. `run_grappler` splits such fusions into
what the plain CPU kernels run (the graph a machine without oneDNN produces) and refuses
what it cannot split, so an optimized graph does not depend on the machine that made it.
Only optimizers that exist solely under oneDNN (the bf16 rewrite) keep oneDNN's ops: their
variant records that it needs oneDNN.
"""

from __future__ import annotations

from components.core.tf_setup import tf

from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, rewriter_config_pb2
from tensorflow.python.grappler import tf_optimizer  # stable internal used by TF converters

from components.core.errors import ServoptError, StepSkipped
from components.core.heap import release_freed_memory
from components.core.model_io import ServingGraph
from components.core.onednn import onednn_only_nodes, onednn_only_reason
from components.core.rewrite import CannotUnfuse, without_onednn_fusions
from components.core.serving_session import first_line

CPU_DEVICE = "/device:CPU:0"
# Optimizers that exist only where oneDNN is on (meta_optimizer.cc builds them only when
# IsMKLEnabled()); their output is meant for oneDNN and kept as it is.
ONEDNN_OPTIMIZERS = frozenset({"auto_mixed_precision_onednn_bfloat16"})


def run_grappler(graph: ServingGraph, optimizers: list[str], place_on_cpu: bool = False,
                 served: bool = True) -> graph_pb2.GraphDef:
    """Returns `graph`'s GraphDef after running exactly `optimizers`, in that order.

    Signature inputs, outputs, the init op and asset tensors are preserved by name.
    `place_on_cpu` pins nodes to the CPU while optimizing: the remapper only fuses ops
    (Conv2D+BiasAdd+Relu, MatMul+BiasAdd+Relu, batch norm) on nodes it knows are on a
    CPU. The placement is cleared again so the exported model stays device-neutral.
    `served=False`: the result is only read (counted), never served, so ops that run only
    where oneDNN is on (a bf16 variant's) are kept as they are.
    """
    serving = graph
    if place_on_cpu:
        pinned = graph_pb2.GraphDef()
        pinned.CopyFrom(graph.graph_def)
        for node in pinned.node:
            node.device = CPU_DEVICE
        serving = graph.with_graph(pinned)
    meta_graph = serving.to_meta_graph()
    fetch = meta_graph_pb2.CollectionDef()
    fetch.node_list.value.extend(serving.fetch_nodes() + serving.feed_nodes())
    meta_graph.collection_def["train_op"].CopyFrom(fetch)  # what Grappler must keep

    config = config_pb2.ConfigProto()
    rewrite = config.graph_options.rewrite_options
    rewrite.min_graph_nodes = -1  # optimize small graphs too
    # One round: each call runs a short, chosen list; a second round only repeats it.
    rewrite.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    rewrite.optimizers.extend(optimizers)
    try:
        optimized = tf_optimizer.OptimizeGraph(config, meta_graph, verbose=False)
    except (tf.errors.OpError, ValueError) as err:
        raise ServoptError(f"Grappler ({', '.join(optimizers)}) failed: {first_line(err)}"
                           ) from None
    finally:
        release_freed_memory()  # Grappler's working copies of the graph
    if place_on_cpu:
        for node in optimized.node:
            node.device = ""
    if served and ONEDNN_OPTIMIZERS.isdisjoint(optimizers):
        optimized = portable(optimized, f"Grappler ({', '.join(optimizers)})")
    return optimized


def portable(graph_def: graph_pb2.GraphDef, producer: str) -> graph_pb2.GraphDef:
    """`graph_def` with no op that runs only where oneDNN is on: fusions split into what
    the plain kernels run; StepSkipped naming the op if something else remains."""
    found = onednn_only_nodes(graph_def)
    if not found:
        return graph_def
    try:
        graph_def, _ = without_onednn_fusions(
            graph_def, lambda node: onednn_only_reason(node) is not None)
    except CannotUnfuse as err:
        raise StepSkipped(f"{producer} emitted an op that runs only where oneDNN is on and "
                          f"cannot be split: {err}") from None
    left = onednn_only_nodes(graph_def)
    if left:
        name, reason = next(iter(left.items()))
        raise StepSkipped(f"{producer} emitted {len(left)} node(s) that run only where "
                          f"oneDNN is on, e.g. {name}: {reason}; TF Serving without oneDNN "
                          "could not load the result")
    return graph_def


def prune_function_library(graph_def: graph_pb2.GraphDef) -> None:
    """Drops library functions nothing in the graph calls (e.g. checkpoint save/restore)."""
    by_name = {f.signature.name: f for f in graph_def.library.function}
    reachable: set[str] = set()
    pending = [_called_functions(node) for node in graph_def.node]
    stack = [name for names in pending for name in names]
    while stack:
        name = stack.pop()
        if name in reachable or name not in by_name:
            continue
        reachable.add(name)
        for node in by_name[name].node_def:
            stack.extend(_called_functions(node))
    keep = [f for f in graph_def.library.function if f.signature.name in reachable]
    del graph_def.library.function[:]
    graph_def.library.function.extend(keep)
    gradients = [g for g in graph_def.library.gradient if g.function_name in reachable]
    del graph_def.library.gradient[:]
    graph_def.library.gradient.extend(gradients)


def _called_functions(node) -> list[str]:
    names = [node.op]  # a node whose op is a library function calls it directly
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names.extend(f.name for f in value.list.func)
    return names


def all_nodes(graph_def: graph_pb2.GraphDef):
    """Every NodeDef: the graph's own and those inside library functions."""
    yield from graph_def.node
    for function in graph_def.library.function:
        yield from function.node_def
