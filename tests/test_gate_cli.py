"""`servopt gate` and `servopt push`: the PusherGate's decision and push, for CI/CD without
TFX. Real SavedModels, real files; the metrics are hand-built (no measuring)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.cli import main
from components.core.benchmark.schema import ModelResult
from components.core.gate import versions
from tests.test_gate_decision import benchmark, served_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def servopt(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def metrics_json(tmp_path, two_signature_model) -> Path:
    """metrics.json whose models are all a real SavedModel (the safety scan reads it)."""
    metrics = benchmark()
    for entry in metrics["models"].values():
        entry["path"] = str(two_signature_model)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    return path


def test_a_passing_candidate_exits_0_and_names_the_choice(metrics_json):
    result = servopt("gate", metrics_json, "--thresholds", CONFIGS / "thresholds.yaml")
    assert result.exit_code == 0, result.output
    assert "quantized" in result.output  # lowest p99 at batch 100


def test_without_thresholds_the_packaged_defaults_judge_from_any_directory(
        metrics_json, tmp_path, monkeypatch):
    """The packaged defaults are components/configs/thresholds.yaml (= configs/, see
    test_packaged_defaults); the models' paths in metrics.json are absolute."""
    given = servopt("gate", metrics_json, "--thresholds", CONFIGS / "thresholds.yaml",
                    "--json")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    default = servopt("gate", metrics_json, "--json")
    assert default.exit_code == given.exit_code == 0, default.output
    assert json.loads(default.stdout) == json.loads(given.stdout)
    assert "safety" not in " ".join(c["threshold"] for c in json.loads(default.stdout)["checks"]
                                    if not c["passed"])


def test_blocked_exits_1_and_json_says_why(metrics_json):
    result = servopt("gate", metrics_json, "--thresholds",
                     CONFIGS / "thresholds_impossible.yaml", "--json")
    assert result.exit_code == 1
    decision = json.loads(result.stdout)
    assert decision["blessed"] is False and decision["chosen"] is None
    failed = {c["threshold"] for c in decision["checks"] if not c["passed"]}
    assert failed == {"value.max_p99_ms"}


def test_the_served_models_metrics_apply_the_vs_served_thresholds(metrics_json, tmp_path):
    served = served_model()
    served["batches"]["100"]["p99_ms"] = 5.0  # candidates need ~11.5 ms: a regression
    served_path = tmp_path / "served.json"
    served_path.write_text(json.dumps(served))
    thresholds = tmp_path / "t.yaml"
    thresholds.write_text("vs_served: {max_p99_regression_pct: 20}\n")
    result = servopt("gate", metrics_json, "--thresholds", thresholds, "--served-metrics",
                     served_path, "--json")
    decision = json.loads(result.stdout)
    regressions = {c["candidate"] for c in decision["checks"]
                   if c["threshold"] == "vs_served.max_p99_regression_pct" and not c["passed"]}
    assert {"optimized", "quantized"} <= regressions


def test_json_carries_the_chosen_models_metrics_for_the_next_gate(metrics_json, tmp_path):
    result = servopt("gate", metrics_json, "--thresholds", CONFIGS / "thresholds.yaml",
                     "--json")
    decision = json.loads(result.stdout)
    recorded = json.loads(metrics_json.read_text())["models"][decision["chosen"]]
    assert decision["chosen_metrics"] == ModelResult.from_dict(recorded).to_dict()  # typed
    (tmp_path / "served.json").write_text(json.dumps(decision["chosen_metrics"]))
    again = servopt("gate", metrics_json, "--thresholds", CONFIGS / "thresholds.yaml",
                    "--served-metrics", tmp_path / "served.json")
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("make_args, message", [
    (lambda m, t: ["gate", t / "missing.json", "--thresholds", CONFIGS / "thresholds.yaml"],
     "missing.json: no such metrics file"),
    (lambda m, t: ["gate", m, "--thresholds", t / "missing.yaml"],
     "missing.yaml: no such thresholds file"),
    (lambda m, t: ["gate", m, "--thresholds", CONFIGS / "thresholds.yaml",
                   "--served-metrics", m], "expected one model's metrics"),
])
def test_bad_input_exits_2_with_one_line(metrics_json, tmp_path, make_args, message):
    result = servopt(*make_args(metrics_json, tmp_path))
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("servopt: error: ") and message in line


def test_push_publishes_a_new_version_and_keeps_the_last_n(two_signature_model, tmp_path):
    destination = tmp_path / "serving" / "model"
    first = servopt("push", two_signature_model, destination, "--json")
    assert first.exit_code == 0, first.output
    pushed = json.loads(first.stdout)
    assert versions(destination) == [pushed["version"]]
    assert (destination / str(pushed["version"]) / "saved_model.pb").is_file()
    second = servopt("push", two_signature_model, destination, "--keep-last", "1")
    assert second.exit_code == 0 and "as version" in second.stdout
    [kept] = versions(destination)
    assert kept > pushed["version"]


def test_push_of_something_that_is_not_a_model_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    result = servopt("push", tmp_path / "empty", tmp_path / "serving")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "no SavedModel" in line
    assert not (tmp_path / "serving").exists() or versions(tmp_path / "serving") == []


def test_the_report_highlights_the_pair_the_gate_chose(metrics_json, tmp_path):
    report = tmp_path / "report.html"
    result = servopt("gate", metrics_json, "--thresholds", CONFIGS / "thresholds.yaml",
                     "--report", report)
    assert result.exit_code == 0, result.output
    page = report.read_text()
    assert "★ the pair the gate chose: <b>quantized</b>" in page
    blocked = servopt("gate", metrics_json, "--thresholds",
                      CONFIGS / "thresholds_impossible.yaml", "--report", report)
    assert blocked.exit_code == 1
    assert "the gate chose" not in report.read_text()
