"""TF Serving warm-up requests: `assets.extra/tf_serving_warmup_requests`.

TF Serving replays the records of this file (a TFRecord of `PredictionLog` protos) when it
loads a version, before the version takes traffic, so the first real requests do not pay
for lazy initialisation. The requests here are Predict requests built from the user's eval
examples (TFRecords of tf.Example, a TFX Examples artifact, or .npz), one per batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from components.core.tf_setup import tf

from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from components.core.errors import ServoptError
from components.core.examples import batches_for_signature
from components.core.model_io import read_saved_model, serving_meta_graph, serving_signatures

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads no more than this many records


def warmup_logs(model_dir: Path, examples: str | Path, signature: str = "serving_default",
                batch_sizes: Sequence[int] = (1,), model_name: str | None = None
                ) -> list[prediction_log_pb2.PredictionLog]:
    """One Predict request per batch size for `signature` of the SavedModel at `model_dir`,
    fed from `examples`."""
    model_dir = Path(model_dir)
    if not batch_sizes or len(batch_sizes) > MAX_WARMUP_RECORDS or any(
            isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ServoptError(f"warm-up batch sizes must be 1 to {MAX_WARMUP_RECORDS} integers "
                           f">= 1, got {list(batch_sizes)}")
    meta_graph = serving_meta_graph(read_saved_model(model_dir), model_dir)
    signatures = serving_signatures(meta_graph)
    if signature not in signatures:
        raise ServoptError(f"{model_dir}: no signature '{signature}' to warm up (has "
                           f"{sorted(signatures)}); pass warmup_signature")
    signature_def = signatures[signature]
    logs = []
    for batch_size in batch_sizes:
        batches = batches_for_signature(signature_def, Path(examples), batch_size, batch_size)
        if not batches:
            raise ServoptError(f"{examples}: holds no inputs {sorted(signature_def.inputs)} "
                               f"for signature '{signature}'; name the arrays or features "
                               "after the signature's inputs")
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name or "", signature_name=signature))
        for key, values in batches[0].items():
            dtype = tf.dtypes.as_dtype(signature_def.inputs[key].dtype)
            request.inputs[key].CopyFrom(tf.make_tensor_proto(values, dtype=dtype))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup_file(logs: Sequence[prediction_log_pb2.PredictionLog], saved_model_dir: Path
                      ) -> Path:
    """Writes `logs` to `<saved_model_dir>/assets.extra/tf_serving_warmup_requests`."""
    out = Path(saved_model_dir) / WARMUP_DIR / WARMUP_FILE
    out.parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(out)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return out


def read_warmup_file(path: str | Path) -> list[prediction_log_pb2.PredictionLog]:
    """The records of a warm-up file, parsed as TF Serving parses them."""
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(str(path))]
