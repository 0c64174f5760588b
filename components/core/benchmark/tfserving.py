"""The `tfserving` backend: the models served by TF Serving, measured over gRPC or REST.

Without a host, every row (a version under one TF Serving configuration, see
benchmark.runtimes) is served by its own `tensorflow_model_server`, started with that
row's flags: the command `serving_config.server_command` builds from `row_flags`, the
same function and rule the gate uses for the command it prints, so the command measured
is the command the push prints, with this backend's ports and model base path, and the
`BENCHMARK_ONLY_FLAGS` (none changes how a loaded model runs). The row's version
directory is `<scratch>/model/1`: links to the model's files, plus what the push writes
into a version for that configuration (`batching_params.pbtxt`, beside it the server-wide
`--batching_parameters_file`) and, where the model carries none, warm-up records in
`assets.extra/tf_serving_warmup_requests` built from the benchmark's first input batch at
each batch size (TF Serving replays them at load: saved_model_warmup.md). The model's own
files are never written. The benchmark waits until the model status API (REST GET
/v1/models/NAME) reports version 1 AVAILABLE; a version that fails to load is a failed
row with the server's own log line (`load_failure`). Requests then go to gRPC
`PredictionService/Predict` or REST `POST /v1/models/NAME:predict`. With a host, the
models must already be served there: their flags are not this backend's to set.

Request building and response parsing are pure functions over TF Serving's documented
formats (https://www.tensorflow.org/tfx/serving/api_rest): row format
`{"instances": [...]}` -> `{"predictions": [...]}`, columnar `{"inputs": ...}` ->
`{"outputs": ...}`, binary strings as `{"b64": ...}`.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.core.batching import BatchingParameters
from components.core.benchmark.config import TFServingOptions
from components.core.benchmark.engines import Feeds
from components.core.benchmark.measure import LocalRunner
from components.core.benchmark.memory import process_memory
from components.core.errors import ServoptError
from components.core.serving_config import server_command

AVAILABLE = "AVAILABLE"
END = "END"
VERSION = "1"
ROW, COLUMNAR = "row", "columnar"
MAX_MESSAGE_BYTES = 512 * 1024 * 1024


# --- model status -------------------------------------------------------------------

@dataclass(frozen=True)
class VersionStatus:
    version: str
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str
    error_message: str


def _json(body: bytes | str | Mapping) -> dict:
    if isinstance(body, Mapping):
        return dict(body)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ServoptError(f"TF Serving answered something that is not JSON ({err}); is "
                           "the address a TF Serving REST port?") from None
    if not isinstance(data, dict):
        raise ServoptError("TF Serving answered JSON that is not an object")
    return data


def parse_model_status(body: bytes | str | Mapping) -> list[VersionStatus]:
    """The versions in a GET /v1/models/NAME answer (an error answer: none)."""
    data = _json(body)
    return [VersionStatus(str(v.get("version", "")), v.get("state", ""),
                          v.get("status", {}).get("error_code", "OK"),
                          v.get("status", {}).get("error_message", ""))
            for v in data.get("model_version_status", [])]


def version_state(statuses: Sequence[VersionStatus], version: str | None = None
                  ) -> tuple[bool, str | None]:
    """(available, failure): whether `version` (any, if None) serves, and why it cannot."""
    chosen = [s for s in statuses if version is None or s.version == version]
    if any(s.state == AVAILABLE for s in chosen):
        return True, None
    for status in chosen:
        if status.state == END and status.error_code not in ("OK", ""):
            return False, f"{status.error_code}: {status.error_message}"
    return False, None


# --- predict requests and responses ---------------------------------------------------

def _to_json(value):
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind == "S":
            return [_to_json(v) for v in value]
        return value.tolist()
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    return value


def build_rest_predict_request(feeds: Feeds, signature: str, fmt: str = ROW) -> bytes:
    """The body of POST /v1/models/NAME:predict for one batch of feeds."""
    if fmt == COLUMNAR:
        body = {"signature_name": signature,
                "inputs": {k: _to_json(np.asarray(v)) for k, v in sorted(feeds.items())}}
    else:
        count = len(next(iter(feeds.values())))
        body = {"signature_name": signature,
                "instances": [{k: _to_json(np.asarray(v)[i]) for k, v in sorted(feeds.items())}
                              for i in range(count)]}
    return json.dumps(body).encode()


def _from_json(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _array(value) -> np.ndarray:
    decoded = _from_json(value)
    array = np.asarray(decoded)
    return array.astype(object) if array.dtype.kind == "S" else array


def parse_rest_predict_response(body: bytes | str | Mapping, output_keys: Sequence[str]
                                ) -> dict[str, np.ndarray]:
    """Outputs by key from a :predict answer, row ("predictions") or columnar ("outputs").

    TF Serving leaves out the key when the signature has a single output: it is named
    from `output_keys` then.
    """
    data = _json(body)
    if "error" in data:
        raise ServoptError(f"TF Serving refused the request: {data['error']}")
    single = output_keys[0] if len(output_keys) == 1 else "outputs"
    if "predictions" in data:
        rows = data["predictions"]
        if rows and all(isinstance(r, dict) and set(r) != {"b64"} for r in rows):
            return {k: _array([r[k] for r in rows]) for k in rows[0]}
        return {single: _array(rows)}
    if "outputs" in data:
        outputs = data["outputs"]
        if isinstance(outputs, dict) and set(outputs) != {"b64"}:
            return {k: _array(v) for k, v in outputs.items()}
        return {single: _array(outputs)}
    raise ServoptError(f"TF Serving's answer has neither 'predictions' nor 'outputs' "
                       f"(keys: {sorted(data)})")


def build_grpc_predict_request(model_name: str, signature: str, feeds: Feeds):
    """A tensorflow_serving PredictRequest for one batch of feeds."""
    from components.core.tf_setup import tf

    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for key, value in sorted(feeds.items()):
        request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
    return request


def parse_grpc_predict_response(response) -> dict[str, np.ndarray]:
    """Outputs by key from a PredictResponse (a map of TensorProto)."""
    from components.core.tf_setup import tf

    return {key: tf.make_ndarray(tensor) for key, tensor in sorted(response.outputs.items())}


# --- the server -------------------------------------------------------------------------

# Flags the backend adds to a row's command, none of which changes how a loaded model runs:
# --max_num_load_retries (main.cc:163; default 5 with a minute between tries, server.h:68-69):
# 0 makes a version that cannot load fail in seconds instead of five minutes.
BENCHMARK_ONLY_FLAGS = ("--max_num_load_retries=0",)


@dataclass(frozen=True)
class ServedRow:
    """What one server serves: a row's version under the row's configuration."""

    name: str  # the model name it is served under (the row's name)
    model_dir: Path  # the SavedModel directory (the version)
    flags: tuple[str, ...]  # serving_config.row_flags: the flags the push prints
    environment: Mapping[str, str] = field(default_factory=dict)  # e.g. TF_ENABLE_ONEDNN_OPTS
    batching: BatchingParameters | None = None  # its batching_params.pbtxt
    # Warm-up requests to write where the model carries none (PredictionLog protos).
    warmups: tuple = ()


def version_dir(row: ServedRow, base: Path) -> Path:
    """`base/1`: links to every file of the model, and what the row's configuration adds
    to a version (as gate.push writes it): `batching_params.pbtxt` (read under
    --enable_per_model_batching_parameters, bundle_factory_util.cc
    GetPerModelBatchingParams) and, where the model carries none, the warm-up records
    (assets.extra/tf_serving_warmup_requests, saved_model_warmup_util.cc)."""
    from components.core.batching import BATCHING_PARAMS_FILE, write_batching_params
    from components.core.gate.warmup import WARMUP_DIR, WARMUP_FILE, write_warmup_file

    source = Path(row.model_dir).resolve()
    version = base / VERSION
    version.mkdir(parents=True)
    for entry in sorted(source.iterdir()):
        if entry.name == BATCHING_PARAMS_FILE and row.batching is not None:
            continue
        if entry.name == WARMUP_DIR and entry.is_dir():
            (version / WARMUP_DIR).mkdir()
            for extra in sorted(entry.iterdir()):
                (version / WARMUP_DIR / extra.name).symlink_to(extra)
            continue
        (version / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    if row.batching is not None:
        write_batching_params(version, row.batching)
    if row.warmups and not (version / WARMUP_DIR / WARMUP_FILE).exists():
        write_warmup_file(list(row.warmups), version)
    return version


def model_base_dir(row: ServedRow | Path, root: Path) -> Path:
    """`root/model`, the layout --model_base_path expects (numeric version directories,
    file_system_storage_path_source.cc): version 1 (`version_dir`) and, where the row's
    batching sets the batch thread pool, the server-wide batching file beside it (where
    the push puts it; its flag names it under the model base path)."""
    from components.core.batching import SERVER_BATCHING_FILE, write_server_batching_file

    if not isinstance(row, ServedRow):
        row = ServedRow("model", Path(row), ())
    base = root / "model"
    base.mkdir(parents=True)
    version_dir(row, base)
    if row.batching is not None:
        write_server_batching_file(base / SERVER_BATCHING_FILE, row.batching)
    return base


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def benchmark_command(binary: str, row: ServedRow, base: Path, grpc_port: int,
                      rest_port: int) -> list[str]:
    """The command that serves `row` from `base`: the gate's printed command
    (serving_config.server_command) with this backend's binary, ports and base path, and
    BENCHMARK_ONLY_FLAGS; the environment is given to the process, not in the list."""
    return server_command(row.flags, str(base), row.name, binary=binary,
                          grpc_port=grpc_port, rest_api_port=rest_port,
                          extra_flags=BENCHMARK_ONLY_FLAGS)


def warmup_records(model_name: str, signature: str, batches: Sequence[Feeds]) -> tuple:
    """One Predict warm-up record per batch (PredictionLog, as gate.warmup writes them for
    a push): TF Serving replays them at load, and one that fails fails the load."""
    from components.core.tf_setup import tf

    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    records = []
    for feeds in batches:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
        for key, value in sorted(feeds.items()):
            request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        records.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return tuple(records)


def served_name(row_name: str) -> str:
    """The model name a row is served under: its name with what a REST path cannot hold
    (`:` ends the name in /v1/models/NAME:predict, http_rest_api_handler.cc) replaced."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", row_name)


def served_row(row, settings, pools: Mapping[int, Sequence[Feeds]]) -> ServedRow:
    """The ServedRow of a benchmark row (runtimes.Row): its flags by the gate's rule
    (serving_config.row_flags, with the version's serving requirements), its environment,
    batching and warm-ups (the first input batch of every batch size)."""
    from components.core.requirements import TFLITE_RUNTIME, read_requirements
    from components.core.serving_config import row_flags

    config = row.serving_config(settings)
    version = Path(row.path).parent if row.runtime == TFLITE_RUNTIME else Path(row.path)
    requirements = read_requirements(version)
    name = row.name if settings.tfserving.host else served_name(row.name)
    return ServedRow(name=name, model_dir=version,
                     flags=tuple(row_flags(config, row.beside_tflite, requirements)),
                     environment=dict(requirements.environment), batching=config.batching,
                     warmups=warmup_records(name, settings.signature,
                                            [pool[0] for _, pool in sorted(pools.items())]))


def find_server(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise ServoptError(f"{binary}: TF Serving's server is not on PATH; install "
                           "tensorflow-model-server, pass --tfserving-host for a running "
                           "server, or use --backend session (TF Serving's loading path, "
                           "embedded)")
    return path


def _get(host: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_available(host: str, rest_port: int, name: str, timeout_s: float,
                   process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Polls the model status API until version 1 is AVAILABLE; fails on END or exit,
    with the server's own error line where its log has one (`load_failure`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise ServoptError(f"TF Serving cannot load '{name}' (tensorflow_model_server "
                               f"exited with code {process.returncode}): {_tail(log)}")
        try:
            status, body = _get(host, rest_port, f"/v1/models/{name}")
        except OSError:
            status, body = 0, b""
        if status == 200:
            available, failure = version_state(parse_model_status(body))
            if available:
                return
            if failure:
                line = load_failure(_read(log)) if log is not None else None
                raise ServoptError(f"TF Serving cannot load '{name}': {line or failure}")
        if time.monotonic() > deadline:
            raise ServoptError(f"'{name}' was not AVAILABLE in TF Serving after {timeout_s:.0f} "
                               f"s (http://{host}:{rest_port}/v1/models/{name}); {_tail(log)}")
        time.sleep(0.1)


# The lines TF Serving logs when a version cannot be served, most specific first:
# util/retrier.cc:40 `LOG(ERROR) << description << " failed: " << status` with the
# description "Loading servable: {name: N version: V}" (core/loader_harness.cc:82);
# core/aspired_versions_manager.cc:421 "Servable ... cannot be loaded: ..."; and
# model_servers/main.cc:344 "Failed to start server. Error: ..." (printed to stdout before
# the server exits: ServerCore::Create waits for the initial models, server_core.cc:328).
_FAILURE_LINES = (re.compile(r"(Loading servable: .* failed: .*)$"),
                  re.compile(r"(Servable .* cannot be loaded: .*)$"),
                  re.compile(r"(Failed to start server\. Error: .*)$"))


def load_failure(log_text: str) -> str | None:
    """The server's own line saying why a version did not load (the most specific of
    _FAILURE_LINES, the last of its kind), without the log prefix; None if none."""
    lines = log_text.splitlines()
    for pattern in _FAILURE_LINES:
        found = [match.group(1).strip() for line in lines
                 if (match := pattern.search(line))]
        if found:
            return found[-1]
    return None


def _read(log: Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    return log.read_text(errors="replace")


def _tail(log: Path | None) -> str:
    if log is None or not log.is_file():
        return "no server log"
    text = _read(log)
    failure = load_failure(text)
    if failure:
        return failure
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "the server log is empty"


class TFServingEngine:
    """A model in TF Serving, called like an in-process Engine."""

    def __init__(self, row: ServedRow, signature: str, output_keys: Sequence[str],
                 options: TFServingOptions):
        name = row.name
        self.name, self.signature, self.output_keys = name, signature, list(output_keys)
        self.protocol = options.protocol
        self.process: subprocess.Popen | None = None
        self.command: list[str] | None = None  # what was run, environment first
        self._scratch: Path | None = None
        self._channel = self._stub = None
        self._local = threading.local()
        start = time.perf_counter()
        if options.host:
            self.host, self.grpc_port, self.rest_port = (options.host, options.grpc_port,
                                                         options.rest_port)
            wait_available(self.host, self.rest_port, name, options.startup_timeout_s)
            self.load_time_s: float | None = None  # loaded before we came
        else:
            binary = find_server(options.binary)
            self._scratch = Path(tempfile.mkdtemp(prefix="servopt-tfserving-"))
            try:
                base = model_base_dir(row, self._scratch)
                self.host, self.grpc_port, self.rest_port = ("127.0.0.1", free_port(),
                                                             free_port())
                command = benchmark_command(binary, row, base, self.grpc_port,
                                            self.rest_port)
                self.command = [f"{k}={v}" for k, v in sorted(row.environment.items())
                                ] + command
                log = self._scratch / "server.log"
                start = time.perf_counter()  # the server's load, warm-ups included
                with open(log, "wb") as handle:
                    self.process = subprocess.Popen(
                        command, stdout=handle, stderr=subprocess.STDOUT,
                        env={**os.environ, **row.environment})
                wait_available(self.host, self.rest_port, name, options.startup_timeout_s,
                               self.process, log)
            except BaseException:
                self.close()
                raise
            self.load_time_s = time.perf_counter() - start
        if self.protocol == "grpc":
            import grpc
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            self._channel = grpc.insecure_channel(
                f"{self.host}:{self.grpc_port}",
                options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                         ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        if self._stub is not None:
            import grpc

            request = build_grpc_predict_request(self.name, self.signature, feeds)
            try:
                return parse_grpc_predict_response(self._stub.Predict(request, timeout=120))
            except grpc.RpcError as err:
                raise ServoptError(f"TF Serving's Predict failed for '{self.name}': "
                                   f"{err.code().name}: {err.details()}") from None
        connection = getattr(self._local, "connection", None)
        if connection is None:  # one keep-alive connection per client thread
            connection = http.client.HTTPConnection(self.host, self.rest_port, timeout=120)
            self._local.connection = connection
        body = build_rest_predict_request(feeds, self.signature)
        connection.request("POST", f"/v1/models/{self.name}:predict", body,
                           {"Content-Type": "application/json"})
        return parse_rest_predict_response(connection.getresponse().read(), self.output_keys)

    def peak_memory_bytes(self) -> int | None:
        if self.process is None:
            return None
        return process_memory(self.process.pid).peak_rss_bytes or None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stub = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


class TFServingRunner(LocalRunner):
    """A runner whose `load` starts (or finds) the server and whose requests go to it."""

    def __init__(self, row: ServedRow, signature: str, output_keys: Sequence[str],
                 options: TFServingOptions):
        super().__init__(lambda: TFServingEngine(row, signature, output_keys, options))

    def wait_ready(self) -> None:
        """Nothing to wait for: the server starts in `load` (ProcessRunner's interface)."""

    @property
    def command(self) -> list[str] | None:
        """The command the server was started with (None: not started, or a host's)."""
        return getattr(self.engine, "command", None)

    @property
    def pid(self) -> int | None:
        """The server's process (None: not started yet, or a host's)."""
        process = getattr(self.engine, "process", None)
        return process.pid if process is not None else None


def tfserving_runner(row: ServedRow, signature: str, output_keys: Sequence[str],
                     options: TFServingOptions) -> TFServingRunner:
    return TFServingRunner(row, signature, output_keys, options)
