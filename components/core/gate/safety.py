"""Safety scan: which ops a model runs when TF Serving loads and serves it.

A SavedModel is a program. Ops that read or write files, run Python or open the network
have no place on a serving path: a model that writes files on every request (or reads
`/etc/passwd` into its output) is blocked unless its ops are explicitly allowed.

What is scanned is what TF Serving runs: every node reachable (data and control inputs)
from the serving signatures' outputs and the init op, and every node of each library
function such a node calls, transitively (a function body is scanned whole: its stateful
ops run through automatic control dependencies). The checkpoint restore op the loader
runs is scanned too, where the checkpoint readers (RestoreV2, ...) are expected: they read
the model's own `variables/`. The save function every TF2 SavedModel carries (SaveV2,
MergeV2Checkpoints) is not reachable from either and is not scanned, so a normal model
passes.

Ops that open a file named by an input (`InitializeTableFromTextFile(V2)`, which TFX
Transform's vocabularies need) pass only when that name provably is one of the model's
own assets: it comes, unchanged, from an asset tensor (`asset_file_def`, which the loader
feeds with the path of the file in the model's `assets/`), directly, through Identity,
through the string variable TF2 assigns it to, or through function arguments at every
call site. A constant path, a path computed from anything, an asset tensor that is also
a signature input, or an asset file outside `assets/` (`..`, a symlink) blocks. Ops that
open a file only when an attribute names one (`DecodeProtoV2`'s `descriptor_source`)
block when it does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from components.core.errors import ServoptError
from components.core.model_io import (
    asset_file_defs,
    init_op_name,
    read_saved_model,
    resolve_saved_model_dir,
    serving_meta_graph,
    serving_signatures,
)

FILES = "reads or writes files"
PYTHON = "runs Python"
NETWORK = "opens the network"
NOT_AN_ASSET = "reads a file that is not one of the model's assets"

_FILE_OPS = (
    "ReadFile", "WriteFile", "MatchingFiles", "FileSystemSetConfiguration",
    # checkpoints
    "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
    "MergeV2Checkpoints", "LoadAndRemapMatrix", "GenerateVocabRemapping", "ImmutableConst",
    # queue-based readers
    "TFRecordReader", "TFRecordReaderV2", "TextLineReader", "TextLineReaderV2",
    "WholeFileReader", "WholeFileReaderV2", "FixedLengthRecordReader",
    "FixedLengthRecordReaderV2", "LMDBReader",
    # tf.data sources and sinks
    "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "LMDBDataset", "ExperimentalLMDBDataset", "SqlDataset",
    "ExperimentalSqlDataset", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset",
    "SaveDataset", "SaveDatasetV2", "LoadDataset", "SnapshotDataset", "SnapshotDatasetV2",
    "SnapshotDatasetReader", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord",
    "DistributedSave", "ListSnapshotChunksDataset", "SnapshotChunkDataset",
    "SnapshotNestedDatasetReader", "MatchingFilesDataset", "ExperimentalMatchingFilesDataset",
    "CacheDataset", "CacheDatasetV2",  # an empty file name caches in memory: fail closed
    "RecordInput", "Skipgram", "DTensorRestoreV2", "CalibrationStatisticsSaver", "DumpTensor",
    # summaries
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "ImportEvent", "WriteSummary",
    "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary",
    "WriteGraphSummary", "WriteRawProtoSummary",
    # debugger ops write to file:// (or grpc://) URLs; tf.print can write to a file
    "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount",
    "DebugNumericSummary", "PrintV2",
)
_PYTHON_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc")
_NETWORK_OPS = (
    "Rpc", "TryRpc",  # tf.contrib.rpc (TF 1.x graphs)
    "RpcClient", "RpcCall", "RpcServer", "RpcServerStart", "RpcServerRegister",
    "RpcCheckStatus", "RpcGetValue",
    "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3",
    "DataServiceDatasetV4", "RegisterDataset", "RegisterDatasetV2",
)
UNSAFE_OPS: dict[str, str] = {
    **dict.fromkeys(_FILE_OPS, FILES), **dict.fromkeys(_PYTHON_OPS, PYTHON),
    **dict.fromkeys(_NETWORK_OPS, NETWORK)}
# What the loader's checkpoint restore op may use: it reads the model's own variables/.
RESTORE_OPS = frozenset({"Restore", "RestoreV2", "RestoreSlice"})
# Ops that open the file named by one input (op -> its index): safe when it is an asset.
ASSET_READERS = {"InitializeTableFromTextFile": 1, "InitializeTableFromTextFileV2": 1}
# Ops that open a file when an attribute names one: op -> (attribute, its in-memory value).
FILE_ATTRIBUTES = {"DecodeProtoV2": ("descriptor_source", b"local://"),
                   "EncodeProto": ("descriptor_source", b"local://"),
                   "FixedUnigramCandidateSampler": ("vocab_file", b"")}
_PASS_THROUGH = frozenset({"Identity", "Snapshot"})
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


@dataclass
class OpScan:
    """The ops a model runs when served, and those of them the gate considers unsafe."""

    model_dir: str
    ops: dict[str, int]  # op type -> nodes, over everything scanned
    unsafe: dict[str, str] = field(default_factory=dict)  # op -> category, not allowed
    allowed: dict[str, str] = field(default_factory=dict)  # unsafe but in allowed_ops

    @property
    def safe(self) -> bool:
        return not self.unsafe

    def describe_unsafe(self) -> str:
        by_category: dict[str, list[str]] = {}
        for op, category in sorted(self.unsafe.items()):
            by_category.setdefault(category, []).append(op)
        return "; ".join(f"{', '.join(ops)} ({category})"
                         for category, ops in by_category.items())


def refuse_unsafe(model_dir: str | Path, allowed_ops: Iterable[str], purpose: str) -> None:
    """Raises ServoptError, before anything runs the model, when its serving path holds
    ops that are unsafe and not in `allowed_ops`; `purpose` says what would run it."""
    scan = scan_ops(model_dir, allowed_ops)
    if not scan.safe:
        ops = ",".join(scan.unsafe)
        raise ServoptError(f"{scan.model_dir}: refusing to run this model {purpose}: its "
                           f"serving path has unsafe ops: {scan.describe_unsafe()}; if you "
                           f"trust the model, allow them (servopt: --allow-unsafe-ops {ops}; "
                           f"components: allowed_ops=[...])")


def scan_ops(model_dir: str | Path, allowed_ops: Iterable[str] = ()) -> OpScan:
    """Scans the serving path of the SavedModel at `model_dir` (any layout the library
    resolves). `allowed_ops` are op types accepted even though they are unsafe."""
    resolved = resolve_saved_model_dir(model_dir)
    meta_graph = serving_meta_graph(read_saved_model(resolved), resolved)
    graph = _Graph(meta_graph, resolved)
    signatures = serving_signatures(meta_graph).values()
    roots = [t.name for sig in signatures for t in sig.outputs.values()]
    init_op = init_op_name(meta_graph)
    serving = graph.reachable(roots + ([init_op] if init_op else []))
    restore_name = meta_graph.saver_def.restore_op_name if meta_graph.HasField(
        "saver_def") else ""
    restore = graph.reachable([restore_name] if restore_name else [])
    ops: dict[str, int] = {}
    for _, node in serving + restore:
        ops[node.op] = ops.get(node.op, 0) + 1
    found = {node.op: UNSAFE_OPS[node.op] for _, node in serving if node.op in UNSAFE_OPS}
    found |= {node.op: UNSAFE_OPS[node.op] for _, node in restore
              if node.op in UNSAFE_OPS and node.op not in RESTORE_OPS}
    for scope, node in serving + restore:
        if node.op in ASSET_READERS and not graph.from_asset(
                scope, node.input[ASSET_READERS[node.op]]):
            found[node.op] = NOT_AN_ASSET
        if node.op in FILE_ATTRIBUTES:
            attribute, in_memory = FILE_ATTRIBUTES[node.op]
            if node.attr[attribute].s != in_memory:
                found[node.op] = FILES
    allowed = set(allowed_ops)
    return OpScan(
        model_dir=str(resolved),
        ops=dict(sorted(ops.items())),
        unsafe={op: found[op] for op in sorted(set(found) - allowed)},
        allowed={op: found[op] for op in sorted(set(found) & allowed)})


class _Graph:
    """The nodes of a MetaGraph's graph and functions, with what tracing needs: function
    arguments, call sites, and the asset tensors that may be trusted."""

    def __init__(self, meta_graph, model_dir: Path):
        graph_def = meta_graph.graph_def
        self.scopes: dict[str | None, dict] = {None: {n.name: n for n in graph_def.node}}
        self.arguments: dict[str, list[str]] = {}
        for function in graph_def.library.function:
            self.scopes[function.signature.name] = {n.name: n for n in function.node_def}
            self.arguments[function.signature.name] = [
                a.name for a in function.signature.input_arg]
        self.calls: dict[str, list] = defaultdict(list)  # function -> [(scope, call node)]
        for scope, nodes in self.scopes.items():
            for node in nodes.values():
                for name in _called_functions(node):
                    if name in self.arguments:
                        self.calls[name].append((scope, node))
        inputs = {_node_name(t.name) for sig in serving_signatures(meta_graph).values()
                  for t in sig.inputs.values()}
        assets = (model_dir / "assets").resolve()
        self.assets = {_node_name(a.tensor_info.name) for a in asset_file_defs(meta_graph)
                       if (assets / a.filename).resolve().is_relative_to(assets)} - inputs

    def reachable(self, roots: list[str]) -> list:
        """(scope, node) of every node `roots` depend on, and of the functions they call
        (whole bodies; scope is the function's name, None for the graph)."""
        found = []
        seen_nodes: set[str] = set()
        seen_functions: set[str] = set()
        pending = [_node_name(root) for root in roots]
        pending_functions: list[str] = []
        nodes = self.scopes[None]
        while pending or pending_functions:
            if pending:
                name = pending.pop()
                if name in seen_nodes or name not in nodes:
                    continue
                seen_nodes.add(name)
                node = nodes[name]
                found.append((None, node))
                pending.extend(_node_name(i) for i in node.input)
                pending_functions.extend(_called_functions(node))
                continue
            function = pending_functions.pop()
            if function in seen_functions or function not in self.arguments:
                continue
            seen_functions.add(function)
            for node in self.scopes[function].values():
                found.append((function, node))
                pending_functions.extend(_called_functions(node))
        return found

    def from_asset(self, scope: str | None, tensor: str, path: frozenset = frozenset()
                   ) -> bool:
        """Whether `tensor` (in `scope`) is, unchanged, the value of a trusted asset
        tensor on every way it can be computed."""
        name = _node_name(tensor)
        if (scope, name) in path:
            return False
        path = path | {(scope, name)}
        if scope is not None and name in self.arguments[scope]:
            index = self.arguments[scope].index(name)
            calls = self.calls.get(scope, [])
            return bool(calls) and all(self._passes_argument(call_scope, call, scope, index,
                                                             path)
                                       for call_scope, call in calls)
        node = self.scopes[scope].get(name)
        if node is None:
            return False
        if scope is None and name in self.assets:
            return True
        if node.op in _PASS_THROUGH:
            return self.from_asset(scope, _data_inputs(node)[0], path)
        if scope is None and node.op == "ReadVariableOp":
            return self._asset_variable(_node_name(node.input[0]), path)
        return False

    def _passes_argument(self, scope: str | None, call, function: str, index: int,
                         path: frozenset) -> bool:
        """Whether a call site's input for argument `index` of `function` is an asset.
        Only direct calls map inputs to arguments one to one; others fail closed."""
        direct = call.op == function or (call.op in _CALL_OPS
                                         and call.attr["f"].func.name == function)
        inputs = _data_inputs(call)
        return direct and index < len(inputs) and self.from_asset(scope, inputs[index], path)

    def _asset_variable(self, variable: str, path: frozenset) -> bool:
        """A resource variable that only ever holds an asset path (TF2 assigns asset
        paths to string variables): assigned from asset tensors only, otherwise only
        read, and passed to nothing else."""
        nodes = self.scopes[None]
        if variable not in nodes or nodes[variable].op != "VarHandleOp":
            return False
        assigned = False
        for node in nodes.values():
            if variable not in {_node_name(i) for i in _data_inputs(node)}:
                continue
            if node.op in ("ReadVariableOp", "VarIsInitializedOp"):
                continue
            if (node.op == "AssignVariableOp" and _node_name(node.input[0]) == variable
                    and self.from_asset(None, node.input[1], path)):
                assigned = True
                continue
            return False
        return assigned


def _data_inputs(node) -> list[str]:
    return [i for i in node.input if not i.startswith("^")]


def _node_name(tensor_or_input: str) -> str:
    return tensor_or_input.lstrip("^").split(":")[0]


def _called_functions(node) -> list[str]:
    """Functions a node runs: its op (a library function called directly) and any
    function-valued attribute (PartitionedCall's `f`, While's `body`, If's branches)."""
    names = [node.op]
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names.extend(f.name for f in value.list.func)
    return names
