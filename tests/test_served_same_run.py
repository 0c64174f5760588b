"""The version served now, measured in the same run: one more row (`served`) in the same
interleaved rounds as the candidates, so the gate's vs_served comparison is paired, with
an interval, like vs_baseline; the figures recorded at its push (another run) are used
only when it could not be measured, and the decision says so."""

from __future__ import annotations

import copy

import pytest

from components.core.benchmark.config import BenchmarkConfig, ModelSpec
from components.core.benchmark.measure import WindowSample
from components.core.benchmark.run import fill_batches
from components.core.benchmark.scheduler import Series
from components.core.benchmark.schema import SERVED, BenchmarkResult, ModelResult
from components.core.errors import ServoptError
from tests.test_gate_decision import batch, benchmark, gate, model, served_model


@pytest.fixture
def candidates(two_signature_model):
    """The candidates of test_gate_decision's benchmark (the safety scan reads a real
    SavedModel)."""
    return {"optimized": two_signature_model, "quantized": two_signature_model}


def series(p99s: list[float]) -> Series:
    """One window per round; each window's latencies are all its p99 (p50 = p99)."""
    return Series(1, 10.0, [WindowSample([value] * 20, 1.0, 20) for value in p99s])


def test_a_candidates_comparison_with_the_served_row_is_paired_round_by_round():
    # Round by round the candidate takes 0.8x the served row's time, though the machine
    # drifts 3x over the rounds: the paired ratio is 1.25 in every round.
    drift = [1.0, 1.5, 2.0, 3.0, 2.5, 1.2, 1.1, 2.2]
    measured = {"base": {1: series([10.0 * d for d in drift])},
                SERVED: {1: series([5.0 * d for d in drift])},
                "cand": {1: series([4.0 * d for d in drift])}}
    results = {"base": ModelResult("b", "baseline"), SERVED: ModelResult("s", SERVED),
               "cand": ModelResult("c", "candidate")}
    fill_batches(results, measured, "base", 0.95, served=SERVED)
    cand = results["cand"].at(1)
    assert cand.served_speedup_p99 == pytest.approx(1.25)
    assert cand.served_speedup_p99_interval == pytest.approx([1.25, 1.25])
    assert cand.served_speedup_p50 == pytest.approx(1.25)
    assert cand.speedup_p99 == pytest.approx(2.5)  # and over the baseline, as before
    assert results[SERVED].at(1).served_speedup_p99 is None  # not compared with itself
    assert results[SERVED].at(1).speedup_p99 == pytest.approx(2.0)


def test_the_served_row_is_recorded_but_never_a_candidate():
    metrics = benchmark()
    metrics["models"][SERVED] = model(SERVED, 10.7, 0.95, 1.0,
                                      {"100": batch(11.0, 11.0, 9100.0, speedup_p99=2.2)})
    result = BenchmarkResult.from_dict(metrics)
    assert result.served == SERVED
    assert SERVED not in result.paths() and SERVED not in result.candidates
    assert result.models[SERVED].to_dict()["batches"]["100"]["speedup_p99"] == 2.2


def _with_served(metrics: dict, p99: float, interval: list[float] | None,
                 error: str | None = None) -> dict:
    """`metrics` whose candidates were measured with the served row: each candidate's
    paired p99 speedup over it at batch 100 (served / candidate)."""
    metrics = copy.deepcopy(metrics)
    served = model(SERVED, 10.7, 0.95, 1.0, {} if error else {
        "100": batch(11.0, 11.0, 9100.0, speedup_p99=2.0)})
    served["error"] = error
    metrics["models"][SERVED] = served
    for name in ("optimized", "quantized"):
        entry = metrics["models"][name]["batches"]["100"]
        entry["served_speedup_p99"] = p99
        entry["served_speedup_p99_interval"] = interval
    return metrics


def check(decision, threshold, candidate):
    [found] = [c for c in decision.checks
               if c.threshold == threshold and c.candidate == candidate]
    return found


@pytest.mark.parametrize("speedup, interval, outcome, passed", [
    (1.0, [0.98, 1.02], "not regressed", True),  # +-2% around the served p99
    (0.8, [0.78, 0.82], "regressed", False),  # 25% slower than what is served
    (0.93, [0.85, 1.0], "inconclusive", False),  # could be 0% or 18% slower
])
def test_the_p99_regression_vs_served_is_decided_on_the_paired_interval(
        candidates, speedup, interval, outcome, passed):
    metrics = _with_served(benchmark(), speedup, interval)
    # The recorded figures (another run) would say otherwise: they are not used.
    recorded = served_model()
    recorded["batches"]["100"]["p99_ms"] = 100.0
    decision = gate(candidates, {"vs_served": {"max_p99_regression_pct": 10}},
                    metrics=metrics, served=recorded)
    found = check(decision, "vs_served.max_p99_regression_pct", "optimized")
    assert (found.outcome, found.passed) == (outcome, passed)
    assert found.interval == interval
    assert "measured in this run, in the same interleaved rounds" in found.reason
    assert found.measured == pytest.approx(100 * (1 / speedup - 1))
    [note] = [c for c in decision.checks if c.threshold == "vs_served.measured"]
    assert note.measured is True and note.kind == "note" and note.passed
    assert any("vs_served is paired" in line for line in decision.summary_lines())


@pytest.mark.parametrize("interval, stays", [
    ([1.02, 1.4], None),  # faster with confidence: it replaces the served version
    ([0.98, 1.02], "not faster than the served version with confidence"),  # a near-tie
])
def test_the_served_version_stays_unless_the_chosen_pair_is_faster_with_confidence(
        candidates, interval, stays):
    """A rerun of an unchanged pipeline measures the same models again: the pair noise
    ranks first must not replace the served version unless its paired interval says it is
    faster (the profile ranks by weighted p99: the p99 interval decides)."""
    metrics = _with_served(benchmark(), sum(interval) / 2, interval)
    decision = gate(candidates, {"vs_served": {"max_p99_regression_pct": 10}},
                    metrics=metrics)
    assert decision.blessed  # every check passed either way
    if stays is None:
        assert decision.served_stays is None
        assert not any("nothing new is pushed" in line for line in decision.summary_lines())
    else:
        assert stays in decision.served_stays
        assert "batch 100: [0.98, 1.02]" in decision.served_stays
        assert any(line.startswith("  nothing new is pushed: '")
                   for line in decision.summary_lines())


@pytest.mark.parametrize("interval, exit_code", [([1.02, 1.4], 0), ([0.98, 1.02], 3)])
def test_servopt_gate_exits_3_when_the_served_version_stays(two_signature_model, tmp_path,
                                                            interval, exit_code):
    """`servopt gate ... && servopt push ...` must not roll out a version on noise."""
    import json

    import yaml
    from click.testing import CliRunner

    from components.cli import main
    from tests.test_gate_decision import NO_LIMITS

    metrics = _with_served(benchmark(), sum(interval) / 2, interval)
    for entry in metrics["models"].values():
        entry["path"] = str(two_signature_model)
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    thresholds = {**NO_LIMITS, "vs_served": {**NO_LIMITS["vs_served"],
                                             "max_p99_regression_pct": 10}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(thresholds))
    result = CliRunner().invoke(main, ["gate", str(tmp_path / "metrics.json"),
                                       "--thresholds", str(tmp_path / "t.yaml")])
    assert result.exit_code == exit_code, result.output
    assert ("nothing new is pushed" in result.output) == (exit_code == 3)


def test_when_every_candidate_is_slower_than_the_served_version_the_reason_says_it_stays(
        candidates):
    metrics = _with_served(benchmark(), 0.8, [0.78, 0.82])  # each 25% slower
    decision = gate(candidates, {"vs_served": {"max_p99_regression_pct": 10}},
                    metrics=metrics)
    assert not decision.blessed
    assert decision.reason.endswith("(vs_served, measured in this run): the served "
                                    "version stays")
    # Not where a candidate is blocked for another reason only.
    metrics = _with_served(benchmark(), 1.0, [0.98, 1.02])
    blocked = gate(candidates, {"value": {"max_p99_ms": 0.001}}, metrics=metrics)
    assert not blocked.blessed and "served version stays" not in blocked.reason

def test_without_paired_figures_the_chosen_pair_is_not_held_back(candidates):
    decision = gate(candidates, {"vs_served": {"max_p99_regression_pct": 10}},
                    served=served_model())  # recorded figures only: nothing paired
    assert decision.blessed and decision.served_stays is None

def test_inconclusive_follows_the_inconclusive_policy(candidates):
    metrics = _with_served(benchmark(), 0.93, [0.85, 1.0])
    decision = gate(candidates, {"vs_served": {"max_p99_regression_pct": 10},
                                 "inconclusive": "allow"}, metrics=metrics)
    assert check(decision, "vs_served.max_p99_regression_pct", "optimized").passed


def test_a_served_version_that_could_not_be_measured_falls_back_and_says_so(candidates):
    metrics = _with_served(benchmark(), 1.0, [0.98, 1.02],
                           error="TF Serving cannot load 'served': Loading servable: "
                                 "{name: served version: 1} failed: NOT_FOUND")
    for name in ("optimized", "quantized"):  # measured without it
        metrics["models"][name]["batches"]["100"]["served_speedup_p99"] = None
    recorded = served_model()
    recorded["batches"]["100"]["p99_ms"] = 8.0
    decision = gate(candidates, {"vs_served": {"max_p99_regression_pct": 10}},
                    metrics=metrics, served=recorded)
    found = check(decision, "vs_served.max_p99_regression_pct", "quantized")
    assert not found.passed and found.outcome is None  # the cross-run comparison
    assert found.reason.startswith("p99 latency at batch 100 vs the served model (8 -> 11.5")
    [note] = [c for c in decision.checks if c.threshold == "vs_served.measured"]
    assert note.measured is False
    assert "could not be measured in this run (TF Serving cannot load" in note.reason
    assert "recorded at its push, from another run" in note.reason


def test_without_a_served_row_the_recorded_figures_are_used_and_the_decision_says_so(
        candidates):
    decision = gate(candidates, {"vs_served": {"max_p99_regression_pct": 10}},
                    served=served_model())
    [note] = [c for c in decision.checks if c.threshold == "vs_served.measured"]
    assert "was not measured in this run" in note.reason


def test_a_model_named_served_is_refused_when_the_served_version_is_given(seed_cnn_model):
    from components.core.benchmark.run import BenchmarkSession

    with pytest.raises(ServoptError, match="a model is named 'served'"):
        BenchmarkSession([ModelSpec("base", seed_cnn_model), ModelSpec(SERVED, seed_cnn_model)],
                         BenchmarkConfig(batch_sizes=(1,)), served=seed_cnn_model)


@pytest.mark.e2e
def test_the_served_version_is_measured_in_the_same_rounds(seed_cnn_model, tmp_path):
    """Real models, real workers: the served version (here a copy of the baseline, pushed
    with a configuration) is the row `served`, on the configuration it was pushed with;
    every candidate carries its paired comparison with it, and the gate reads it."""
    import shutil

    from components.core.benchmark.run import run_benchmark
    from components.core.gate.push import push_model
    from components.core.serving_config import ServingConfig

    pushed = ServingConfig(intra_op_threads=1, inter_op_threads=1).with_changes(
        intra_op_threads=1)
    destination = tmp_path / "serving"
    result = push_model(seed_cnn_model, destination, configuration=pushed.to_dict())
    candidate = tmp_path / "candidate"
    shutil.copytree(seed_cnn_model, candidate)
    config = BenchmarkConfig(batch_sizes=(1,), concurrency=(), warmup_requests=2,
                             window_seconds=0.2, max_windows=6, search_budget_s=0)
    metrics = run_benchmark([ModelSpec("base", seed_cnn_model),
                             ModelSpec("cand", candidate)], config, served=result.path)
    served = metrics.models[SERVED]
    assert served.role == SERVED and served.error is None, served.error
    assert served.runtime.settings["intra_op_threads"] == 1  # as it was pushed
    assert served.runtime.label == "intra_op=1"
    cand = metrics.models["cand"].at(1)
    low, high = cand.served_speedup_p99_interval
    assert low is not None and low <= cand.served_speedup_p99 <= high
    assert cand.windows == served.at(1).windows  # the same rounds
    assert SERVED not in metrics.paths()
