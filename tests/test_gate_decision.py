"""The gate's decision: each threshold passes or blocks with the measured value and the
limit in its reason, the objective picks among the candidates that pass, and nothing is
pushed when none does."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from rich.console import Console

from components.core.benchmark.schema import BenchmarkResult
from components.core.config import deep_merge
from components.core.errors import ServoptError
from components.core.gate import (
    GateBlocked,
    GateDecision,
    Thresholds,
    decision_table,
    evaluate_gate,
    load_metrics,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def batch(p50: float, p99: float, throughput: float, stable: bool = True, **extra) -> dict:
    """A candidate's speedups get a 95% interval of +-3% unless `extra` gives one."""
    intervals = {f"{key}_interval": [round(extra[key] * 0.97, 4), round(extra[key] * 1.03, 4)]
                 for key in ("speedup_p50", "speedup_p99") if key in extra}
    if intervals:
        intervals["confidence"] = 0.95
    return {"p50_ms": p50, "p90_ms": p50 * 1.05, "p95_ms": p50 * 1.08, "p99_ms": p99,
            "mean_ms": p50, "std_ms": p50 * 0.02, "min_ms": p50 * 0.9, "max_ms": p99 * 1.2,
            "throughput": throughput, "stable": stable, "windows": 8, "requests": 300,
            **intervals, **extra}


def model(role: str, size_mb: float, accuracy: float | None, top1: float | None,
          batches: dict) -> dict:
    return {"path": f"/artifacts/{role}", "role": role, "error": None,
            "size_bytes": int(size_mb * 1e6), "load_time_s": 0.4, "first_request_ms": 25.0,
            "peak_memory_bytes": 300_000_000, "flops_per_example": 12_000_000,
            "batches": batches, "concurrency": [],
            "accuracy": {"accuracy": accuracy, "top1_agreement": top1,
                         "max_abs_diff": 1e-3, "num_examples": 256}}


def benchmark() -> dict:
    """A benchmark of the Trainer's model and two candidates, as metrics.json holds it."""
    return {
        "schema_version": 1,
        "machine": {"cpu_model": "test", "cores": 2, "tensorflow_version": "2.21.0",
                    "python_version": "3.11", "platform": "linux"},
        "settings": {"batch_sizes": [1, 100]},
        "baseline": "trainer",
        "models": {
            "trainer": model("baseline", 21.4, 0.95, None, {
                "1": batch(1.06, 1.4, 940.0), "100": batch(22.3, 25.0, 4480.0)}),
            "optimized": model("candidate", 10.7, 0.95, 1.0, {
                "1": batch(1.02, 1.3, 980.0, speedup_p50=1.04, speedup_p99=1.08),
                "100": batch(11.1, 12.0, 9000.0, speedup_p50=2.0, speedup_p99=2.08)}),
            "quantized": model("candidate", 3.0, 0.94, 0.99, {
                "1": batch(1.0, 1.25, 1000.0, speedup_p50=1.06, speedup_p99=1.12),
                "100": batch(11.0, 11.5, 9100.0, speedup_p50=2.03, speedup_p99=2.17)}),
        },
    }


def served_model() -> dict:
    """The served model's metrics, as recorded when it was pushed."""
    return model("candidate", 10.7, 0.95, 1.0, {"100": batch(11.0, 11.0, 9100.0)})


@pytest.fixture
def candidates(two_signature_model) -> dict[str, Path]:
    """Candidate names -> model directories (the safety scan reads a real SavedModel)."""
    return {"optimized": two_signature_model, "quantized": two_signature_model}


# Every threshold off (null), so each test states the ones it checks; Thresholds()
# holds the packaged defaults.
NO_LIMITS = {group: {key: None for key in values} for group, values in
             Thresholds().to_dict().items() if group in ("value", "vs_baseline", "vs_served")}


def gate(candidates, thresholds=None, metrics=None, **kwargs) -> GateDecision:
    return evaluate_gate(metrics or benchmark(),
                         Thresholds.from_dict(deep_merge(NO_LIMITS, thresholds or {})),
                         candidates, **kwargs)


def check(decision: GateDecision, threshold: str, candidate: str):
    [found] = [c for c in decision.checks
               if c.threshold == threshold and c.candidate == candidate]
    return found


# Each threshold kind: the candidate 'quantized', a limit it meets, a limit it misses,
# and the reason when it misses (measured value and limit both in it).
THRESHOLD_CASES = [
    ("value", "max_p50_ms", 12, 10, "p50 latency at batch 100: 11 ms > max 10 ms"),
    ("value", "max_p99_ms", 12, 10, "p99 latency at batch 100: 11.5 ms > max 10 ms"),
    ("value", "min_throughput", 9000, 12000,
     "throughput at batch 100: 9100 examples/s < min 12000 examples/s"),
    ("value", "max_size_mb", 250, 2.5, "size: 3 MB > max 2.5 MB"),
    ("value", "min_accuracy", 0.9, 0.945, "accuracy: 0.94 < min 0.945"),
    ("vs_baseline", "max_accuracy_drop", 0.02, 0.005,
     "accuracy drop vs baseline 'trainer' (0.95 -> 0.94): 0.01 > max 0.005"),
    ("vs_baseline", "min_top1_agreement", 0.98, 0.995,
     "top-1 agreement with baseline 'trainer': 0.99 < min 0.995"),
    ("vs_baseline", "min_speedup_p50", 1.5, 3,
     "p50 speedup over baseline 'trainer' at batch 100: 2.03x, 95% interval [1.969, 2.091] "
     "over 8 rounds, wholly < min 3x: regressed (slower than the threshold allows, with 95% "
     "confidence)"),
    ("vs_baseline", "min_speedup_p99", 1.5, 3,
     "p99 speedup over baseline 'trainer' at batch 100: 2.17x, 95% interval [2.105, 2.235] "
     "over 8 rounds, wholly < min 3x: regressed (slower than the threshold allows, with 95% "
     "confidence)"),
    ("vs_served", "max_p99_regression_pct", 10, 2,
     "p99 latency at batch 100 vs the served model (11 -> 11.5 ms): +4.545% > max +2%"),
    ("vs_served", "max_accuracy_regression", 0.02, 0.005,
     "accuracy regression vs the served model (0.95 -> 0.94): 0.01 > max 0.005"),
]


@pytest.mark.parametrize(("group", "key", "passing", "failing", "reason"), THRESHOLD_CASES,
                         ids=[f"{case[0]}.{case[1]}" for case in THRESHOLD_CASES])
def test_each_threshold_passes_or_blocks_with_measured_value_and_limit(
        two_signature_model, group, key, passing, failing, reason):
    candidates = {"quantized": two_signature_model}
    name = f"{group}.{key}"

    ok = gate(candidates, {group: {key: passing}}, served=served_model())
    assert ok.blessed and ok.chosen == "quantized"
    assert check(ok, name, "quantized").passed
    assert check(ok, name, "quantized").limit == passing

    blocked = gate(candidates, {group: {key: failing}}, served=served_model())
    assert not blocked.blessed and blocked.chosen is None
    failed = check(blocked, name, "quantized")
    assert not failed.passed and failed.limit == failing
    assert failed.reason == reason
    assert blocked.candidate("quantized").blocked_by == [f"{name}: {reason}"]


def test_the_objective_by_default_picks_the_lowest_p99_at_the_primary_batch_size(candidates):
    decision = gate(candidates)
    assert decision.blessed and decision.chosen == "quantized"
    assert decision.chosen_path == str(candidates["quantized"])
    assert [c.name for c in decision.candidates] == ["quantized", "optimized"]
    assert decision.reason == ("'quantized' has the lowest weighted_p99_ms at batch 100 of "
                               "the 2 "
                               "candidates that passed every check: 11.52 vs 12.02 "
                               "for 'optimized'")  # the trainer's 25 ms over 2.17, 2.08


def test_a_tie_on_p99_is_broken_by_the_smaller_size(candidates):
    metrics = benchmark()
    metrics["models"]["optimized"]["batches"]["100"] |= {"p99_ms": 11.5, "speedup_p99": 2.17}
    metrics["models"]["optimized"]["size_bytes"] = 2_000_000
    decision = gate(candidates, metrics=metrics)
    assert decision.chosen == "optimized"
    assert "lowest size_bytes" in decision.reason


@pytest.mark.parametrize(("objective", "chosen"), [
    (["p99_ms", "size_bytes"], "quantized"),
    (["p50_ms", "accuracy"], "quantized"),  # the profile's objective (p50) ranks first
    (["throughput"], "quantized"),  # higher is better
    (["top1_agreement"], "quantized"),  # breaks ties only: p99 (the default) ranks first
    (["load_time_s", "p50_ms"], "quantized"),  # tie on the first, the second decides
])
def test_the_objective_is_configurable(candidates, objective, chosen):
    assert gate(candidates, {"objective": objective}).chosen == chosen


def test_the_primary_batch_size_decides_where_latency_is_read(candidates):
    metrics = benchmark()
    metrics["models"]["optimized"]["batches"]["1"] |= {"p99_ms": 1.0, "speedup_p99": 1.4}
    assert gate(candidates, {"primary_batch_size": 1}, metrics=metrics).chosen == "optimized"
    assert gate(candidates, {"primary_batch_size": 100}, metrics=metrics).chosen == "quantized"


def test_only_candidates_that_pass_every_threshold_compete(candidates):
    decision = gate(candidates, {"value": {"max_size_mb": 5}})
    assert decision.chosen == "quantized"
    decision = gate(candidates, {"vs_baseline": {"max_accuracy_drop": 0.005}})
    assert decision.chosen == "optimized"
    assert decision.reason == ("'optimized' is the only one of 2 candidate(s) that passed "
                               "every check")


def test_nothing_is_pushed_when_no_candidate_passes(candidates):
    thresholds = Thresholds.from_yaml(CONFIGS / "thresholds_impossible.yaml")
    decision = evaluate_gate(benchmark(), thresholds, candidates)
    assert not decision.blessed and decision.chosen is None and decision.chosen_path is None
    assert decision.reason == "none of the 2 candidate(s) passed every check; nothing is pushed"
    assert check(decision, "value.max_p99_ms", "optimized").reason == (
        "p99 latency at batch 100: 12 ms > max 0.001 ms")
    with pytest.raises(GateBlocked, match="nothing is pushed") as blocked:
        decision.raise_if_blocked()
    assert blocked.value.exit_code == 4


def test_the_default_thresholds_push_the_fastest_candidate_on_a_first_push(candidates):
    decision = evaluate_gate(benchmark(), Thresholds.from_yaml(CONFIGS / "thresholds.yaml"),
                             candidates)
    assert decision.blessed and decision.chosen == "quantized"
    decision.raise_if_blocked()  # blessed: nothing to raise


def test_on_a_first_push_checks_against_the_served_model_are_not_applicable(candidates):
    thresholds = {"vs_served": {"max_p99_regression_pct": 5, "max_accuracy_regression": 0.0}}
    decision = gate(candidates, thresholds, served=None)
    assert decision.blessed and decision.first_push
    served = [c for c in decision.checks if c.threshold.startswith("vs_served.")]
    assert len(served) == 4  # two thresholds, two candidates
    for item in served:
        assert item.passed and not item.applicable and item.measured is None
        assert item.reason == "not applicable: no model served yet"
    assert ("  not applicable: no model served yet: vs_served.max_p99_regression_pct, "
            "vs_served.max_accuracy_regression") in decision.summary_lines()


def test_a_p99_regression_against_the_served_model_blocks_the_push(candidates):
    served = served_model()
    served["batches"]["100"]["p99_ms"] = 8.0
    decision = gate(candidates, {"vs_served": {"max_p99_regression_pct": 10}}, served=served)
    assert not decision.blessed and not decision.first_push
    failed = check(decision, "vs_served.max_p99_regression_pct", "quantized")
    assert failed.measured == pytest.approx(43.75)
    assert failed.reason == ("p99 latency at batch 100 vs the served model (8 -> 11.5 ms): "
                             "+43.75% > max +10%")


def test_served_metrics_without_the_primary_batch_size_block_rather_than_pass(candidates):
    served = served_model()
    served["batches"] = {"1": batch(1.0, 1.1, 900.0)}
    decision = gate(candidates, {"vs_served": {"max_p99_regression_pct": 10}}, served=served)
    assert not decision.blessed
    assert "the served model's metrics have no p99 at batch 100" in check(
        decision, "vs_served.max_p99_regression_pct", "optimized").reason


def test_a_candidate_missing_from_the_benchmark_is_blocked_with_a_clear_reason(
        two_signature_model):
    metrics = benchmark()
    metrics["models"]["quantized"]["error"] = "TF Serving's SavedModel loader cannot load it"
    del metrics["models"]["optimized"]["batches"]["100"]
    candidates = {name: two_signature_model for name in ("optimized", "quantized", "pruned")}
    decision = gate(candidates, {"value": {"max_p99_ms": 100}}, metrics=metrics)
    assert not decision.blessed
    reasons = {name: check(decision, "benchmark", name).reason for name in candidates}
    assert reasons == {
        "pruned": "no benchmark result for 'pruned' in the metrics; benchmark every candidate",
        "quantized": "the benchmark of 'quantized' failed: TF Serving's SavedModel loader "
                     "cannot load it",
        "optimized": "no benchmark result at the primary batch size 100 (measured: 1); "
                     "benchmark that batch size or change primary_batch_size",
    }
    for name in candidates:  # no threshold is checked on numbers that are not there
        assert {c.threshold for c in decision.checks_for(name) if c.candidate} == {
            "benchmark", "server", "safety", "signatures"}  # the last three read files


def test_a_blocked_candidate_does_not_stop_another_from_being_pushed(two_signature_model):
    candidates = {"optimized": two_signature_model, "pruned": two_signature_model}
    decision = gate(candidates)
    assert decision.chosen == "optimized"
    assert not decision.candidate("pruned").passed


@pytest.mark.parametrize(("model_blessed", "infra_blessed", "blessed", "reason"), [
    (None, None, True, None),
    (True, True, True, None),
    (False, None, False, "model blessing: not blessed by the Evaluator; nothing is pushed"),
    (True, False, False,
     "infra blessing: not blessed by the InfraValidator; nothing is pushed"),
])
def test_blessings_must_be_true_when_given(candidates, model_blessed, infra_blessed, blessed,
                                           reason):
    decision = gate(candidates, model_blessed=model_blessed, infra_blessed=infra_blessed)
    assert decision.blessed is blessed
    if reason:
        assert decision.reason == reason and decision.chosen is None
        assert all(not c.passed for c in decision.candidates)  # the run-wide check blocks all
    for name, given in (("model_blessing", model_blessed), ("infra_blessing", infra_blessed)):
        [item] = [c for c in decision.checks if c.threshold == name]
        assert item.candidate is None and item.applicable is (given is not None)


def test_a_speedup_is_judged_on_its_interval_with_three_outcomes(candidates):
    metrics = benchmark()
    entry = metrics["models"]["quantized"]["batches"]["100"]
    thresholds = {"vs_baseline": {"min_speedup_p50": 0.95}}
    for interval, outcome, passed in (([0.96, 1.04], "not regressed", True),
                                      ([0.80, 0.90], "regressed", False),
                                      ([0.91, 1.02], "inconclusive", False)):
        entry.update(speedup_p50=0.97, speedup_p50_interval=interval)
        item = check(gate(candidates, thresholds, metrics=metrics),
                     "vs_baseline.min_speedup_p50", "quantized")
        assert (item.outcome, item.passed, item.interval) == (outcome, passed, interval)
    assert item.reason == (
        "p50 speedup over baseline 'trainer' at batch 100: 0.97x, 95% interval [0.910, 1.020] "
        "over 8 rounds, straddles min 0.95x, 11% wide: inconclusive, too noisy for the margin; "
        "blocked by inconclusive: block; measure on a quieter machine or longer (the "
        "benchmark's decision_budget_s), or set inconclusive: allow")


def test_an_inconclusive_speedup_is_blocked_by_default_and_the_policy_can_allow_it(candidates):
    metrics = benchmark()
    metrics["models"]["quantized"]["batches"]["100"].update(
        speedup_p50=0.97, speedup_p50_interval=[0.91, 1.02])
    thresholds = {"vs_baseline": {"min_speedup_p50": 0.95}}
    assert Thresholds().inconclusive == "block"  # the one default, the library's
    assert gate(candidates, thresholds, metrics=metrics).chosen == "optimized"
    allowed = gate(candidates, {**thresholds, "inconclusive": "allow"}, metrics=metrics)
    assert allowed.chosen == "quantized"
    assert check(allowed, "vs_baseline.min_speedup_p50", "quantized").reason.endswith(
        "inconclusive, too noisy for the margin; allowed by inconclusive: allow")


def test_a_speedup_without_an_interval_is_inconclusive(candidates):
    """Too few rounds for the confidence (the benchmark writes [null, null]), or metrics
    of a benchmark that recorded no intervals."""
    metrics = benchmark()
    metrics["models"]["quantized"]["batches"]["100"]["speedup_p50_interval"] = [None, None]
    del metrics["models"]["optimized"]["batches"]["100"]["speedup_p50_interval"]
    decision = gate(candidates, {"vs_baseline": {"min_speedup_p50": 0.95}}, metrics=metrics)
    for name in ("quantized", "optimized"):
        item = check(decision, "vs_baseline.min_speedup_p50", name)
        assert item.outcome == "inconclusive" and not item.passed
        assert "no confidence interval (too few rounds" in item.reason


def test_the_decision_says_when_load_may_distort_a_ranking_between_thread_counts(candidates):
    """A busy machine slows the runtime with more threads more: a TFLite row (1 thread
    per request) against a 2-thread Session. The check informs, it does not block."""
    metrics = benchmark()
    metrics["models"]["trainer"]["runtime"] = {
        "runtime": "tensorflow", "version": "trainer", "server_flags": [],
        "settings": {"intra_op_threads": 2, "inter_op_threads": 2}}
    metrics["models"]["quantized"]["runtime"] = {
        "runtime": "tensorflow", "version": "quantized", "server_flags": [],
        "settings": {"threads_per_interpreter": 1}}
    metrics["models"]["quantized"]["batches"]["100"].update(other_cpu=0.4, busy_windows=6)
    metrics["models"]["optimized"]["batches"]["100"].update(other_cpu=0.05, busy_windows=0)
    decision = gate(candidates, metrics=metrics)
    busy = check(decision, "measurement", "quantized")
    assert busy.passed and busy.measured == 0.4
    assert busy.reason == (
        "8 rounds, 300 requests at batch 100, latency stable; other processes took 40% of "
        "the CPU (median per window), 6 of 8 windows busy (over 25%); the speedup may be "
        "distorted by that load: it runs requests on 1 thread(s), the baseline on 2, and "
        "load slows the one with more threads more; measure on a machine as quiet as the "
        "server will be")
    assert "distorted" not in check(decision, "measurement", "optimized").reason


def test_a_threshold_whose_measurement_is_missing_blocks(candidates):
    metrics = benchmark()
    metrics["models"]["quantized"]["accuracy"] = None
    decision = gate(candidates, {"value": {"min_accuracy": 0.9}}, metrics=metrics)
    assert decision.chosen == "optimized"
    assert check(decision, "value.min_accuracy", "quantized").reason == (
        "accuracy not measured (the benchmark recorded no accuracy: give it labelled eval "
        "examples); cannot check min 0.9; or unset value.min_accuracy")


def test_a_missing_speedup_is_not_recomputed_and_blocks(candidates):
    """One source per figure: the speedup is the benchmark's (the median of per-round
    ratios); the gate never derives another one from the p50s."""
    metrics = benchmark()
    del metrics["models"]["quantized"]["batches"]["100"]["speedup_p50"]
    decision = gate(candidates, {"vs_baseline": {"min_speedup_p50": 1.5}}, metrics=metrics)
    found = check(decision, "vs_baseline.min_speedup_p50", "quantized")
    assert found.measured is None and not found.passed
    assert "not measured (the benchmark recorded no speedup" in found.reason
    assert decision.chosen == "optimized"


def test_the_baseline_itself_may_be_pushed_and_trivially_meets_the_baseline_thresholds(
        two_signature_model):
    thresholds = {"vs_baseline": {"max_accuracy_drop": 0.0, "min_top1_agreement": 1.0,
                                  "min_speedup_p50": 1.0}, "value": {"max_size_mb": 5}}
    candidates = {"trainer": two_signature_model, "optimized": two_signature_model}
    decision = gate(candidates, thresholds)
    assert not decision.blessed  # optimized: too big; trainer: too big as well
    decision = gate(candidates, {"vs_baseline": thresholds["vs_baseline"]})
    for key in ("max_accuracy_drop", "min_top1_agreement", "min_speedup_p50"):
        item = check(decision, f"vs_baseline.{key}", "trainer")
        assert item.passed and item.reason.endswith("(the baseline itself)")
    assert decision.candidate("trainer").passed


def test_without_a_usable_baseline_the_baseline_thresholds_block(candidates):
    metrics = benchmark()
    metrics["models"]["trainer"]["error"] = "out of memory"
    decision = gate(candidates, {"vs_baseline": {"min_speedup_p50": 1.0}}, metrics=metrics)
    assert not decision.blessed
    assert check(decision, "vs_baseline.min_speedup_p50", "optimized").reason == (
        "cannot compare with the baseline: the benchmark of 'trainer' failed: out of memory")


def test_thresholds_may_be_given_as_a_dict(candidates):
    decision = evaluate_gate(benchmark(), {"value": {"max_size_mb": 5}}, candidates)
    assert decision.chosen == "quantized"
    with pytest.raises(ServoptError, match="^thresholds parameter: unknown key 'value.size'"):
        evaluate_gate(benchmark(), {"value": {"size": 5}}, candidates)


def test_the_decision_is_recorded_as_json_with_every_check(candidates, tmp_path):
    decision = gate(candidates, {"value": {"max_p99_ms": 11.8}}, served=served_model())
    (tmp_path / "decision.json").write_text(json.dumps(decision.to_dict(), indent=2))
    recorded = json.loads((tmp_path / "decision.json").read_text())
    assert recorded["blessed"] is True and recorded["chosen"] == "quantized"
    assert recorded["thresholds"]["value"]["max_p99_ms"] == 11.8
    assert recorded["primary_batch_size"] == 100 and not recorded["first_push"]
    [p99] = [c for c in recorded["checks"]
             if c["threshold"] == "value.max_p99_ms" and c["candidate"] == "optimized"]
    assert p99 == {"threshold": "value.max_p99_ms", "candidate": "optimized",
                   "measured": 12.0, "limit": 11.8, "passed": False,
                   "reason": "p99 latency at batch 100: 12 ms > max 11.8 ms",
                   "kind": "value", "applicable": True, "interval": None, "outcome": None}
    assert recorded["candidates"][1]["blocked_by"] == [
        "value.max_p99_ms: p99 latency at batch 100: 12 ms > max 11.8 ms"]


def test_the_summary_and_the_table_show_the_choice_and_the_failures(candidates):
    decision = gate(candidates, {"value": {"max_p99_ms": 11.8}})
    lines = decision.summary_lines()
    assert lines[0] == "PusherGate: blessed: push 'quantized'"
    assert "  candidate 'optimized': blocked" in lines
    assert "    value.max_p99_ms: p99 latency at batch 100: 12 ms > max 11.8 ms" in lines
    assert any(line.startswith("  candidate 'quantized': passed") for line in lines)

    console = Console(record=True, width=200)
    console.print(decision_table(decision))
    text = console.export_text()
    assert "PusherGate: push 'quantized'" in text
    assert "FAIL" in text and "p99 latency at batch 100: 12 ms > max 11.8 ms" in text


def test_metrics_of_another_schema_are_refused(tmp_path, candidates):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({**benchmark(), "schema_version": 2}))
    with pytest.raises(ServoptError, match=rf"{path}: schema_version 2 is not supported"):
        load_metrics(path)
    path.write_text("{not json")
    with pytest.raises(ServoptError, match=rf"{path}: not valid JSON"):
        load_metrics(path)
    path.write_text(json.dumps(benchmark()))
    assert load_metrics(path) == BenchmarkResult.from_dict(benchmark())  # typed
    with pytest.raises(ServoptError, match="no candidates given"):
        evaluate_gate(benchmark(), Thresholds(), {})


def test_the_metrics_passed_in_are_not_modified(candidates):
    metrics = benchmark()
    before = copy.deepcopy(metrics)
    gate(candidates, {"vs_baseline": {"min_speedup_p50": 1.0}}, metrics=metrics)
    assert metrics == before


def test_a_measurement_exactly_at_the_limit_passes(candidates):
    decision = gate(candidates, {"vs_baseline": {"max_accuracy_drop": 0.01}})
    item = check(decision, "vs_baseline.max_accuracy_drop", "quantized")
    assert item.passed  # 0.95 - 0.94 is 0.010000000000000009 in floating point
    assert item.reason.endswith(": 0.01 <= max 0.01")
