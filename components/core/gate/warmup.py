"""TF Serving warm-up requests: `assets.extra/tf_serving_warmup_requests`.

TF Serving replays the records of this file (a TFRecord of `PredictionLog` protos) when it
loads a version, before the version takes traffic, so the first real requests do not pay
for lazy initialisation; a request that fails makes the load fail and the version never
becomes available (tensorflow/serving servables/tensorflow/saved_model_warmup_util.cc).
The requests here are Predict requests built from the user's eval examples (TFRecords of
tf.Example, a TFX Examples artifact, or .npz), one per batch size, for the signature as
the runtime that serves the version resolves it: `model.tflite` through the TfLiteSession
model under `--prefer_tflite_model=true` (saved_model.pb is not loaded then), else
saved_model.pb. `replay_warmup` runs them through that runtime before a push, so a version
TF Serving would refuse to load is never pushed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from components.core.tf_setup import tf

from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from components.core.errors import ServoptError, first_line
from components.core.examples import batches_for_signature
from components.core.model_io import read_saved_model, serving_meta_graph, serving_signatures
from components.core.requirements import (
    TENSORFLOW_RUNTIME,
    TFLITE_MODEL_FILE,
    TFLITE_RUNTIME,
    has_tflite_model,
)
from components.core.safety import refuse_unsafe
from components.core.serving_session import ServingSession
from components.core.tflite_session import DEFAULT_SIGNATURE, TfLiteSession

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads no more than this many records


def serving_runtimes(model_dir: Path, runtime: str | None = None) -> list[str]:
    """The runtimes TF Serving may serve the version at `model_dir` on: `runtime` when the
    server is known, else every one it has (model.tflite with --prefer_tflite_model=true,
    saved_model.pb without; saved_model_bundle_factory.cc)."""
    if runtime is not None:
        if runtime not in (TENSORFLOW_RUNTIME, TFLITE_RUNTIME):
            raise ServoptError(f"unknown serving runtime {runtime!r}; use "
                               f"{TENSORFLOW_RUNTIME} or {TFLITE_RUNTIME}")
        if runtime == TFLITE_RUNTIME and not has_tflite_model(model_dir):
            raise ServoptError(f"{model_dir}: has no {TFLITE_MODEL_FILE} to serve on the "
                               "tflite runtime")
        return [runtime]
    return ([TFLITE_RUNTIME] if has_tflite_model(model_dir) else []) + [TENSORFLOW_RUNTIME]


def _signatures(model_dir: Path, runtime: str) -> dict:
    if runtime == TFLITE_RUNTIME:  # as TfLiteSession::Create resolves them
        with TfLiteSession(Path(model_dir) / TFLITE_MODEL_FILE) as session:
            return dict(session.signatures)
    return serving_signatures(serving_meta_graph(read_saved_model(model_dir), model_dir))


def warmup_logs(model_dir: Path, examples: str | Path, signature: str = "serving_default",
                batch_sizes: Sequence[int] = (1,), model_name: str | None = None,
                runtime: str | None = None) -> list[prediction_log_pb2.PredictionLog]:
    """One Predict request per batch size for `signature` of the version at `model_dir`,
    fed from `examples`, with the signature's keys as every runtime in
    `serving_runtimes(model_dir, runtime)` resolves it."""
    model_dir = Path(model_dir)
    if not batch_sizes or len(batch_sizes) > MAX_WARMUP_RECORDS or any(
            isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ServoptError(f"warm-up batch sizes must be 1 to {MAX_WARMUP_RECORDS} integers "
                           f">= 1, got {list(batch_sizes)}")
    for serving in serving_runtimes(model_dir, runtime):
        signatures = _signatures(model_dir, serving)
        if signature not in signatures:
            where = (f"{TFLITE_MODEL_FILE}, which TF Serving serves alone with "
                     "--prefer_tflite_model=true" if serving == TFLITE_RUNTIME
                     else "saved_model.pb")
            raise ServoptError(f"{model_dir}: no signature '{signature}' to warm up in "
                               f"{where} (has {sorted(signatures)}); pass warmup_signature")
    signature_def = signatures[signature]  # the last one: saved_model.pb's where it runs
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
    try:
        return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
                for record in tf.data.TFRecordDataset(str(path))]
    except Exception as err:  # tf.errors.DataLossError, protobuf DecodeError, ...
        raise ServoptError(f"{path}: not a TFRecord file of PredictionLog protos "
                           f"({first_line(err)}); TF Serving would fail to load the version; "
                           "remove it or write it again") from None


def replay_warmup(model_dir: Path, logs: Sequence[prediction_log_pb2.PredictionLog],
                  runtime: str | None = None, allowed_ops: Sequence[str] = ()) -> None:
    """Replays `logs` as TF Serving does at load, through every runtime in
    `serving_runtimes(model_dir, runtime)`; raises ServoptError naming the request that
    fails (TF Serving would then fail the load: the version never becomes available)."""
    model_dir = Path(model_dir)
    if not logs:
        return
    for serving in serving_runtimes(model_dir, runtime):
        if serving == TFLITE_RUNTIME:  # TfLiteSession refuses anything but builtin ops
            session = TfLiteSession(model_dir / TFLITE_MODEL_FILE)
        else:
            refuse_unsafe(model_dir, allowed_ops, "to replay its warm-up requests")
            session = ServingSession(model_dir)
        with session:
            for index, log in enumerate(logs):
                try:
                    _replay(session, log)
                except ServoptError as err:
                    raise ServoptError(
                        f"{model_dir}: warm-up request {index + 1} of {len(logs)} fails on "
                        f"the {serving} runtime: {err}; TF Serving would fail to load the "
                        "version (it replays warm-ups at load); nothing was pushed") from None


def _replay(session: TfLiteSession | ServingSession,
            log: prediction_log_pb2.PredictionLog) -> None:
    """One record as saved_model_warmup_util.cc runs it: Predict only here."""
    if log.WhichOneof("log_type") != "predict_log":
        raise ServoptError(f"a {log.WhichOneof('log_type')} record; servopt writes and "
                           "replays Predict warm-ups only")
    request = log.predict_log.request
    name = request.model_spec.signature_name or DEFAULT_SIGNATURE  # predict_util.cc
    inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
    if isinstance(session, TfLiteSession):
        session.run(name, inputs, list(request.output_filter) or None)
        return
    signature = session.signature(name)
    if set(inputs) != set(signature.inputs):  # predict_util.cc VerifyRequestInputsSize
        raise ServoptError(f"signature '{name}': input size does not match signature: sent "
                           f"{sorted(inputs)}, the signature has {sorted(signature.inputs)}")
    try:
        session.run(name, inputs)
    except (ValueError, TypeError) as err:  # e.g. a value the placeholder cannot take
        raise ServoptError(f"signature '{name}': {first_line(err)}") from None
