"""Real inputs from the user: TFRecords of `tf.Example` (a TFX Examples split) or `.npz`.

A signature that takes serialized examples is fed the records as they are; a signature
that takes tensors is fed each input key from the feature of the same name, reshaped to
the signature's shape. This is how a Quantizer or a benchmark uses a pipeline's eval data.
"""

from __future__ import annotations

import stat
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from components.core.errors import ServoptError

Feeds = dict[str, np.ndarray]


def checked_input_path(path: Path) -> Path:
    """`path` if it is a regular file or a directory. A device (`/dev/zero`) or a FIFO
    would be read without end (or block forever): refused, as is a missing path."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        raise ServoptError(f"{path}: no such file or directory; pass a TFRecord file, a "
                           "directory of them, a TFX Examples artifact or an .npz file"
                           ) from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ServoptError(f"{path}: not a regular file or directory (a device or a FIFO); "
                           "pass a TFRecord file, a directory of them, a TFX Examples "
                           "artifact or an .npz file")
    return Path(path)


def tfrecord_files(path: Path) -> list[Path]:
    """TFRecord files at `path`: a file, a directory, or a TFX Examples artifact (its eval
    split, else its first split)."""
    if checked_input_path(path).is_file():
        return [path]
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
    """One batch of feeds for `signature` from serialized `tf.Example` records. A single
    string input takes the records themselves (TFX's serving convention), unless every
    example has a feature named after it: then it takes that feature (raw text for a model
    that tokenizes in its graph)."""
    examples = [_parse_example(r) for r in records]
    if takes_serialized_examples(signature):
        key = next(iter(signature.inputs))
        if any(e is None or not feature_values(e, key) for e in examples):
            return {key: np.array(records, dtype=object)}
    if any(e is None for e in examples):
        raise ServoptError(f"{source}: holds records that are not tf.Example protos; the "
                           "signature's inputs are read from their features")
    feeds = {}
    for key, info in signature.inputs.items():
        dtype = tf.dtypes.as_dtype(info.dtype)
        rows = [feature_values(e, key) for e in examples]
        if any(not row for row in rows):
            raise ServoptError(f"{source}: examples have no feature '{key}', which the "
                               f"signature's input needs; name features after the inputs")
        dims = [d.size for d in info.tensor_shape.dim][1:]
        try:
            array = np.array(rows, dtype=object if dtype == tf.string
                             else dtype.as_numpy_dtype)
            feeds[key] = array.reshape([len(rows), *[d if d > 0 else -1 for d in dims]]
                                       if dims else [len(rows)])
        except (ValueError, TypeError):
            raise ServoptError(f"{source}: feature '{key}' does not fit the signature's "
                               f"input ({dtype.name}, shape {_shape(info)}): its values "
                               "differ in length or type between examples") from None
    check_feeds(source, feeds, signature)
    return feeds


def _parse_example(record: bytes) -> tf.train.Example | None:
    try:
        return tf.train.Example.FromString(record)
    except Exception:  # noqa: BLE001  protobuf's DecodeError: not a tf.Example
        return None


def _shape(info: meta_graph_pb2.TensorInfo) -> str:
    if info.tensor_shape.unknown_rank:
        return "any"
    return "[" + ", ".join("None" if d.size < 0 else str(d.size)
                           for d in info.tensor_shape.dim) + "]"


def check_feeds(source: Path, arrays: dict[str, np.ndarray],
                signature: meta_graph_pb2.SignatureDef) -> None:
    """Raises ServoptError when the arrays for `signature`'s inputs cannot be its inputs:
    no rows, another kind of value (strings for numbers), another shape, or NaN or
    infinite values (outputs computed from them compare as different however equal)."""
    for key, info in sorted(signature.inputs.items()):
        array = np.asarray(arrays[key])
        dtype = tf.dtypes.as_dtype(info.dtype)
        expected = f"({dtype.name}, shape {_shape(info)})"
        if array.ndim == 0 or len(array) == 0:
            raise ServoptError(f"{source}: input '{key}' holds no rows; give at least one "
                               f"example {expected}")
        is_text = array.dtype.kind in "USO"
        if is_text != (dtype == tf.string) or (
                dtype == tf.bool and array.dtype.kind != "b") or (
                dtype != tf.string and array.dtype.kind not in "biuf"):
            raise ServoptError(f"{source}: input '{key}' holds {array.dtype} values, the "
                               f"signature takes {expected}; convert the array")
        if not info.tensor_shape.unknown_rank:
            dims = [d.size for d in info.tensor_shape.dim]
            if len(dims) != array.ndim or any(
                    d >= 0 and d != got for d, got in zip(dims[1:], array.shape[1:],
                                                         strict=False)):
                raise ServoptError(f"{source}: input '{key}' has shape {list(array.shape)}, "
                                   f"the signature takes {expected} (the first dimension is "
                                   "the batch); reshape the array")
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            raise ServoptError(f"{source}: input '{key}' holds NaN or infinite values; "
                               "verification and the benchmark need real examples")


def load_npz(path: Path) -> dict[str, np.ndarray]:
    if not checked_input_path(path).is_file():
        raise ServoptError(f"{path}: is a directory; pass an .npz file")
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
        check_feeds(path, arrays, signature)
        count = min(limit, min(len(arrays[k]) for k in signature.inputs))
        return [{k: arrays[k][i:i + batch_size] for k in signature.inputs}
                for i in range(0, count, batch_size)]
    records = read_records(path, limit)
    return [records_to_feeds(records[i:i + batch_size], signature, path)
            for i in range(0, len(records), batch_size)]
