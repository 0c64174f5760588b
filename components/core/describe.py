"""Describe a SavedModel: signatures, node and op counts, sizes on disk.

The TF 2.x counterpart of the seed's `describe_graph` and `get_size`. Counts cover the
whole serving MetaGraph, the graph's own nodes and those inside library functions (where
a TF2 export keeps its compute), so a frozen, inlined graph and a function-based export
are counted on the same footing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from components.core.tf_setup import tf

from components.core.grappler import all_nodes
from components.core.model_io import read_saved_model, serving_meta_graph, serving_signatures
from components.core.model_paths import resolve_saved_model_dir

# What the issue and the seed call variables: the variable itself and its reads.
VARIABLE_OP_TYPES = {"Variable", "VariableV2", "VarHandleOp", "ReadVariableOp",
                     "ResourceGather"}


@dataclass
class TensorDescription:
    name: str
    dtype: str
    shape: list[int | None] | None  # None: unknown rank


@dataclass
class SignatureDescription:
    method_name: str
    inputs: dict[str, TensorDescription]
    outputs: dict[str, TensorDescription]


@dataclass
class SizeBytes:
    graph: int
    variables: int
    total: int


@dataclass
class ModelDescription:
    path: str
    signatures: dict[str, SignatureDescription]
    node_count: int
    op_counts: dict[str, int]
    const_count: int
    variable_count: int
    identity_count: int
    size_bytes: SizeBytes

    def to_dict(self) -> dict:
        return asdict(self)


def tensor_description(info) -> TensorDescription:
    shape = None if info.tensor_shape.unknown_rank else [
        d.size if d.size >= 0 else None for d in info.tensor_shape.dim]
    return TensorDescription(info.name, tf.dtypes.as_dtype(info.dtype).name, shape)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def size_bytes(model_dir: Path) -> SizeBytes:
    graph = sum((model_dir / n).stat().st_size for n in ("saved_model.pb", "saved_model.pbtxt")
                if (model_dir / n).is_file())
    return SizeBytes(graph=graph, variables=_dir_bytes(model_dir / "variables"),
                     total=_dir_bytes(model_dir))


def describe(path) -> ModelDescription:
    model_dir = resolve_saved_model_dir(path)
    meta_graph = serving_meta_graph(read_saved_model(model_dir), model_dir)
    ops = Counter(node.op for node in all_nodes(meta_graph.graph_def))
    signatures = {
        key: SignatureDescription(
            method_name=sig.method_name,
            inputs={k: tensor_description(v) for k, v in sorted(sig.inputs.items())},
            outputs={k: tensor_description(v) for k, v in sorted(sig.outputs.items())})
        for key, sig in serving_signatures(meta_graph).items()}
    return ModelDescription(
        path=str(model_dir),
        signatures=signatures,
        node_count=sum(ops.values()),
        op_counts=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        const_count=ops["Const"],
        variable_count=sum(ops[op] for op in VARIABLE_OP_TYPES),
        identity_count=ops["Identity"],
        size_bytes=size_bytes(model_dir),
    )
