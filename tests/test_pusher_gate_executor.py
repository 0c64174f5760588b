"""PusherGate's executor with hand-built artifacts: push, block, regression, fail-on-block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tfx.types import standard_artifacts

from components.artifacts import ServingBenchmarkResult
from components.core.gate import GateBlocked, versions
from components.pusher_gate import executor as gate_executor
from tests.test_gate_decision import benchmark, served_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def artifact(cls, uri: Path):
    instance = cls()
    instance.uri = str(uri)
    uri.mkdir(parents=True, exist_ok=True)
    return instance


@pytest.fixture
def run_gate(tmp_path, two_signature_model):
    """Runs the executor on a benchmark whose models are all real SavedModels."""
    metrics = benchmark()
    for entry in metrics["models"].values():
        entry["path"] = str(two_signature_model)
    bench = artifact(ServingBenchmarkResult, tmp_path / "benchmark")
    (Path(bench.uri) / "metrics.json").write_text(json.dumps(metrics))
    destination = tmp_path / "serving" / "digits"

    def run(thresholds: dict, served: dict | None = None, **properties):
        pushed = artifact(standard_artifacts.PushedModel, tmp_path / f"pushed{len(properties)}")
        blessing = artifact(standard_artifacts.ModelBlessing, tmp_path / "blessing")
        inputs = {"benchmark": [bench]}
        if served is not None:
            served_artifact = artifact(standard_artifacts.PushedModel, tmp_path / "served")
            served_artifact.set_int_custom_property("pushed", 1)
            served_artifact.set_string_custom_property("pushed_metrics", json.dumps(served))
            inputs["served_model"] = [served_artifact]
        gate_executor.Executor().Do(
            inputs, {"pushed_model": [pushed], "blessing": [blessing]},
            {"thresholds": json.dumps(thresholds), "push_destination": str(destination),
             **properties})
        decision = json.loads((Path(blessing.uri) / "decision.json").read_text())
        return pushed, blessing, decision, destination

    return run


def test_a_passing_candidate_is_pushed_as_a_new_version(run_gate):
    pushed, blessing, decision, destination = run_gate({"vs_baseline": {
        "min_speedup_p50": 1.5}})
    assert pushed.get_int_custom_property("pushed") == 1
    version = int(pushed.get_string_custom_property("pushed_version"))
    assert versions(destination) == [version]
    assert pushed.get_string_custom_property("pushed_destination") == str(
        destination / str(version))
    assert (destination / str(version) / "saved_model.pb").is_file()
    assert blessing.get_int_custom_property("blessed") == 1
    assert decision["chosen"] == "quantized"  # lowest p99 at batch 100
    assert json.loads(pushed.get_string_custom_property("pushed_metrics"))["size_bytes"] > 0
    assert (Path(blessing.uri) / "BLESSED").exists()


def test_impossible_thresholds_push_nothing_and_say_why(run_gate):
    from components.core.gate import Thresholds

    impossible = Thresholds.from_yaml(CONFIGS / "thresholds_impossible.yaml").to_dict()
    pushed, blessing, decision, destination = run_gate(impossible)
    assert pushed.get_int_custom_property("pushed") == 0
    assert blessing.get_int_custom_property("blessed") == 0
    assert not destination.exists() or versions(destination) == []
    failed = [c for c in decision["checks"] if not c["passed"]]
    assert failed and all(c["threshold"] == "value.max_p99_ms" for c in failed)
    assert all(c["measured"] is not None and c["limit"] == 0.001 for c in failed)


def test_a_candidate_slower_than_the_served_model_is_blocked(run_gate):
    served = served_model()
    served["batches"]["100"]["p99_ms"] = 5.0  # served runs at 5 ms; candidates need ~11.5
    pushed, _, decision, _ = run_gate({"vs_served": {"max_p99_regression_pct": 20}},
                                      served=served)
    assert pushed.get_int_custom_property("pushed") == 0
    regressions = [c for c in decision["checks"]
                   if c["threshold"] == "vs_served.max_p99_regression_pct" and not c["passed"]]
    assert {c["candidate"] for c in regressions} >= {"optimized", "quantized"}


def test_fail_on_block_fails_the_run_after_recording_the_decision(run_gate):
    with pytest.raises(GateBlocked):
        run_gate({"value": {"max_p99_ms": 0.001}}, fail_on_block=1)


def test_the_chosen_configuration_is_pushed_with_the_version_and_its_command(
        tmp_path, two_signature_model):
    """A searched configuration (server-side batching) wins: the pushed version carries
    its batching_params.pbtxt, and decision.json and the artifact record the pair and the
    whole server command for the destination."""
    from components.core.batching import BATCHING_PARAMS_FILE
    from components.core.requirements import read_requirements
    from tests.test_gate_pairs import BATCHED_LABEL
    from tests.test_gate_pairs import metrics as searched_metrics

    metrics = searched_metrics()
    metrics["models"] = {key: {**entry, "path": str(two_signature_model)}
                         for key, entry in metrics["models"].items()
                         if not key.startswith("Quantizer")}
    bench = artifact(ServingBenchmarkResult, tmp_path / "benchmark")
    (Path(bench.uri) / "metrics.json").write_text(json.dumps(metrics))
    pushed = artifact(standard_artifacts.PushedModel, tmp_path / "pushed")
    blessing = artifact(standard_artifacts.ModelBlessing, tmp_path / "blessing")
    destination = tmp_path / "serving" / "digits"
    gate_executor.Executor().Do(
        {"benchmark": [bench]}, {"pushed_model": [pushed], "blessing": [blessing]},
        {"thresholds": json.dumps({"objective": ["p50_ms"], "vs_baseline": {
            "min_speedup_p50": 1.0}}), "push_destination": str(destination)})
    decision = json.loads((Path(blessing.uri) / "decision.json").read_text())
    assert (decision["chosen"], decision["label"]) == ("optimized", BATCHED_LABEL)
    assert decision["row"] == f"optimized@tensorflow:{BATCHED_LABEL}"
    assert decision["server_command"][:5] == [
        "tensorflow_model_server", "--port=8500", "--rest_api_port=8501",
        "--model_name=digits", f"--model_base_path={destination}"]
    assert pushed.get_string_custom_property("pushed_configuration") == BATCHED_LABEL
    assert json.loads(pushed.get_string_custom_property("pushed_metrics"))["runtime"][
        "label"] == BATCHED_LABEL
    version_dir = Path(pushed.get_string_custom_property("pushed_destination"))
    assert "max_batch_size { value: 32 }" in (version_dir / BATCHING_PARAMS_FILE).read_text()
    assert list(read_requirements(version_dir).server_command) == decision["server_command"]

    # The same model served in another configuration is pushed again; in this one, not.
    for configuration, pushes in (("default", 1), (BATCHED_LABEL, 0)):
        served = artifact(standard_artifacts.PushedModel, tmp_path / f"served-{pushes}")
        for key, value in (("pushed_model_uri", str(two_signature_model)),
                           ("pushed_version", "1"), ("pushed_configuration", configuration),
                           ("pushed_metrics", json.dumps(metrics["models"]["trainer"]))):
            served.set_string_custom_property(key, value)
        again = artifact(standard_artifacts.PushedModel, tmp_path / f"again-{pushes}")
        gate_executor.Executor().Do(
            {"benchmark": [bench], "served_model": [served]},
            {"pushed_model": [again], "blessing": [blessing]},
            {"thresholds": json.dumps({"objective": ["p50_ms"], "vs_served": {
                "max_p99_regression_pct": None, "max_accuracy_regression": None}}),
             "push_destination": str(destination)})
        assert again.get_int_custom_property("pushed") == pushes
