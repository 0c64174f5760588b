"""The `tfserving` backend: the models served by TF Serving, measured over gRPC or REST.

Without a host, one `tensorflow_model_server` per model is started (same thread flags for
every model) on a model base directory made for it (`<base>/1 -> model`: TF Serving
serves numeric version subdirectories), and the benchmark waits until the model status
API (REST GET /v1/models/NAME) reports version 1 AVAILABLE. Requests then go to gRPC
`PredictionService/Predict` or REST `POST /v1/models/NAME:predict`.

Request building and response parsing are pure functions over TF Serving's documented
formats (https://www.tensorflow.org/tfx/serving/api_rest): row format
`{"instances": [...]}` -> `{"predictions": [...]}`, columnar `{"inputs": ...}` ->
`{"outputs": ...}`, binary strings as `{"b64": ...}`.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.core.benchmark.config import TFServingOptions
from components.core.benchmark.engines import Feeds
from components.core.benchmark.measure import LocalRunner
from components.core.errors import ServoptError

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

def model_base_dir(model_dir: Path, root: Path) -> Path:
    """`root/model/1 -> model_dir`: the layout TF Serving's --model_base_path expects."""
    base = root / "model"
    base.mkdir(parents=True)
    (base / VERSION).symlink_to(Path(model_dir).resolve(), target_is_directory=True)
    return base


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(binary: str, name: str, base: Path, grpc_port: int, rest_port: int,
                   intra_op_threads: int, inter_op_threads: int) -> list[str]:
    return [binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
            f"--model_name={name}", f"--model_base_path={base}",
            f"--tensorflow_intra_op_parallelism={intra_op_threads}",
            f"--tensorflow_inter_op_parallelism={inter_op_threads}"]


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
    """Polls the model status API until version 1 is AVAILABLE; fails on END or exit."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise ServoptError(f"tensorflow_model_server exited with code {process.returncode} "
                               f"serving '{name}': {_tail(log)}")
        try:
            status, body = _get(host, rest_port, f"/v1/models/{name}")
        except OSError:
            status, body = 0, b""
        if status == 200:
            available, failure = version_state(parse_model_status(body))
            if available:
                return
            if failure:
                raise ServoptError(f"TF Serving cannot load '{name}': {failure}")
        if time.monotonic() > deadline:
            raise ServoptError(f"'{name}' was not AVAILABLE in TF Serving after {timeout_s:.0f} "
                               f"s (http://{host}:{rest_port}/v1/models/{name}); {_tail(log)}")
        time.sleep(0.1)


def _tail(log: Path | None) -> str:
    if log is None or not log.is_file():
        return "no server log"
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "the server log is empty"


def _peak_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class TFServingEngine:
    """A model in TF Serving, called like an in-process Engine."""

    def __init__(self, name: str, model_dir: Path, signature: str, output_keys: Sequence[str],
                 options: TFServingOptions, intra_op_threads: int, inter_op_threads: int):
        self.name, self.signature, self.output_keys = name, signature, list(output_keys)
        self.protocol = options.protocol
        self.process: subprocess.Popen | None = None
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
            base = model_base_dir(model_dir, self._scratch)
            self.host, self.grpc_port, self.rest_port = "127.0.0.1", free_port(), free_port()
            log = self._scratch / "server.log"
            with open(log, "wb") as handle:
                self.process = subprocess.Popen(
                    server_command(binary, name, base, self.grpc_port, self.rest_port,
                                   intra_op_threads, inter_op_threads),
                    stdout=handle, stderr=subprocess.STDOUT)
            try:
                wait_available(self.host, self.rest_port, name, options.startup_timeout_s,
                               self.process, log)
            except ServoptError:
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
        return _peak_rss(self.process.pid) if self.process is not None else None

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


def tfserving_runner(name: str, model_dir: Path, signature: str, output_keys: Sequence[str],
                     options: TFServingOptions, intra_op_threads: int,
                     inter_op_threads: int) -> LocalRunner:
    """A runner whose `load` starts (or finds) the server and whose requests go to it."""
    return LocalRunner(lambda: TFServingEngine(name, model_dir, signature, output_keys,
                                               options, intra_op_threads, inter_op_threads))
