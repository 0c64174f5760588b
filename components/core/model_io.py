"""Read and write SavedModels (found with components.core.model_paths).

`ServingGraph` is the in-memory form every transformation works on: one flat GraphDef with
the serving signatures, the init op that fills lookup tables and the assets it reads.
`write_serving_graph` turns it back into a SavedModel that TF Serving loads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import components.core.tf_setup  # noqa: F401  (TensorFlow, quietly, first)

from google.protobuf import message, text_format
from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from components.core.errors import ServoptError
from components.core.model_paths import SAVED_MODEL_PB, SAVED_MODEL_PBTXT, inside
from components.core.staging import STALE_S, owned_name, remove_abandoned

INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"
MAIN_OP_COLLECTION = "saved_model_main_op"
LEGACY_INIT_OP_COLLECTION = "legacy_init_op"
ASSETS_COLLECTION = "saved_model_assets"  # TF1 builders: AssetFileDefs packed in Any
SERVING_TAG = "serve"


def read_saved_model(model_dir: Path) -> saved_model_pb2.SavedModel:
    """Parses `saved_model.pb` (or `.pbtxt`), with an error that names the file."""
    proto = saved_model_pb2.SavedModel()
    binary, text = model_dir / SAVED_MODEL_PB, model_dir / SAVED_MODEL_PBTXT
    target = binary if binary.is_file() else text
    try:
        if target is binary:
            proto.ParseFromString(binary.read_bytes())
        else:
            text_format.Parse(text.read_text(), proto)
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as err:
        raise ServoptError(f"{target}: not a valid SavedModel ({type(err).__name__}); "
                           "the file is corrupted or not a SavedModel: export the model "
                           "again") from None
    if not proto.meta_graphs:
        raise ServoptError(f"{target}: the SavedModel holds no MetaGraph; export the model "
                           "again")
    return proto


def serving_meta_graph(proto: saved_model_pb2.SavedModel, model_dir: Path,
                       tags: tuple[str, ...] = (SERVING_TAG,)) -> meta_graph_pb2.MetaGraphDef:
    for meta_graph in proto.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    found = [sorted(m.meta_info_def.tags) for m in proto.meta_graphs]
    raise ServoptError(f"{model_dir}: no MetaGraph tagged {sorted(tags)} (found {found}); "
                       "export the model with the 'serve' tag, as TF Serving expects")


def init_op_name(meta_graph: meta_graph_pb2.MetaGraphDef) -> str | None:
    """The op the loader runs after restoring variables (table initialisation), if any,
    chosen exactly as TF's loader chooses it (tensorflow/cc/saved_model/loader_util.cc
    `GetInitOp`, which TF Serving runs; python/saved_model/loader_impl.py `get_init_op`
    agrees): the output keyed `__saved_model_init_op` of the signature of that name (no
    such output: the load fails), else the one node of the `saved_model_main_op`
    collection when that collection exists, else that of `legacy_init_op`; a collection
    with more or fewer than one node fails the load."""
    where = meta_graph.meta_info_def.tags
    if INIT_OP_SIGNATURE_KEY in meta_graph.signature_def:
        outputs = meta_graph.signature_def[INIT_OP_SIGNATURE_KEY].outputs
        if INIT_OP_SIGNATURE_KEY not in outputs:
            raise ServoptError(f"MetaGraph {list(where)}: the {INIT_OP_SIGNATURE_KEY} "
                               f"signature has no output named {INIT_OP_SIGNATURE_KEY}; TF's "
                               "loader refuses it (Could not find output): export again")
        return outputs[INIT_OP_SIGNATURE_KEY].name.split(":")[0]
    key = (MAIN_OP_COLLECTION if MAIN_OP_COLLECTION in meta_graph.collection_def
           else LEGACY_INIT_OP_COLLECTION)
    if key not in meta_graph.collection_def:
        return None
    nodes = meta_graph.collection_def[key].node_list.value
    if len(nodes) != 1:
        raise ServoptError(f"MetaGraph {list(where)}: the {key} collection holds "
                           f"{len(nodes)} ops; TF's loader expects exactly one main op and "
                           "refuses the model: export again")
    return nodes[0].split(":")[0]


def asset_file_defs(meta_graph: meta_graph_pb2.MetaGraphDef
                    ) -> list[meta_graph_pb2.AssetFileDef]:
    """The asset tensors the loader feeds with paths into `assets/`, as it finds them:
    `asset_file_def` (TF2 and newer TF1 exports), else the TF1 assets collection."""
    if meta_graph.asset_file_def:
        return list(meta_graph.asset_file_def)
    found: dict[str, meta_graph_pb2.AssetFileDef] = {}
    if ASSETS_COLLECTION in meta_graph.collection_def:
        for packed in meta_graph.collection_def[ASSETS_COLLECTION].any_list.value:
            asset = meta_graph_pb2.AssetFileDef()
            packed.Unpack(asset)
            found.setdefault(asset.tensor_info.name, asset)  # TF1 builders repeat some
    return list(found.values())


def asset_constants_as_placeholders(graph_def: graph_pb2.GraphDef,
                                    assets: list[meta_graph_pb2.AssetFileDef]) -> None:
    """TF1 asset tensors are Consts holding the exporting machine's absolute path, which
    the loader overrides by feeding them the model's own `assets/` path. They become
    Placeholders (what TF2 exports use), so no pass can fold that stale path into the
    graph and a model that is not fed its assets fails instead of reading elsewhere."""
    names = {a.tensor_info.name.split(":")[0] for a in assets}
    for node in graph_def.node:
        if node.name in names and node.op == "Const":
            value = node.attr["value"].tensor
            node.op = "Placeholder"
            node.attr.clear()
            node.attr["dtype"].type = value.dtype
            node.attr["shape"].shape.CopyFrom(value.tensor_shape)


def serving_signatures(meta_graph: meta_graph_pb2.MetaGraphDef
                       ) -> dict[str, meta_graph_pb2.SignatureDef]:
    return {k: v for k, v in sorted(meta_graph.signature_def.items())
            if k != INIT_OP_SIGNATURE_KEY}


@dataclass
class ServingGraph:
    """A servable model as one GraphDef: what freeze, optimize and quantize transform."""

    graph_def: graph_pb2.GraphDef
    signatures: dict[str, meta_graph_pb2.SignatureDef]
    tags: list[str] = field(default_factory=lambda: [SERVING_TAG])
    init_op: str | None = None
    asset_file_defs: list[meta_graph_pb2.AssetFileDef] = field(default_factory=list)
    source_dir: Path | None = None  # where assets/ and assets.extra/ are copied from

    def fetch_nodes(self) -> list[str]:
        """Nodes serving needs: every signature output, and the init op."""
        outputs = [t.name.split(":")[0] for sig in self.signatures.values()
                   for t in sig.outputs.values()]
        return sorted(set(outputs + ([self.init_op] if self.init_op else [])))

    def feed_nodes(self) -> list[str]:
        inputs = [t.name.split(":")[0] for sig in self.signatures.values()
                  for t in sig.inputs.values()]
        asset_inputs = [a.tensor_info.name.split(":")[0] for a in self.asset_file_defs]
        return sorted(set(inputs + asset_inputs))

    def with_graph(self, graph_def: graph_pb2.GraphDef) -> ServingGraph:
        """This model with `graph_def`; asset tensors it no longer holds are dropped (TF's
        loader feeds every listed asset tensor, and fails on one not in the graph)."""
        names = {node.name for node in graph_def.node}
        assets = [a for a in self.asset_file_defs
                  if a.tensor_info.name.split(":")[0] in names]
        return ServingGraph(graph_def, self.signatures, self.tags, self.init_op, assets,
                            self.source_dir)

    def to_meta_graph(self) -> meta_graph_pb2.MetaGraphDef:
        """A MetaGraphDef of this graph: the form TF Serving loads and Grappler optimizes."""
        from components.core.tf_setup import tf

        from tensorflow.python.framework import meta_graph  # stable internal, TF 1.x-2.x

        proto = meta_graph_pb2.MetaGraphDef()
        proto.meta_info_def.tags.extend(self.tags)
        proto.meta_info_def.tensorflow_version = tf.__version__
        proto.meta_info_def.tensorflow_git_version = tf.version.GIT_VERSION
        proto.meta_info_def.stripped_op_list.CopyFrom(
            meta_graph.stripped_op_list_for_graph(self.graph_def))
        proto.graph_def.CopyFrom(self.graph_def)
        for key, signature in self.signatures.items():
            proto.signature_def[key].CopyFrom(signature)
        if self.init_op:  # the collection, not a signature: TF 1.x and 2.x loaders read it
            proto.collection_def[MAIN_OP_COLLECTION].node_list.value.append(self.init_op)
        proto.asset_file_def.extend(self.asset_file_defs)
        return proto


def write_serving_graph(graph: ServingGraph, out_dir: Path) -> None:
    """Writes `graph` as a SavedModel into the existing, empty directory `out_dir`."""
    saved_model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    saved_model.meta_graphs.add().CopyFrom(graph.to_meta_graph())
    if graph.source_dir is not None:
        for extra in ("assets", "assets.extra"):
            if (graph.source_dir / extra).is_dir():
                shutil.copytree(graph.source_dir / extra, out_dir / extra)
    # saved_model.pb last: a directory with it is a complete model (TF Serving's contract).
    (out_dir / SAVED_MODEL_PB).write_bytes(saved_model.SerializeToString())


@contextlib.contextmanager
def staged_output(out: str | os.PathLike, source: Path | None = None) -> Iterator[Path]:
    """Yields a private staging directory that becomes `out` only if the block succeeds.

    `out` must not exist yet, nor lie inside the model `source` it is made from (the
    output would copy itself along with the source's assets). On any error the staging
    directory is removed, so `out` is never left half-written and nothing already at that
    path is touched.
    """
    target = Path(out)
    if source is not None and inside(source, target):
        raise ServoptError(f"{target}: is inside the source model {source}; write the "
                           "output outside the model it is made from")
    if target.exists():
        raise ServoptError(f"{target}: already exists; choose a new output directory or "
                           "remove the old one")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise ServoptError(f"{parent}: output parent directory does not exist; create it "
                           "first")
    prefix = f".{target.name}.staging-"
    remove_abandoned(parent, prefix, STALE_S)  # left by killed runs
    staging = parent / owned_name(prefix)
    try:
        staging.mkdir(mode=0o700)
    except OSError as err:
        raise ServoptError(f"{parent}: cannot write there ({err.strerror}); choose a "
                           "writable output directory") from None
    try:
        yield staging
        try:
            os.rename(staging, target)
        except OSError as err:
            raise ServoptError(f"{target}: cannot publish the output ({err.strerror})"
                               ) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def scratch_dir(root: Path | None = None) -> Path:
    """A fresh directory for an intermediate model, under `root` or the system temp dir."""
    base = root or Path(tempfile.gettempdir())
    path = base / f"servopt-{uuid.uuid4().hex[:12]}"
    path.mkdir(parents=True)
    return path


def read_serving_graph(model_dir: Path) -> ServingGraph:
    """The serving MetaGraph of a SavedModel on disk, as a ServingGraph."""
    meta_graph = serving_meta_graph(read_saved_model(model_dir), model_dir)
    asset_constants_as_placeholders(meta_graph.graph_def, asset_file_defs(meta_graph))
    return ServingGraph(
        graph_def=meta_graph.graph_def,
        signatures=serving_signatures(meta_graph),
        tags=list(meta_graph.meta_info_def.tags),
        init_op=init_op_name(meta_graph),
        asset_file_defs=asset_file_defs(meta_graph),
        source_dir=model_dir,
    )
