"""Real inputs from the user: TFRecords of `tf.Example` (a TFX Examples split) or `.npz`.

A signature that takes serialized examples is fed the records as they are; a signature
that takes tensors is fed each input key from the feature of the same name, reshaped to
the signature's shape. This is how a Quantizer or a benchmark uses a pipeline's eval data.
"""

from __future__ import annotations

from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from components.core.errors import ServoptError

Feeds = dict[str, np.ndarray]


def tfrecord_files(path: Path) -> list[Path]:
    """TFRecord files at `path`: a file, a directory, or a TFX Examples artifact (its eval
    split, else its first split)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ServoptError(f"{path}: no such file or directory; pass a TFRecord file, a "
                           "directory of them, or a TFX Examples artifact")
    splits = sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith("Split-"))
    if splits:
        eval_split = [p for p in splits if p.name == "Split-eval"]
        path = (eval_split or splits)[0]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ServoptError(f"{path}: holds no TFRecord files")
    return files


def read_records(path: Path, limit: int) -> list[bytes]:
    records: list[bytes] = []
    for file in tfrecord_files(Path(path)):
        compression = "GZIP" if _is_gzip(file) else ""
        try:
            for record in tf.data.TFRecordDataset(str(file), compression_type=compression):
                records.append(record.numpy())
                if len(records) >= limit:
                    return records
        except tf.errors.DataLossError:
            raise ServoptError(f"{file}: not a readable TFRecord file (corrupted, or another "
                               "format); pass TFRecords of tf.Example") from None
    if not records:
        raise ServoptError(f"{path}: holds no records")
    return records


def _is_gzip(file: Path) -> bool:
    with open(file, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def takes_serialized_examples(signature: meta_graph_pb2.SignatureDef) -> bool:
    inputs = list(signature.inputs.values())
    return len(inputs) == 1 and inputs[0].dtype == tf.string.as_datatype_enum


def feature_values(example: tf.train.Example, key: str) -> list:
    feature = example.features.feature.get(key)
    if feature is None:
        return []
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value) if kind else []


def records_to_feeds(records: list[bytes], signature: meta_graph_pb2.SignatureDef,
                     source: Path) -> Feeds:
    """One batch of feeds for `signature` from serialized `tf.Example` records."""
    if takes_serialized_examples(signature):
        key = next(iter(signature.inputs))
        return {key: np.array(records, dtype=object)}
    examples = [tf.train.Example.FromString(r) for r in records]
    feeds = {}
    for key, info in signature.inputs.items():
        dtype = tf.dtypes.as_dtype(info.dtype)
        rows = [feature_values(e, key) for e in examples]
        if any(not row for row in rows):
            raise ServoptError(f"{source}: examples have no feature '{key}', which the "
                               f"signature's input needs; name features after the inputs")
        dims = [d.size for d in info.tensor_shape.dim][1:]
        array = np.array(rows, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
        feeds[key] = array.reshape([len(rows), *[d if d > 0 else -1 for d in dims]]
                                   if dims else [len(rows)])
    return feeds


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise ServoptError(f"{path}: not a readable .npz file ({err})") from None


def npz_mismatch(path: Path, arrays: dict[str, np.ndarray],
                 signatures: dict[str, meta_graph_pb2.SignatureDef]) -> ServoptError:
    """The error for an .npz whose arrays cover the inputs of none of `signatures`."""
    missing = "; ".join(f"signature '{name}' needs {sorted(set(sig.inputs) - set(arrays))}"
                        for name, sig in signatures.items())
    taken = {key for sig in signatures.values() for key in sig.inputs}
    unexpected = sorted(set(arrays) - taken)
    extra = f"; no signature takes {unexpected}" if unexpected else ""
    return ServoptError(f"{path}: lacks input arrays: {missing}{extra}; key the arrays by "
                        "the signature's input names")


def batches_for_signature(signature: meta_graph_pb2.SignatureDef, path: Path, limit: int,
                          batch_size: int) -> list[Feeds] | None:
    """Batches of real inputs for `signature` from `path`, or None if it has none for it."""
    path = Path(path)
    if path.suffix == ".npz":
        arrays = load_npz(path)
        if not set(signature.inputs) <= set(arrays):
            return None
        count = min(limit, min(len(arrays[k]) for k in signature.inputs))
        return [{k: arrays[k][i:i + batch_size] for k in signature.inputs}
                for i in range(0, count, batch_size)]
    records = read_records(path, limit)
    return [records_to_feeds(records[i:i + batch_size], signature, path)
            for i in range(0, len(records), batch_size)]
