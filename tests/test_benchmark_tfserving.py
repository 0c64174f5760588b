"""The tfserving backend: requests and responses in TF Serving's own formats.

No TF Serving binary can be installed here, so request building and response parsing are
tested against responses recorded in the shape TF Serving returns them (REST API
reference: https://www.tensorflow.org/tfx/serving/api_rest; gRPC: PredictResponse). The
live test runs only where `tensorflow_model_server` is on PATH.
"""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest
from google.protobuf import text_format

from components.core.benchmark.tfserving import (
    ServedRow,
    benchmark_command,
    build_grpc_predict_request,
    build_rest_predict_request,
    model_base_dir,
    parse_grpc_predict_response,
    parse_model_status,
    parse_rest_predict_response,
    version_state,
)
from components.core.errors import ServoptError

# GET /v1/models/seed_cnn while loading, once served, and after a failed load.
STATUS_LOADING = '{"model_version_status": [{"version": "1", "state": "LOADING", ' \
                 '"status": {"error_code": "OK", "error_message": ""}}]}'
STATUS_AVAILABLE = """{
 "model_version_status": [
  {
   "version": "1",
   "state": "AVAILABLE",
   "status": {
    "error_code": "OK",
    "error_message": ""
   }
  }
 ]
}"""
STATUS_FAILED = json.dumps({"model_version_status": [{
    "version": "1", "state": "END", "status": {
        "error_code": "DATA_LOSS",
        "error_message": "Can't parse /models/seed_cnn/1/saved_model.pb as binary proto"}}]})
STATUS_UNKNOWN_MODEL = '{ "error": "Could not find any versions of model seed_cnn" }'

# POST /v1/models/NAME:predict answers.
ROW_SINGLE_OUTPUT = '{\n    "predictions": [[0.1, 0.9], [0.75, 0.25]\n    ]\n}'
ROW_TWO_OUTPUTS = json.dumps({"predictions": [
    {"probabilities": [0.1, 0.9], "classes": 1},
    {"probabilities": [0.75, 0.25], "classes": 0}]})
COLUMNAR_TWO_OUTPUTS = json.dumps({"outputs": {"probabilities": [[0.1, 0.9], [0.75, 0.25]],
                                               "classes": [1, 0]}})
COLUMNAR_SINGLE_OUTPUT = '{"outputs": [[0.1, 0.9], [0.75, 0.25]]}'
ROW_BINARY_OUTPUT = json.dumps({"predictions": [{"b64": base64.b64encode(b"cat").decode()},
                                                {"b64": base64.b64encode(b"\xffdog").decode()}]})
PREDICT_ERROR = json.dumps({"error": "Failed to process element: 0 key: image of 'instances' "
                                    "list. Error: INVALID_ARGUMENT: JSON Value: 1 Type: Number "
                                    "is not of expected type: float"})

# A gRPC PredictResponse, as text format.
GRPC_RESPONSE = """
model_spec { name: "seed_cnn" version { value: 1 } signature_name: "serving_default" }
outputs {
  key: "output_0"
  value {
    dtype: DT_FLOAT
    tensor_shape { dim { size: 2 } dim { size: 2 } }
    float_val: 0.1 float_val: 0.9 float_val: 0.75 float_val: 0.25
  }
}
outputs {
  key: "classes"
  value { dtype: DT_STRING tensor_shape { dim { size: 2 } } string_val: "cat" string_val: "dog" }
}
"""

PROBABILITIES = np.array([[0.1, 0.9], [0.75, 0.25]])


def test_model_status_tells_loading_available_and_failed_apart():
    assert version_state(parse_model_status(STATUS_LOADING)) == (False, None)
    assert version_state(parse_model_status(STATUS_AVAILABLE)) == (True, None)
    assert version_state(parse_model_status(STATUS_AVAILABLE), version="2") == (False, None)
    available, failure = version_state(parse_model_status(STATUS_FAILED))
    assert not available and failure.startswith("DATA_LOSS: Can't parse")
    assert parse_model_status(STATUS_UNKNOWN_MODEL) == []


def test_rest_row_format_request_carries_one_instance_per_example():
    feeds = {"image": np.arange(4, dtype=np.float32).reshape(2, 2), "ids": np.array([3, 4])}
    body = json.loads(build_rest_predict_request(feeds, "serving_default"))
    assert body == {"signature_name": "serving_default",
                    "instances": [{"ids": 3, "image": [0.0, 1.0]},
                                  {"ids": 4, "image": [2.0, 3.0]}]}


def test_rest_requests_send_binary_strings_as_b64():
    records = np.array([b"\x0a\x00", b"\xff"], dtype=object)
    row = json.loads(build_rest_predict_request({"examples": records}, "serving_default"))
    assert row["instances"] == [{"examples": {"b64": "CgA="}}, {"examples": {"b64": "/w=="}}]
    columnar = json.loads(build_rest_predict_request({"examples": records}, "predict",
                                                     fmt="columnar"))
    assert columnar == {"signature_name": "predict",
                        "inputs": {"examples": [{"b64": "CgA="}, {"b64": "/w=="}]}}


@pytest.mark.parametrize("answer", [ROW_TWO_OUTPUTS, COLUMNAR_TWO_OUTPUTS])
def test_rest_answers_with_named_outputs_parse_to_arrays(answer):
    outputs = parse_rest_predict_response(answer, ["classes", "probabilities"])
    np.testing.assert_allclose(outputs["probabilities"], PROBABILITIES)
    np.testing.assert_array_equal(outputs["classes"], [1, 0])


@pytest.mark.parametrize("answer", [ROW_SINGLE_OUTPUT, COLUMNAR_SINGLE_OUTPUT])
def test_a_single_output_is_named_after_the_signature(answer):
    outputs = parse_rest_predict_response(answer, ["output_0"])
    assert list(outputs) == ["output_0"]
    np.testing.assert_allclose(outputs["output_0"], PROBABILITIES)


def test_binary_outputs_are_decoded_from_b64():
    outputs = parse_rest_predict_response(ROW_BINARY_OUTPUT, ["label"])
    assert outputs["label"].tolist() == [b"cat", b"\xffdog"]


def test_an_error_answer_becomes_a_one_line_error():
    with pytest.raises(ServoptError, match="TF Serving refused the request: Failed to process"):
        parse_rest_predict_response(PREDICT_ERROR, ["output_0"])
    with pytest.raises(ServoptError, match="not JSON"):
        parse_rest_predict_response(b"<html>502 Bad Gateway</html>", ["output_0"])


def test_grpc_predict_request_holds_tensors_by_input_key():
    feeds = {"image": np.ones((2, 28, 28, 1), np.float32),
             "examples": np.array([b"a", b"b"], dtype=object)}
    request = build_grpc_predict_request("seed_cnn", "serving_default", feeds)
    assert request.model_spec.name == "seed_cnn"
    assert request.model_spec.signature_name == "serving_default"
    image = request.inputs["image"]
    assert image.dtype == 1 and [d.size for d in image.tensor_shape.dim] == [2, 28, 28, 1]
    assert list(request.inputs["examples"].string_val) == [b"a", b"b"]


def test_grpc_predict_response_parses_to_arrays():
    from tensorflow_serving.apis import predict_pb2

    response = text_format.Parse(GRPC_RESPONSE, predict_pb2.PredictResponse())
    outputs = parse_grpc_predict_response(response)
    np.testing.assert_allclose(outputs["output_0"], PROBABILITIES, rtol=1e-6)
    assert outputs["classes"].tolist() == [b"cat", b"dog"]


def test_the_model_is_served_from_a_base_dir_whose_version_1_links_to_its_files(tmp_path):
    model = tmp_path / "my model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"")
    base = model_base_dir(model, tmp_path / "scratch")
    version = base / "1"
    assert version.is_dir() and not version.is_symlink()
    assert (version / "saved_model.pb").is_symlink()
    assert (version / "saved_model.pb").resolve() == (model / "saved_model.pb").resolve()
    assert (version / "variables").resolve() == (model / "variables").resolve()
    row = ServedRow("seed_cnn", model, ("--tensorflow_intra_op_parallelism=2",
                                        "--tensorflow_inter_op_parallelism=1"))
    command = benchmark_command("tensorflow_model_server", row, base, 8600, 8601)
    assert command == ["tensorflow_model_server", "--port=8600", "--rest_api_port=8601",
                       "--model_name=seed_cnn", f"--model_base_path={base}",
                       "--tensorflow_intra_op_parallelism=2",
                       "--tensorflow_inter_op_parallelism=1", "--max_num_load_retries=0"]


def test_without_the_server_binary_the_backend_says_what_to_do(seed_cnn_model):
    from components.core.benchmark.config import BenchmarkConfig, ModelSpec, TFServingOptions
    from components.core.benchmark.run import run_benchmark

    config = BenchmarkConfig(backend="tfserving", batch_sizes=(1,), concurrency=(),
                             tfserving=TFServingOptions(binary="no-such-model-server"))
    with pytest.raises(ServoptError) as error:
        run_benchmark([ModelSpec("seed", seed_cnn_model)], config)
    message = str(error.value)
    assert message.startswith("no-such-model-server: TF Serving's server is not on PATH")
    assert "--tfserving-host" in message and "--backend session" in message


@pytest.mark.tfserving_live
@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_live_tensorflow_model_server(seed_cnn_model, tmp_path, protocol):
    """The real server, where it is installed (the project's image): every row served by
    its own tensorflow_model_server with the row's flags, a TFLite variant on both its
    paths, a version that cannot load failed with the server's own line, the search run
    on the server too."""
    if shutil.which("tensorflow_model_server") is None:
        pytest.skip("tensorflow_model_server is not on PATH: TF Serving ships only as a "
                    "Docker image or from Google's apt repository, neither available here")
    from components.core.benchmark.config import BenchmarkConfig, ModelSpec, TFServingOptions
    from components.core.benchmark.run import run_benchmark
    from tests.model_zoo import tflite_variant
    from tests.test_tfserving_command import parse_command

    variant = tflite_variant(seed_cnn_model, tmp_path / "variant")
    broken = tmp_path / "broken"
    shutil.copytree(seed_cnn_model, broken)
    shutil.rmtree(broken / "variables")
    config = BenchmarkConfig(backend="tfserving", batch_sizes=(1, 8), concurrency=(1, 2),
                             warmup_requests=5, window_requests=20, max_windows=6,
                             search_budget_s=60, tfserving=TFServingOptions(protocol=protocol))
    result = run_benchmark([ModelSpec("base", seed_cnn_model),
                            ModelSpec("again", seed_cnn_model), ModelSpec("variant", variant),
                            ModelSpec("broken", broken)], config)
    assert "TF Serving cannot load 'broken'" in result.models["broken"].error
    for name in ("base", "again", "variant@tflite", "variant@tensorflow"):
        model = result.models[name]
        assert model.error is None, model.error
        assert model.load_time_s > 0 and model.peak_memory_bytes > 0
        assert set(model.batches) == {1, 8}
        if model.runtime.measured_as:  # the same files as an earlier row: measured once
            continue
        flags = parse_command(model.runtime.command[1:])
        assert flags.get("prefer_tflite_model", False) == name.endswith("@tflite")
        # binary, --port, --rest_api_port, --model_name, --model_base_path, the row's
        # flags (what the gate prints), --max_num_load_retries=0
        assert model.runtime.command[5:-1] == model.runtime.server_flags
    assert result.models["again"].batches[8].speedup_p50 > 0
    assert result.search is not None and result.search.contenders


STAND_IN_SERVER = '''#!{python}
"""A stand-in for tensorflow_model_server, for the orchestration test only.

It takes TF Serving's flags, serves version 1 of --model_base_path with TF Serving's
loading path (ServingSession), and answers the model status API, REST :predict (row
format) and gRPC Predict in TF Serving's formats, written here independently of the
client code under test.
"""
import argparse
import base64
import json
import sys
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import threading

import numpy as np

sys.path.insert(0, {root!r})
parser = argparse.ArgumentParser()
for flag in ("port", "rest_api_port"):
    parser.add_argument("--" + flag, type=int, required=True)
for flag in ("tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism"):
    parser.add_argument("--" + flag, type=int, default=0)
parser.add_argument("--model_name", required=True)
parser.add_argument("--model_base_path", required=True)
args, _ = parser.parse_known_args()  # the other flags of the row: not modelled here
state = {{"state": "LOADING", "code": "OK", "message": "", "session": None}}


def decode(value):
    if isinstance(value, dict) and set(value) == {{"b64"}}:
        return base64.b64decode(value["b64"])
    return [decode(v) for v in value] if isinstance(value, list) else value


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/v1/models/" + args.model_name:
            return self.reply(404, {{"error": "Could not find any versions of model x"}})
        self.reply(200, {{"model_version_status": [{{"version": "1", "state": state["state"],
                        "status": {{"error_code": state["code"],
                                    "error_message": state["message"]}}}}]}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        instances = body["instances"]
        feeds = {{k: np.array([decode(i[k]) for i in instances]) for k in instances[0]}}
        feeds = {{k: v.astype(object) if v.dtype.kind == "S" else v.astype(np.float32)
                  if v.dtype == np.float64 else v for k, v in feeds.items()}}
        outputs = state["session"].run(body.get("signature_name", "serving_default"), feeds)
        if len(outputs) == 1:
            rows = next(iter(outputs.values())).tolist()
        else:
            rows = [{{k: v[i].tolist() for k, v in outputs.items()}}
                    for i in range(len(instances))]
        self.reply(200, {{"predictions": rows}})


http = ThreadingHTTPServer(("127.0.0.1", args.rest_api_port), Handler)
threading.Thread(target=http.serve_forever, daemon=True).start()

import grpc  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from components.core.errors import ServoptError  # noqa: E402
from components.core.serving_session import ServingSession  # noqa: E402
from components.core.tf_setup import tf  # noqa: E402


class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):
        feeds = {{k: tf.make_ndarray(v) for k, v in request.inputs.items()}}
        outputs = state["session"].run(request.model_spec.signature_name, feeds)
        response = predict_pb2.PredictResponse()
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
server.add_insecure_port("127.0.0.1:%d" % args.port)
server.start()
try:
    state["session"] = ServingSession(Path(args.model_base_path) / "1",
                                      args.tensorflow_intra_op_parallelism,
                                      args.tensorflow_inter_op_parallelism)
    state["state"] = "AVAILABLE"
except ServoptError as err:
    state.update(state="END", code="UNKNOWN", message=str(err))
server.wait_for_termination()
'''


@pytest.fixture
def stand_in_server(tmp_path, monkeypatch):
    """`tensorflow_model_server` on PATH, played by a script (see STAND_IN_SERVER)."""
    import os
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    binary = tmp_path / "bin" / "tensorflow_model_server"
    binary.parent.mkdir()
    binary.write_text(STAND_IN_SERVER.format(python=sys.executable, root=root))
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary.parent}{os.pathsep}{os.environ['PATH']}")
    return binary


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_the_tfserving_backend_starts_a_server_per_model_and_measures_it(
        stand_in_server, seed_cnn_model, tmp_path, protocol):
    """Orchestration against a stand-in server (the real one cannot be installed here):
    base dir with version 1, waiting for AVAILABLE, requests, a failed load reported."""
    from components.core.benchmark.config import BenchmarkConfig, ModelSpec, TFServingOptions
    from components.core.benchmark.run import run_benchmark

    no_variables = tmp_path / "no_variables"
    shutil.copytree(seed_cnn_model, no_variables)
    shutil.rmtree(no_variables / "variables")
    config = BenchmarkConfig(backend="tfserving", batch_sizes=(1, 8), concurrency=(1, 2),
                             warmup_requests=3, window_seconds=None, window_requests=10,
                             max_windows=6, min_requests=1,
                             search_budget_s=0,  # the live test covers the search
                             tfserving=TFServingOptions(protocol=protocol))
    result = run_benchmark([ModelSpec("base", seed_cnn_model),
                            ModelSpec("again", seed_cnn_model),
                            ModelSpec("broken", no_variables)], config)
    assert "TF Serving cannot load 'broken': UNKNOWN" in result.models["broken"].error
    for name in ("base", "again"):
        model = result.models[name]
        assert model.error is None, model.error
        assert model.load_time_s > 0 and model.peak_memory_bytes > 50e6
        assert set(model.batches) == {1, 8} and len(model.concurrency) == 4
        assert model.runtime.command[0] == str(stand_in_server)  # what was run, recorded
        assert model.runtime.command[5:-1] == model.runtime.server_flags
    assert result.models["again"].batches[8].speedup_p50 > 0
