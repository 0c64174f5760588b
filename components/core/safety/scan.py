"""The safety scan: every op a model runs when TF Serving loads and serves it, checked
against the allowlist (op_classes.py) before anything runs the model.

What is scanned is what TF Serving runs (tensorflow/cc/saved_model/loader.cc, which TF
Serving's SavedModel bundles use): the restore op (`RunRestore`: saver_def's
`restore_op_name`, fed the path of the model's own `variables/variables` in
`filename_tensor_name` and the asset tensors their `assets/` paths), the init op
(`RunInitOp`, chosen as `GetInitOp` chooses it, fed the asset paths), and the serving
signatures' outputs (fed only the request). Every node those depend on (data and control
inputs) is scanned, and the whole body of every function any scanned node reaches: called
by its op type, or named by any attribute, however deep (`f=Wrapper[f=Evil]`, `If`/`Case`
branches, dataset `map` functions). The save function every TF2 SavedModel carries
(SaveV2, MergeV2Checkpoints) is reached from none of them and is not scanned.

Each node's op must be one the table classifies as computing only. Ops that read a file
pass only where the loader feeds that file's name from inside the model: a checkpoint
reader (RestoreV2, ...) on the restore path whose prefix is, unchanged, the fed variables
path (or an asset), a table filled from a text file (TFX Transform's vocabularies) whose
file name is, unchanged, an asset tensor the loader feeds (directly, through Identity,
through the string variable TF2 assigns it to, or through function arguments at every
call site). An asset file outside `assets/` (`..`, any symlink out of the model) or an
asset tensor that is also a signature input is not trusted; on the serving path, where
the loader feeds nothing, a TF1 asset Const would read the path it holds, so only an
asset Placeholder is trusted there. Everything else is refused unless the user allows
the op type by name (`allowed_ops`, `--allow-unsafe-ops`).
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
    serving_meta_graph,
    serving_signatures,
)
from components.core.model_paths import inside, refuse_outside_links, resolve_saved_model_dir
from components.core.safety.allowlist import op_category
from components.core.safety.categories import (
    COMPUTE,
    FILE_ATTRIBUTE,
    FILES,
    RESTORE,
    TABLE_FROM_FILE,
    UNKNOWN,
)

NOT_AN_ASSET = "reads a file that is not one of the model's assets"
NOT_OWN_CHECKPOINT = "reads a checkpoint that is not the model's own variables/"
# A graph bigger than this is refused before anything loads it: Grappler and the Session
# need gigabytes for a million nodes (a 39 MB saved_model.pb crashed the optimizer with
# SIGSEGV at 8.5 GB). The largest serving graphs we know (BERT-large, ResNet-152) hold
# well under 100k nodes, functions included.
MAX_NODES = 300_000

# Ops that open the file named by one input (op -> its index): the loader must feed it.
_FILE_INPUT = {"InitializeTableFromTextFile": 1, "InitializeTableFromTextFileV2": 1,
               "Restore": 0, "RestoreV2": 0, "RestoreSlice": 0}
# Ops that open a file when an attribute names one: op -> (attribute, its in-memory value).
_FILE_ATTRIBUTES = {"DecodeProtoV2": ("descriptor_source", b"local://"),
                    "EncodeProto": ("descriptor_source", b"local://"),
                    "FixedUnigramCandidateSampler": ("vocab_file", b"")}
_PASS_THROUGH = frozenset({"Identity", "Snapshot"})
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
SERVING, INIT, RESTORING = "serving", "init", "restore"


@dataclass
class OpScan:
    """The ops a model runs when served, and those of them the scan refuses."""

    model_dir: str
    ops: dict[str, int]  # op type -> nodes, over everything scanned
    unsafe: dict[str, str] = field(default_factory=dict)  # op -> why, not allowed
    allowed: dict[str, str] = field(default_factory=dict)  # refused but in allowed_ops

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
    """Raises ServoptError, before anything runs the model, when it runs ops the scan
    refuses and `allowed_ops` does not allow; `purpose` says what would run it."""
    scan = scan_ops(model_dir, allowed_ops)
    if not scan.safe:
        ops = ",".join(scan.unsafe)
        raise ServoptError(f"{scan.model_dir}: refusing to run this model {purpose}: its "
                           f"serving path has unsafe ops: {scan.describe_unsafe()}; if you "
                           f"trust the model, allow them (servopt: --allow-unsafe-ops {ops}; "
                           f"components: allowed_ops=[...])")


def scan_ops(model_dir: str | Path, allowed_ops: Iterable[str] = ()) -> OpScan:
    """Scans what TF Serving runs of the SavedModel at `model_dir` (any layout the library
    resolves). `allowed_ops` are op types accepted although the scan refuses them.
    Raises ServoptError when the model cannot be read, has a symlink out of it, or is too
    big to load."""
    resolved = resolve_saved_model_dir(model_dir)
    refuse_outside_links(resolved)
    meta_graph = serving_meta_graph(read_saved_model(resolved), resolved)
    graph = _Graph(meta_graph, resolved)
    if graph.size > MAX_NODES:
        raise ServoptError(f"{resolved}: the graph holds {graph.size} nodes (functions "
                           f"included), more than the {MAX_NODES} servopt loads; a graph "
                           "this big exhausts memory when loaded or optimized: serve it "
                           "as it is (servopt describe still reads it)")
    signatures = serving_signatures(meta_graph).values()
    init_op = init_op_name(meta_graph)
    saver = meta_graph.saver_def if meta_graph.HasField("saver_def") else None
    paths = {
        SERVING: graph.reachable([t.name for sig in signatures for t in sig.outputs.values()]),
        INIT: graph.reachable([init_op] if init_op else []),
        RESTORING: graph.reachable([saver.restore_op_name] if saver else []),
    }
    # What the loader feeds on each path (loader.cc RunRestore, RunInitOp): asset paths
    # on the restore and init paths, the variables path on the restore path only.
    fed = {SERVING: graph.placeholder_assets, INIT: graph.assets,
           RESTORING: graph.assets | ({_node_name(saver.filename_tensor_name)}
                                      if saver else set())}
    ops: dict[str, int] = {}
    found: dict[str, str] = {}
    for path, nodes in paths.items():
        for scope, node in nodes:
            ops[node.op] = ops.get(node.op, 0) + 1
            why = _refusal(graph, path, fed[path], scope, node)
            if why:
                found.setdefault(node.op, why)
    allowed = set(allowed_ops)
    return OpScan(
        model_dir=str(resolved),
        ops=dict(sorted(ops.items())),
        unsafe={op: found[op] for op in sorted(set(found) - allowed)},
        allowed={op: found[op] for op in sorted(set(found) & allowed)})


def _refusal(graph: _Graph, path: str, fed: set[str], scope: str | None, node
             ) -> str | None:
    """Why `node` (on `path`, in function `scope` or the graph) may not run, or None."""
    if scope is None and node.name in graph.assets:
        return None  # the loader feeds it; who reads it is checked below
    category = op_category(node.op)
    if category == UNKNOWN and node.op in graph.arguments:
        return None  # a call of a library function: its body is scanned
    if category == COMPUTE:
        return None
    if category == FILE_ATTRIBUTE:
        attribute, in_memory = _FILE_ATTRIBUTES[node.op]
        return FILES if node.attr[attribute].s != in_memory else None
    if category == RESTORE:
        if path == RESTORING and graph.fed(scope, node.input[_FILE_INPUT[node.op]], fed):
            return None
        return NOT_OWN_CHECKPOINT
    if category == TABLE_FROM_FILE:
        if graph.fed(scope, node.input[_FILE_INPUT[node.op]], fed):
            return None
        return NOT_AN_ASSET
    return category


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
        self.size = sum(len(nodes) for nodes in self.scopes.values())
        self.calls: dict[str, list] = defaultdict(list)  # function -> [(scope, call node)]
        for scope, nodes in self.scopes.items():
            for node in nodes.values():
                for name in _called_functions(node):
                    if name in self.arguments:
                        self.calls[name].append((scope, node))
        inputs = {_node_name(t.name) for sig in serving_signatures(meta_graph).values()
                  for t in sig.inputs.values()}
        assets = Path(model_dir) / "assets"
        self.assets = {_node_name(a.tensor_info.name) for a in asset_file_defs(meta_graph)
                       if inside(assets, assets / a.filename)} - inputs
        self.placeholder_assets = {name for name in self.assets
                                   if self.scopes[None].get(name) is not None
                                   and self.scopes[None][name].op == "Placeholder"}

    def reachable(self, roots: list[str]) -> list:
        """(scope, node) of every node `roots` depend on, and of the functions they reach
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

    def fed(self, scope: str | None, tensor: str, trusted: set[str],
            path: frozenset = frozenset()) -> bool:
        """Whether `tensor` (in `scope`) is, unchanged, the value of a `trusted` graph
        tensor (one the loader feeds) on every way it can be computed."""
        name = _node_name(tensor)
        if (scope, name) in path:
            return False
        path = path | {(scope, name)}
        if scope is not None and name in self.arguments[scope]:
            index = self.arguments[scope].index(name)
            calls = self.calls.get(scope, [])
            return bool(calls) and all(
                self._passes_argument(call_scope, call, scope, index, trusted, path)
                for call_scope, call in calls)
        node = self.scopes[scope].get(name)
        if node is None:
            return False
        if scope is None and name in trusted:
            return True
        if node.op in _PASS_THROUGH:
            return self.fed(scope, _data_inputs(node)[0], trusted, path)
        if scope is None and node.op == "ReadVariableOp":
            return self._fed_variable(_node_name(node.input[0]), path)
        return False

    def _passes_argument(self, scope: str | None, call, function: str, index: int,
                         trusted: set[str], path: frozenset) -> bool:
        """Whether a call site's input for argument `index` of `function` is fed.
        Only direct calls map inputs to arguments one to one; others fail closed."""
        direct = call.op == function or (call.op in _CALL_OPS
                                         and call.attr["f"].func.name == function)
        inputs = _data_inputs(call)
        return direct and index < len(inputs) and self.fed(scope, inputs[index], trusted,
                                                          path)

    def _fed_variable(self, variable: str, path: frozenset) -> bool:
        """A resource variable that only ever holds an asset path (TF2 assigns asset
        paths to string variables in the init op, where the loader feeds them): assigned
        from asset tensors only, otherwise only read, and passed to nothing else."""
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
                    and self.fed(None, node.input[1], self.assets, path)):
                assigned = True
                continue
            return False
        return assigned


def _data_inputs(node) -> list[str]:
    return [i for i in node.input if not i.startswith("^")]


def _node_name(tensor_or_input: str) -> str:
    return tensor_or_input.lstrip("^").split(":")[0]


def _called_functions(node) -> list[str]:
    """Functions a node may run: its op (a library function called directly) and every
    function any attribute names, however nested (PartitionedCall's `f`, While's `body`,
    If's and Case's branches, and the functions passed in a function's own attributes:
    `StatefulPartitionedCall(f=Wrapper[f=Evil])` runs Evil)."""
    names = [node.op]
    pending = list(node.attr.values())
    while pending:
        value = pending.pop()
        functions = ([value.func] if value.HasField("func") else []) + list(value.list.func)
        for function in functions:
            names.append(function.name)
            pending.extend(function.attr.values())
    return names
