"""metrics.json and the HTML report, from a result built by hand (no measuring)."""

from __future__ import annotations

import json
import math

import pytest

from components.core.benchmark.config import BenchmarkConfig
from components.core.benchmark.report import render_report, write_report
from components.core.benchmark.schema import (
    AccuracyResult,
    BatchResult,
    BenchmarkResult,
    ConcurrencyResult,
    MachineInfo,
    ModelResult,
)
from components.core.errors import ServoptError


def _batch(p50: float, stable: bool = True, **extra) -> BatchResult:
    return BatchResult(p50_ms=p50, p90_ms=p50 * 1.2, p95_ms=p50 * 1.3, p99_ms=p50 * 1.5,
                       mean_ms=p50 * 1.05, std_ms=p50 / 10, min_ms=p50 * 0.9, max_ms=p50 * 2,
                       throughput=1000 / p50, stable=stable, windows=4, requests=200,
                       achieved_flops_per_s=None, **extra)


@pytest.fixture
def result() -> BenchmarkResult:
    settings = BenchmarkConfig(intra_op_threads=2, inter_op_threads=2)
    machine = MachineInfo(cpu_model="Test CPU @ 3GHz", cores=2, tensorflow_version="2.21.0",
                          python_version="3.11.7", platform="Linux-test")
    base = ModelResult(path="/m/base", role="baseline", size_bytes=7_800_000, load_time_s=0.3,
                       first_request_ms=110.0, peak_memory_bytes=850_000_000,
                       flops_per_example=16_792_828,
                       batches={1: _batch(1.0), 100: _batch(22.0)},
                       concurrency=[ConcurrencyResult(1, 100, 4500.0, 22.0, 30.0),
                                    ConcurrencyResult(2, 100, 5200.0, 38.0, 51.0)],
                       accuracy=AccuracyResult(0.97, None, None, 300))
    fast = ModelResult(path="/m/<fast>", role="candidate", size_bytes=3_800_000,
                       load_time_s=0.1, first_request_ms=90.0, peak_memory_bytes=800_000_000,
                       flops_per_example=None,
                       batches={1: _batch(0.9, speedup_p50=1.1, speedup_p99=1.0),
                                100: _batch(11.0, stable=False, speedup_p50=2.0,
                                            speedup_p99=1.9, speedup_p50_interval=[1.9, 2.1],
                                            confidence=0.95, other_cpu=0.3,
                                            busy_windows=1)},
                       accuracy=AccuracyResult(0.965, 0.99, math.inf, 300))
    broken = ModelResult(path="/m/broken", role="candidate", size_bytes=10,
                         error="/m/broken/saved_model.pb: not a valid SavedModel <&>")
    return BenchmarkResult(machine, settings, "base",
                           {"base": base, "<fast>": fast, "broken": broken})


def test_metrics_json_has_exactly_the_documented_schema(result, tmp_path):
    data = json.loads(result.write_json(tmp_path / "metrics.json").read_text())
    assert set(data) == {"schema_version", "machine", "settings", "baseline", "models",
                         "search", "budget", "step_errors"}
    assert data["budget"] is None and data["step_errors"] == {}  # built by hand: no run
    assert data["search"] is None  # no configuration search in this run
    assert set(data["machine"]) == {"cpu_model", "cores", "tensorflow_version",
                                    "python_version", "platform", "cpu_features"}
    assert set(data["settings"]) >= {"backend", "batch_sizes", "concurrency",
                                     "warmup_requests", "window_requests", "window_seconds",
                                     "rewarm_requests", "max_windows", "stability_percent",
                                     "intra_op_threads", "inter_op_threads", "signature",
                                     "tflite_pools", "tflite_interpreters_per_pool",
                                     "allowed_ops"}
    assert data["settings"] == BenchmarkConfig.from_dict(data["settings"]).to_dict()
    assert "examples" not in data["settings"]  # a run's input, not a setting
    model_keys = {"path", "role", "error", "runtime", "size_bytes", "load_time_s",
                  "first_request_ms", "peak_memory_bytes", "flops_per_example", "batches",
                  "concurrency",
                  "accuracy", "step_errors"}
    batch_keys = {"p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "min_ms",
                  "max_ms", "throughput", "stable", "windows", "requests",
                  "achieved_flops_per_s", "other_cpu", "busy_windows"}
    for model in data["models"].values():
        assert set(model) == model_keys
    assert set(data["models"]["base"]["batches"]["100"]) == batch_keys
    assert set(data["models"]["<fast>"]["batches"]["100"]) == batch_keys | {
        "speedup_p50", "speedup_p99", "speedup_stable", "speedup_p50_interval",
        "speedup_p99_interval", "throughput_ratio", "throughput_ratio_interval", "confidence",
        # against the served version, where it was measured in the same rounds (else null)
        "served_speedup_p50", "served_speedup_p50_interval", "served_speedup_p99",
        "served_speedup_p99_interval"}
    assert data["models"]["base"]["concurrency"][1] == {
        "concurrency": 2, "batch_size": 100, "throughput": 5200.0, "p50_ms": 38.0,
        "p99_ms": 51.0}
    assert data["models"]["<fast>"]["accuracy"]["max_abs_diff"] is None  # inf: not JSON
    assert list(data["models"]) == ["base", "<fast>", "broken"]


def test_metrics_json_reads_back_into_the_same_result(result, tmp_path):
    path = result.write_json(tmp_path / "metrics.json")
    again = BenchmarkResult.read_json(path)
    assert again.to_dict() == result.to_dict()
    assert again.models["<fast>"].batches[100].speedup_p50 == 2.0


def test_another_schema_version_is_refused_with_what_to_do(result):
    data = result.to_dict() | {"schema_version": 2}
    with pytest.raises(ServoptError, match="schema_version 2 is not supported"):
        BenchmarkResult.from_dict(data)


def test_the_report_shows_machine_settings_tables_and_figures(result):
    page = render_report(result)
    for text in ("Test CPU @ 3GHz", "2.21.0", "2 / 2", "Batch size 1<", "Batch size 100<",
                 "2.00×", "[1.90, 2.10]", "others 30% CPU", "unstable", "-0.50 pt",
                 "99.00%"):
        assert text in page, text
    # One figure per question, before the tables: which pair is fastest, latency against
    # throughput, accuracy against speed (no search ran, so no search figure).
    assert page.count("data:image/png;base64,") == 3
    headings = ["Which pair is fastest", "Latency against throughput",
                "Accuracy against speed", "Models", "Batch size 1<"]
    assert sorted(headings, key=page.index) == headings
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


def test_the_report_escapes_names_and_errors(result):
    page = render_report(result)
    assert "&lt;fast&gt;" in page and "<fast>" not in page
    assert "not a valid SavedModel &lt;&amp;&gt;" in page


def test_an_unwritable_report_path_is_a_one_line_error(result, tmp_path):
    with pytest.raises(ServoptError, match="cannot write the report"):
        write_report(result, tmp_path / "missing-dir" / "report.html")
