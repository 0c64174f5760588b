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

Not blocked: `InitializeTableFromTextFile(V2)`, which reads vocabulary files from the
model's own `assets/` (TFX Transform models need it); the loader feeds it the asset path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import components.core.tf_setup  # noqa: F401  (TensorFlow, quietly, first)

from tensorflow.core.framework import graph_pb2

from components.core.model_io import (
    init_op_name,
    read_saved_model,
    resolve_saved_model_dir,
    serving_meta_graph,
    serving_signatures,
)

FILES = "reads or writes files"
PYTHON = "runs Python"
NETWORK = "opens the network"

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
    "DistributedSave", "ListSnapshotChunksDataset",
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


def scan_ops(model_dir: str | Path, allowed_ops: Iterable[str] = ()) -> OpScan:
    """Scans the serving path of the SavedModel at `model_dir` (any layout the library
    resolves). `allowed_ops` are op types accepted even though they are unsafe."""
    resolved = resolve_saved_model_dir(model_dir)
    meta_graph = serving_meta_graph(read_saved_model(resolved), resolved)
    graph_def = meta_graph.graph_def
    roots = [t.name for sig in serving_signatures(meta_graph).values()
             for t in sig.outputs.values()]
    init_op = init_op_name(meta_graph)
    serving = _reachable_ops(graph_def, roots + ([init_op] if init_op else []))
    restore_name = meta_graph.saver_def.restore_op_name if meta_graph.HasField(
        "saver_def") else ""
    restore = _reachable_ops(graph_def, [restore_name] if restore_name else [])
    ops = dict(serving)
    for op, count in restore.items():
        ops[op] = ops.get(op, 0) + count
    found = {op for op in serving if op in UNSAFE_OPS}
    found |= {op for op in restore if op in UNSAFE_OPS and op not in RESTORE_OPS}
    allowed = set(allowed_ops)
    return OpScan(
        model_dir=str(resolved),
        ops=dict(sorted(ops.items())),
        unsafe={op: UNSAFE_OPS[op] for op in sorted(found - allowed)},
        allowed={op: UNSAFE_OPS[op] for op in sorted(found & allowed)})


def _reachable_ops(graph_def: graph_pb2.GraphDef, roots: list[str]) -> dict[str, int]:
    """Op counts of the nodes `roots` depend on, and of the functions they call."""
    nodes = {node.name: node for node in graph_def.node}
    functions = {f.signature.name: f for f in graph_def.library.function}
    ops: dict[str, int] = {}
    seen_nodes: set[str] = set()
    seen_functions: set[str] = set()
    pending = [_node_name(root) for root in roots]
    pending_functions: list[str] = []
    while pending or pending_functions:
        if pending:
            name = pending.pop()
            if name in seen_nodes or name not in nodes:
                continue
            seen_nodes.add(name)
            node = nodes[name]
            ops[node.op] = ops.get(node.op, 0) + 1
            pending.extend(_node_name(i) for i in node.input)
            pending_functions.extend(_called_functions(node))
            continue
        function_name = pending_functions.pop()
        if function_name in seen_functions or function_name not in functions:
            continue
        seen_functions.add(function_name)
        for node in functions[function_name].node_def:
            ops[node.op] = ops.get(node.op, 0) + 1
            pending_functions.extend(_called_functions(node))
    return ops


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
