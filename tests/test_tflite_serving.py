"""A TFLite variant as TF Serving's TFLite runtime serves it, rule by rule.

`TfLiteSession` (components/core/tflite_session.py) models tensorflow/serving's
servables/tensorflow/tflite_session.cc: signatures only from `signature_defs_metadata`,
else one generated `serving_default` of subgraph 0 with keys cut at ':'; tensor names
resolved by `FixTfLiteTensorName`; Predict only; only the primary subgraph runs. Real
converted models and real files throughout; no TF Serving binary runs here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from tensorflow.core.protobuf import meta_graph_pb2

from components.core.config import deep_merge
from components.core.errors import ServoptError, VerificationError
from components.core.gate import Thresholds, evaluate_gate, push_model, read_warmup_file
from components.core.gate.warmup import replay_warmup, warmup_logs
from components.core.model_io import read_serving_graph
from components.core.serving_session import ServingSession
from components.core.steps import OptimizeConfig, optimize_model, parse_steps
from components.core.tflite import tflite_file, verify_tflite
from components.core.tflite_session import (
    DEFAULT_SIGNATURE,
    TfLiteSession,
    TfLiteSessionError,
    read_signature_defs_metadata,
    with_signature_defs_metadata,
)
from components.core.verify import Reference, Tolerance
from tests.model_zoo import converter_tflite_bytes
from tests.test_gate_decision import NO_LIMITS
from tests.test_gate_server_profile import batch


@pytest.fixture(scope="module")
def two_signature_variant(two_signature_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two-signatures") / "variant"
    optimize_model(two_signature_model, out, parse_steps("freeze,tflite=float32"),
                   OptimizeConfig(num_examples=64))
    return out


@pytest.fixture(scope="module")
def demo_variant(demo_cnn_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "variant"
    optimize_model(demo_cnn_model, out, parse_steps("freeze,tflite=float32"),
                   OptimizeConfig(examples=demo_cnn_model.parent
                                  / f"{demo_cnn_model.name}-inputs.npz"))
    return out


def _without_metadata(variant: Path, source: Path, out: Path) -> Path:
    """The variant with the converter's own model.tflite (no signature_defs_metadata)."""
    shutil.copytree(variant, out)
    tflite_file(out).write_bytes(converter_tflite_bytes(source))
    return out


def _features(count: int = 5) -> np.ndarray:
    return np.random.default_rng(0).random((count, 16)).astype("f4")


# --- the metadata -----------------------------------------------------------------------

def test_model_tflite_carries_the_saved_models_signature_defs_as_tf_serving_reads_them(
        two_signature_variant):
    metadata = read_signature_defs_metadata(tflite_file(two_signature_variant).read_bytes())
    saved = read_serving_graph(two_signature_variant).signatures
    assert set(metadata) == {"serving_default", "regress"} == set(saved)
    for key, signature in metadata.items():
        assert signature == saved[key]  # keys, method names, tensor names, dtypes, shapes


def test_the_metadata_round_trips_and_is_never_cut_at_a_nul_byte(two_signature_variant):
    """signature_def_util.cc reads each value with AsString().c_str(): a NUL byte would
    cut it. A scalar shape serializes as one; the writer drops it instead."""
    content = tflite_file(two_signature_variant).read_bytes()
    scalar = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    scalar.inputs["x"].name = "x:0"
    scalar.inputs["x"].tensor_shape.SetInParent()  # shape [] -> b"\x1a\x00"
    assert b"\0" in scalar.SerializeToString()
    read = read_signature_defs_metadata(with_signature_defs_metadata(content, {"s": scalar}))
    assert read["s"].inputs["x"].name == "x:0"


# --- resolution rules (tflite_session.cc TfLiteSession::Create) -------------------------

def test_with_metadata_the_signatures_are_the_metadatas_with_names_fixed(
        two_signature_variant):
    session = TfLiteSession(tflite_file(two_signature_variant))
    assert not session.generated
    assert sorted(session.signatures) == ["regress", "serving_default"]
    assert session.signatures["regress"].method_name == "tensorflow/serving/predict"


def test_without_metadata_tf_serving_generates_serving_default_with_cut_tensor_names(
        seed_cnn_model, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(converter_tflite_bytes(seed_cnn_model))
    session = TfLiteSession(path)
    assert session.generated and list(session.signatures) == [DEFAULT_SIGNATURE]
    generated = session.signatures[DEFAULT_SIGNATURE]
    assert generated.method_name == "tensorflow/serving/predict"
    assert list(generated.inputs) == ["serving_default_image"]  # 'serving_default_image:0'
    assert all(":" not in key for key in generated.outputs)
    with pytest.raises(TfLiteSessionError, match="input size does not match signature"):
        session.run(DEFAULT_SIGNATURE, {"image": np.zeros((1, 28, 28, 1), "f4")})


def test_a_tensor_name_is_looked_up_as_given_then_cut_at_the_colon(two_signature_variant,
                                                                   tmp_path):
    """FixTfLiteTensorName: 'regress_features:0' finds a tensor named 'regress_features'
    (older converters dropped the ':0'); an unknown name fails the load."""
    from tensorflow.lite.python import schema_py_generated as schema

    from components.core.tflite_session import pack_model

    content = tflite_file(two_signature_variant).read_bytes()
    name = TfLiteSession(tflite_file(two_signature_variant)).signatures["regress"].inputs[
        "features"].name
    assert name.endswith(":0")
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    [tensor] = [t for t in model.subgraphs[0].tensors if t.name == name.encode()]
    tensor.name = name.split(":")[0].encode()  # the metadata still says 'name:0'
    legacy = tmp_path / "legacy.tflite"
    legacy.write_bytes(pack_model(model))
    session = TfLiteSession(legacy)
    assert session.signatures["regress"].inputs["features"].name == name.split(":")[0]
    assert session.run("regress", {"features": _features()})["value"].shape == (5, 1)
    signature = meta_graph_pb2.SignatureDef.FromString(
        session.signatures["regress"].SerializeToString())
    signature.inputs["features"].name = "nowhere:0"
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(with_signature_defs_metadata(content, {"regress": signature}))
    with pytest.raises(TfLiteSessionError,
                       match="Signature input features references an unknown tensor"):
        TfLiteSession(broken)


def test_only_predict_api_methods_are_served(two_signature_variant, tmp_path):
    content = tflite_file(two_signature_variant).read_bytes()
    signature = TfLiteSession(tflite_file(two_signature_variant)).signatures["regress"]
    other = meta_graph_pb2.SignatureDef.FromString(signature.SerializeToString())
    other.method_name = "tensorflow/serving/something_else"
    path = tmp_path / "method.tflite"
    path.write_bytes(with_signature_defs_metadata(content, {"regress": other}))
    session = TfLiteSession(path)
    with pytest.raises(TfLiteSessionError, match="Expected prediction signature method_name"):
        session.run("regress", {"features": _features()})
    with pytest.raises(TfLiteSessionError, match='Serving signature key "serving_default" '
                                                 'not found'):
        session.run("serving_default", {"features": _features()})


def test_a_signature_outside_the_primary_subgraph_is_refused(two_signature_model, tmp_path):
    """The converter's own output puts each signature in its own subgraph; TF Serving
    runs subgraph 0 only, so metadata naming the other's tensors fails the load."""
    import tensorflow as tf

    content = converter_tflite_bytes(two_signature_model)
    interpreter = tf.lite.Interpreter(model_content=content)
    signatures = {}
    for key in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)
        signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        for alias, detail in runner.get_input_details().items():
            signature.inputs[alias].name = detail["name"]
        for alias, detail in runner.get_output_details().items():
            signature.outputs[alias].name = detail["name"]
        signatures[key] = signature
    assert len(signatures) == 2
    path = tmp_path / "two-subgraphs.tflite"
    path.write_bytes(with_signature_defs_metadata(content, signatures))
    with pytest.raises(TfLiteSessionError, match="references an unknown tensor"):
        TfLiteSession(path)


# --- two signatures, each its own outputs ------------------------------------------------

def test_each_signature_answers_with_its_own_outputs_like_the_saved_model(
        two_signature_model, two_signature_variant):
    features = _features(7)
    session = TfLiteSession(tflite_file(two_signature_variant))
    with ServingSession(two_signature_model) as source:
        for key, output in (("serving_default", "probabilities"), ("regress", "value")):
            expected = source.run(key, {"features": features})
            served = session.run(key, {"features": features})
            assert list(served) == [output]
            np.testing.assert_allclose(served[output], expected[output], rtol=1e-4,
                                       atol=1e-5)
    assert served["value"].shape == (7, 1)


def test_signatures_computing_the_same_function_are_converted_once(seed_cnn_model,
                                                                  tmp_path):
    """Keras exports `serve` and `serving_default`, the same function over two
    placeholders. TF Serving runs the whole primary subgraph on every request, so they
    share one computation: both keys name the same tensors and answer like the model."""
    from tests.model_zoo import tflite_bytes

    path = tmp_path / "model.tflite"
    path.write_bytes(tflite_bytes(seed_cnn_model, int8=False))
    session = TfLiteSession(path)
    assert sorted(session.signatures) == ["serve", "serving_default"]
    assert len(session._inputs) == 1 and len(session._outputs) == 1  # one computation
    serve, default = session.signatures["serve"], session.signatures["serving_default"]
    assert [i.name for i in serve.inputs.values()] == [i.name for i in default.inputs.values()]
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    with ServingSession(seed_cnn_model) as source:
        for key in ("serve", "serving_default"):
            expected = source.run(key, {"image": images})
            served = session.run(key, {"image": images})
            assert set(served) == set(expected)
            for output in served:
                np.testing.assert_allclose(served[output], expected[output], rtol=1e-4,
                                           atol=1e-5)


# --- verification ------------------------------------------------------------------------

def test_a_model_tflite_without_metadata_fails_verification_with_the_reason(
        seed_cnn_model, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(converter_tflite_bytes(seed_cnn_model))
    reference = Reference(seed_cnn_model, num_examples=8, batch_size=8)
    result = verify_tflite(path, reference, Tolerance(), ["serving_default"])
    assert not result.passed
    assert "has no signature_defs_metadata" in result.failures[0]
    assert "generated 'serving_default' with keys inputs ['serving_default_image']" in (
        result.failures[0])


def test_verification_failure_stops_the_step_and_names_the_cause(two_signature_model,
                                                                 tmp_path, monkeypatch):
    """A conversion that loses its metadata publishes nothing."""
    import components.core.tflite as tflite

    monkeypatch.setattr(tflite, "with_signature_defs_metadata", lambda content, _: content)
    with pytest.raises(VerificationError, match="no signature_defs_metadata"):
        optimize_model(two_signature_model, tmp_path / "out",
                       parse_steps("freeze,tflite=float32"), OptimizeConfig(num_examples=16))
    assert not (tmp_path / "out").exists()


# --- warm-ups ----------------------------------------------------------------------------

def test_warmups_for_model_tflite_resolve_and_replay_through_the_tflite_session(
        two_signature_variant, tmp_path):
    examples = tmp_path / "eval.npz"
    np.savez(examples, features=_features(8))
    result = push_model(two_signature_variant, tmp_path / "serving", warmup_examples=examples,
                        warmup_signature="regress", warmup_batch_sizes=(1, 4),
                        serving_runtime="tflite")
    logs = read_warmup_file(Path(result.path) / "assets.extra" / "tf_serving_warmup_requests")
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == [
        "regress", "regress"]
    session = TfLiteSession(Path(result.path) / "model.tflite")
    assert set(logs[0].predict_log.request.inputs) == set(
        session.signatures["regress"].inputs)
    replay_warmup(Path(result.path), logs, "tflite")  # resolves on the pushed version


def test_a_warmup_that_tf_serving_would_fail_blocks_the_push(two_signature_variant,
                                                             two_signature_model, tmp_path):
    """Warm-ups written for the SavedModel's keys, on a model.tflite without metadata
    (TF Serving: only a generated serving_default, keys = tensor names): the load would
    fail, so nothing is pushed."""
    examples = tmp_path / "eval.npz"
    np.savez(examples, features=_features(4))
    logs = warmup_logs(two_signature_variant, examples, "serving_default",
                       runtime="tensorflow")
    broken = _without_metadata(two_signature_variant, two_signature_model, tmp_path / "v")
    with pytest.raises(ServoptError, match=r"warm-up request 1 of 1 fails on the tflite "
                                           r"runtime: .*input size does not match signature"):
        replay_warmup(broken, logs, "tflite")
    from components.core.gate.warmup import write_warmup_file

    write_warmup_file(logs, broken)  # carried in the version: replayed before the push
    with pytest.raises(ServoptError, match="TF Serving would fail to load the version"):
        push_model(broken, tmp_path / "serving", serving_runtime="tflite")
    assert not any((tmp_path / "serving").glob("[0-9]*"))
    push_model(broken, tmp_path / "serving", serving_runtime="tensorflow")  # pb path: fine


def test_warmups_for_a_signature_model_tflite_lacks_are_refused(demo_variant, tmp_path):
    examples = tmp_path / "eval.npz"
    np.savez(examples, image=np.zeros((2, 28, 28, 1), "f4"))
    with pytest.raises(ServoptError, match="no signature 'serving_examples' to warm up in "
                                           "model.tflite"):
        warmup_logs(demo_variant, examples, "serving_examples", runtime="tflite")


# --- signature parity in the gate --------------------------------------------------------

def _metrics(baseline: Path, variant: Path) -> dict:
    """Benchmark rows written by hand (the gate judges recorded measurements; what is
    tested here is the signature check, which reads the real model files)."""
    def row(name, path, runtime, flags, role="candidate"):
        return {"path": str(path), "role": role, "error": None, "size_bytes": 1_000_000,
                "runtime": {"runtime": runtime, "version": name, "settings": {},
                            "server_flags": flags, "servable": True},
                "batches": {"100": batch(10.0, role != "baseline")},
                "concurrency": [], "accuracy": None}
    return {"schema_version": 1, "baseline": "trainer", "settings": {},
            "machine": {"cpu_model": "test", "cores": 2, "tensorflow_version": "2.21.0",
                        "python_version": "3.11", "platform": "linux"}, "models": {
        "trainer": row("trainer", baseline, "tensorflow", [], role="baseline"),
        "variant@tflite": row("variant", variant, "tflite", ["--prefer_tflite_model=true"]),
        "variant@tensorflow": row("variant", variant, "tensorflow",
                                  ["--prefer_tflite_model=false"])}}


def _gate(metrics: dict, thresholds: dict, candidates: dict):
    """The gate with only the thresholds given (the default ones need measurements these
    hand-written rows do not have)."""
    return evaluate_gate(metrics, Thresholds.from_dict(deep_merge(NO_LIMITS, thresholds)),
                         candidates)


def test_the_gate_refuses_a_tflite_variant_lacking_a_baseline_signature(demo_cnn_model,
                                                                        demo_variant):
    decision = _gate(_metrics(demo_cnn_model, demo_variant),
                             {"server": {"prefer_tflite_model": True}},
                             {"variant": demo_variant})
    assert not decision.blessed
    [reason] = [r for r in decision.candidate("variant").blocked_by
                if r.startswith("signatures:")]
    assert "lacks the baseline's signature(s) ['serving_examples']" in reason
    assert "ParseExampleV2" in reason  # the converter's reason, recorded with the variant
    assert "TF Serving does not fall back to saved_model.pb" in reason


def test_required_signatures_lets_it_through_and_the_decision_names_what_it_serves(
        demo_cnn_model, demo_variant):
    decision = _gate(_metrics(demo_cnn_model, demo_variant),
                             {"server": {"prefer_tflite_model": True},
                              "required_signatures": ["serving_default"]},
                             {"variant": demo_variant})
    assert decision.blessed and decision.chosen == "variant"
    assert decision.signatures == ["serving_default"] and decision.runtime == "tflite"
    assert "  'variant' serves signatures: serving_default" in decision.summary_lines()


def test_served_from_saved_model_pb_it_serves_every_signature(demo_cnn_model, demo_variant):
    decision = _gate(_metrics(demo_cnn_model, demo_variant), {},
                             {"variant": demo_variant})
    assert decision.blessed
    assert decision.signatures == ["serving_default", "serving_examples"]


def test_the_gate_refuses_an_old_variant_without_metadata_with_a_clear_message(
        two_signature_model, two_signature_variant, tmp_path):
    old = _without_metadata(two_signature_variant, two_signature_model, tmp_path / "old")
    decision = _gate(_metrics(two_signature_model, old),
                             {"server": {"prefer_tflite_model": True},
                              "required_signatures": ["serving_default"]}, {"variant": old})
    assert not decision.blessed
    [reason] = [r for r in decision.candidate("variant").blocked_by
                if r.startswith("signatures:")]
    assert "has no signature_defs_metadata" in reason
    assert "create the TFLite variant again" in reason


@pytest.mark.parametrize("value, message", [
    ([], "must be a non-empty list"), ("", "must be a non-empty list"),
    ([1], "must be a non-empty list"), (["a", "a"], "lists a signature twice"),
    ({"a": 1}, "must be a non-empty list")])
def test_required_signatures_is_validated_at_load(value, message):
    with pytest.raises(ServoptError, match=f"t.yaml: 'required_signatures' {message}"):
        Thresholds.from_dict({"required_signatures": value}, source="t.yaml")
    assert Thresholds.from_dict({"required_signatures": "serving_default"}
                                ).required_signatures == ("serving_default",)
