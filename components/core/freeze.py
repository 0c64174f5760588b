"""Freeze: fold variables into constants and keep only what serving needs.

The model is loaded the way TF Serving loads it (variables restored, tables initialized),
variables on the serving path are read from that Session and written into the graph as
constants (TF's `convert_variables_to_constants_from_session_graph`, the Session form of
`convert_variables_to_constants_v2`, which handles resource variables and functions),
function calls are inlined by Grappler, and everything else (checkpoint save/restore,
training-only functions) is dropped.

Lookup tables survive: their creation and initialization stay in the init op, and the
vocabulary files stay assets, fed by the loader exactly as before. Asset paths live in
TF2 SavedModels as string variables; they are rewired to the asset placeholder instead of
being frozen to an absolute path that would not exist on the serving machine. TF1
exports (estimators) hold them in Consts listed in the assets collection, which become
placeholders the same way; their `saved_model_main_op` / `legacy_init_op` stays the
init op.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.core.tf_setup import tf

from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework import convert_to_constants, graph_util

from components.core.errors import ServoptError, StepSkipped
from components.core.grappler import all_nodes, prune_function_library, run_grappler
from components.core.model_io import (
    ServingGraph,
    asset_constants_as_placeholders,
    read_serving_graph,
)
from components.core.serving_session import ServingSession, first_line

VARIABLE_OPS = {"Variable", "VariableV2", "VarHandleOp"}
# Tables whose contents live in the checkpoint: freezing would serve them empty.
CHECKPOINTED_TABLE_OPS = {"MutableHashTableV2", "MutableHashTableOfTensorsV2",
                          "MutableDenseHashTableV2", "MutableHashTable",
                          "MutableHashTableOfTensors", "MutableDenseHashTable"}
MAX_GRAPH_BYTES = 1_900_000_000  # a GraphDef must stay under protobuf's 2 GiB limit


@dataclass
class FreezeResult:
    graph: ServingGraph
    variables_frozen: int


def freeze(model_dir, session: ServingSession | None = None) -> FreezeResult:
    """Returns the frozen ServingGraph of the SavedModel at `model_dir`.

    `session`, the model already loaded (e.g. by the verification reference), is used and
    closed instead of loading the model again."""
    saved = read_serving_graph(model_dir)
    unsupported = sorted({n.op for n in all_nodes(saved.graph_def)} & CHECKPOINTED_TABLE_OPS)
    if unsupported:
        if session is not None:
            session.close()
        raise StepSkipped(f"the model uses {', '.join(unsupported)}, whose contents live in "
                          "the checkpoint; freezing would serve an empty table")
    with session or ServingSession(model_dir) as session:
        # The Session's graph: the saved graph plus what the loader added to it.
        source = saved.with_graph(session.graph.as_graph_def())
        asset_variables = _asset_variables(source)
        # Inline first: the converter folds top-level reads (ReadVariableOp, ResourceGather)
        # reliably, reads passed into function calls less so.
        inlined = run_grappler(source, ["function"])
        serving_nodes = graph_util.extract_sub_graph(inlined, source.fetch_nodes()).node
        variables = [n.name for n in serving_nodes
                     if n.op in VARIABLE_OPS and n.name not in asset_variables]
        if not variables:
            raise StepSkipped("the model has no variables: it is frozen already")
        try:
            flat = convert_to_constants.convert_variables_to_constants_from_session_graph(
                session.session, inlined, source.fetch_nodes(),
                variable_names_denylist=sorted(asset_variables))
        except (tf.errors.OpError, ValueError, KeyError) as err:
            raise StepSkipped(f"variables could not be folded into constants: "
                              f"{first_line(err)}") from None
    _rewire_asset_variables(flat, asset_variables)
    asset_constants_as_placeholders(flat, source.asset_file_defs)
    prune_function_library(flat)
    if flat.ByteSize() > MAX_GRAPH_BYTES:
        raise StepSkipped(f"the frozen graph would be {flat.ByteSize() / 1e9:.1f} GB, over "
                          "protobuf's 2 GB limit for a GraphDef")
    left = [n.name for n in all_nodes(flat) if n.op in VARIABLE_OPS]
    if left:
        raise ServoptError(f"{model_dir}: freezing left variables {left[:5]}; this model "
                           "cannot be frozen")
    return FreezeResult(source.with_graph(flat), variables_frozen=len(variables))


def _asset_variables(graph: ServingGraph) -> dict[str, str]:
    """String variables that TF2 assigns from an asset placeholder: variable -> placeholder."""
    asset_inputs = {a.tensor_info.name.split(":")[0] for a in graph.asset_file_defs}
    found = {}
    for node in graph.graph_def.node:
        if node.op == "AssignVariableOp" and len(node.input) >= 2:
            value = node.input[1].split(":")[0]
            if value in asset_inputs:
                found[node.input[0].split(":")[0]] = value
    return found


def _rewire_asset_variables(graph_def: graph_pb2.GraphDef,
                            asset_variables: dict[str, str]) -> None:
    """Reads of an asset-path variable become Identity(asset placeholder)."""
    if not asset_variables:
        return
    dropped = set(asset_variables)
    for node in graph_def.node:
        if node.op in ("AssignVariableOp", "VarIsInitializedOp") and (
                node.input[0].split(":")[0] in asset_variables):
            dropped.add(node.name)
    for node in graph_def.node:
        if node.op == "ReadVariableOp" and node.input[0] in asset_variables:
            placeholder = asset_variables[node.input[0]]
            dtype = node.attr["dtype"].type
            controls = [i for i in node.input[1:] if i.lstrip("^") not in dropped]
            node.op = "Identity"
            del node.input[:]
            node.input.extend([placeholder, *controls])
            node.attr.clear()
            node.attr["T"].type = dtype
        else:
            kept = [i for i in node.input if i.lstrip("^").split(":")[0] not in dropped]
            del node.input[:]
            node.input.extend(kept)
    kept_nodes = [n for n in graph_def.node if n.name not in dropped]
    del graph_def.node[:]
    graph_def.node.extend(kept_nodes)
