"""The traffic profile: declared once in the thresholds, parsed with errors that name the
file and the key, weighted as documented, its SLOs enforced by the gate, and old files
with `primary_batch_size` read as a one-entry profile."""

from __future__ import annotations

import json

import pytest

from components.core.errors import ServoptError
from components.core.gate import Thresholds, evaluate_gate, pairs_table
from components.core.traffic import TrafficEntry, TrafficProfile, with_flags

ONLINE = {"requests": [{"batch_size": 1, "share": 0.9, "slo_p99_ms": 50},
                       {"batch_size": 100, "share": 0.1, "slo_p99_ms": 500}],
          "clients": 2, "objective": "weighted_p50_ms"}


# --- parsing -------------------------------------------------------------------------------

def test_a_profile_reads_from_its_list_form_and_its_short_form_alike():
    listed = TrafficProfile.from_dict(ONLINE, "t.yaml")
    short = TrafficProfile.from_dict({"requests": {1: 0.9, 100: 0.1},
                                      "slo_p99_ms": {1: 50, 100: 500}, "clients": 2,
                                      "objective": "weighted_p50_ms"}, "t.yaml")
    assert listed == short
    assert listed.batch_sizes == (1, 100) and listed.shares == {1: 0.9, 100: 0.1}
    assert listed.slo_p99_ms == {1: 50, 100: 500} and listed.clients == 2
    assert listed.primary_batch_size == 1  # the batch most requests carry
    assert TrafficProfile.from_dict(json.loads(json.dumps(listed.to_dict())), "j") == listed


def test_json_keys_are_strings_and_still_read_as_batch_sizes():
    profile = TrafficProfile.from_dict({"requests": {"1": 0.5, "8": 0.5}}, "params")
    assert profile.batch_sizes == (1, 8)


@pytest.mark.parametrize(("data", "message"), [
    ({"requests": {1: 0.9, 100: 0.2}}, "the shares in 'traffic.requests' sum to 1.1, not 1"),
    ({"requests": {0: 1.0}}, "batch size must be an integer >= 1, got 0"),
    ({"requests": {1: 0.0, 8: 1.0}}, "share of batch 1 must be in (0, 1], got 0.0"),
    ({"requests": {1: 1.0}, "slo_p99_ms": {8: 5}}, "names batch 8, which 'traffic.requests'"),
    ({"requests": {1: 1.0}, "slo_p99_ms": {1: -5}}, "must be a number of milliseconds > 0"),
    ({"requests": {1: 1.0}, "objective": "p99_ms"}, "unknown 'traffic.objective' 'p99_ms'"),
    ({"requests": {1: 1.0}, "clients": 0}, "'traffic.clients' must be an integer >= 1"),
    ({"requests": {1: 1.0}, "client": 2}, "unknown key 'traffic.client'"),
    ({"clients": 2}, "'traffic' has no 'requests'"),
    ({"requests": "1:1.0"}, "'traffic.requests' must map batch sizes to shares"),
    ({"requests": [{"batch_size": 1}]}, "needs batch_size and share (missing 'share')"),
])
def test_a_bad_profile_is_refused_with_the_file_and_the_key(data, message):
    with pytest.raises(ServoptError) as raised:
        TrafficProfile.from_dict(data, "t.yaml")
    assert str(raised.value).startswith("t.yaml: ") and message in str(raised.value)


def test_the_command_line_flags_override_the_file():
    profile = TrafficProfile.from_dict(ONLINE, "t.yaml")
    changed = with_flags(profile, requests="1:0.5,8:0.5", slo_p99_ms="8:20",
                         objective="throughput_per_core", clients=4)
    assert changed.shares == {1: 0.5, 8: 0.5} and changed.slo_p99_ms == {8: 20}
    assert changed.objective == "throughput_per_core" and changed.clients == 4
    assert with_flags(profile) is profile
    kept = with_flags(profile, clients=3)
    assert kept.slo_p99_ms == profile.slo_p99_ms and kept.shares == profile.shares
    with pytest.raises(ServoptError, match="--traffic: '1=0.5' is not BATCH:VALUE"):
        with_flags(profile, requests="1=0.5")


# --- weighting -----------------------------------------------------------------------------

def test_latency_objectives_are_request_weighted_means():
    profile = TrafficProfile.from_dict(ONLINE, "t.yaml")
    assert profile.weighted({1: 2.0, 100: 30.0}) == pytest.approx(0.9 * 2 + 0.1 * 30)
    assert profile.weighted({1: 2.0}) is None  # a batch size not measured: no figure
    assert profile.lower_is_better and profile.metric == "p50_ms"


def test_throughput_per_core_is_the_mix_examples_over_the_mix_time():
    profile = TrafficProfile((TrafficEntry(1, 0.9), TrafficEntry(100, 0.1)),
                             objective="throughput_per_core")
    # 0.9 requests of 1 example at 1000 ex/s and 0.1 of 100 at 5000 ex/s: 10.9 examples
    # in 0.9 ms + 2 ms
    assert profile.weighted({1: 1000.0, 100: 5000.0}, cores=2) == pytest.approx(
        10.9 / (0.9 / 1000 + 10 / 5000) / 2)
    assert not profile.lower_is_better
    assert profile.gain(100.0, 150.0) == pytest.approx(1.5)  # higher is better


def test_the_objective_per_round_pairs_the_rounds_of_each_batch_size():
    profile = TrafficProfile.from_dict(ONLINE, "t.yaml")
    rounds = profile.per_round({1: [1.0, 2.0, 3.0], 100: [10.0, 20.0]})
    assert rounds == pytest.approx([0.9 + 1.0, 1.8 + 2.0])  # as many as the fewest


# --- old files -----------------------------------------------------------------------------

def test_an_old_file_with_primary_batch_size_keeps_working_as_a_one_entry_profile(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("primary_batch_size: 8\nobjective: [p50_ms, size_bytes]\n")
    thresholds = Thresholds.from_yaml(path)
    assert thresholds.traffic == TrafficProfile.one_batch(8, "weighted_p50_ms")
    assert thresholds.primary_batch_size == 8 and thresholds.batch_sizes == (8,)
    assert Thresholds(primary_batch_size=8, objective=("p50_ms",)).traffic == \
        thresholds.traffic


def test_an_old_key_merged_over_the_packaged_defaults_wins_over_their_profile():
    """The demo's config file and KFP's thresholds parameter are merged over the
    packaged file, which holds `traffic:`: an old `primary_batch_size` still decides."""
    merged = {**Thresholds().to_dict(), "primary_batch_size": 8}
    assert Thresholds.from_dict(merged).traffic == TrafficProfile.one_batch(8)


def test_both_primary_batch_size_and_traffic_are_refused_with_what_to_write(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("primary_batch_size: 8\ntraffic: {requests: {1: 1.0}}\n")
    with pytest.raises(ServoptError) as raised:
        Thresholds.from_yaml(path)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(str(path))
    assert "drop primary_batch_size (write it as traffic: {requests: {8: 1.0}})" in message


def test_a_profile_in_the_thresholds_names_the_file_in_its_errors(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("traffic: {requests: {1: 0.5}}\n")
    with pytest.raises(ServoptError, match=r"t\.yaml: the shares .* sum to 0\.5"):
        Thresholds.from_yaml(path)


def test_the_benchmark_must_measure_every_batch_size_of_the_profile():
    thresholds = Thresholds.from_dict({"traffic": ONLINE})
    thresholds.check_batch_sizes((1, 100), "demo")
    with pytest.raises(ServoptError, match="the traffic profile's batch size 100 is not "
                                           r"among the benchmark's batch sizes \[1, 8\]"):
        thresholds.check_batch_sizes((1, 8), "demo")


# --- the gate on a profile -----------------------------------------------------------------

def _batch(p50: float, p99: float, speedup: float = 2.0) -> dict:
    return {"p50_ms": p50, "p90_ms": p99, "p95_ms": p99, "p99_ms": p99, "mean_ms": p50,
            "std_ms": 0.1, "min_ms": p50, "max_ms": p99, "throughput": 1000.0 / p50,
            "stable": True, "windows": 6, "requests": 600, "speedup_p50": speedup,
            "speedup_p99": speedup, "speedup_p50_interval": [speedup * 0.9, speedup * 1.1],
            "speedup_p99_interval": [speedup * 0.9, speedup * 1.1], "confidence": 0.95}


def _model(path: str, role: str, batches: dict) -> dict:
    return {"path": path, "role": role, "size_bytes": 1_000_000,
            "batches": {str(size): batch for size, batch in batches.items()}}


@pytest.fixture
def metrics_and_models(seed_cnn_model):
    """Three candidates (copies of one real model) whose figures are written by hand:
    'fast_small' wins at batch 1, 'fast_large' at batch 100, 'slo_breaker' is fastest
    on the weighted p50 but breaks the batch-1 p99 SLO."""
    base = str(seed_cnn_model)
    models = {
        "base": _model(base, "baseline", {1: _batch(2.0, 4.0, 1.0),
                                          100: _batch(40.0, 60.0, 1.0)}),
        "fast_small": _model(base, "candidate", {1: _batch(0.5, 1.0), 100: _batch(30.0, 40.0)}),
        "fast_large": _model(base, "candidate", {1: _batch(1.5, 3.0), 100: _batch(10.0, 15.0)}),
        "slo_breaker": _model(base, "candidate", {1: _batch(0.4, 80.0),
                                                  100: _batch(5.0, 8.0)}),
    }
    for name, entry in models.items():  # measured with the baseline: paired speedups
        if name != "base":
            for size, batch in entry["batches"].items():
                reference = models["base"]["batches"][size]
                for key in ("p50", "p99"):
                    speedup = reference[f"{key}_ms"] / batch[f"{key}_ms"]
                    batch[f"speedup_{key}"] = speedup
                    batch[f"speedup_{key}_interval"] = [speedup * 0.9, speedup * 1.1]
                batch["throughput_ratio"] = batch["throughput"] / reference["throughput"]
    metrics = {"schema_version": 1,
               "machine": {"cpu_model": "test", "cores": 2, "tensorflow_version": "2",
                           "python_version": "3", "platform": "linux"},
               "settings": {"batch_sizes": [1, 100]}, "baseline": "base", "models": models}
    return metrics, {name: base for name in models if name != "base"}


NO_ACCURACY = {"vs_baseline": {"max_accuracy_drop": None, "min_top1_agreement": None}}


def test_the_gate_takes_the_best_weighted_pair_among_those_meeting_every_slo(
        metrics_and_models):
    metrics, candidates = metrics_and_models
    decision = evaluate_gate(metrics, {"traffic": ONLINE, **NO_ACCURACY}, candidates)
    # weighted p50: fast_small 0.9*0.5 + 0.1*30 = 3.45; fast_large 1.35 + 1.0 = 2.35;
    # slo_breaker 0.36 + 0.5 = 0.86 but its p99 at batch 1 is 80 ms > 50
    assert decision.chosen == "fast_large"
    breaker = decision.candidate("slo_breaker")
    assert not breaker.passed
    assert any(reason.startswith("traffic.slo_p99_ms: p99 latency at batch 1 (SLO): 80 ms > "
                                 "max 50 ms") for reason in breaker.blocked_by)
    chosen = decision.candidate("fast_large")
    assert chosen.weighted == pytest.approx(2.35)
    assert chosen.objective["weighted_p50_ms"] == pytest.approx(2.35)
    assert set(chosen.per_batch) == {1, 100} and chosen.per_batch[100]["p50_ms"] == 10.0
    assert "weighted_p50_ms over the traffic profile (90% batch 1, 10% batch 100" in \
        decision.reason
    assert decision.traffic == TrafficProfile.from_dict(ONLINE, "t").to_dict()
    assert any("traffic profile: 90% batch 1, 10% batch 100; 2 clients; p99 SLO 50 ms "
               "at batch 1, 500 ms at batch 100" in line for line in decision.summary_lines())


def test_pairs_measured_in_different_rounds_rank_by_their_paired_speedups(
        metrics_and_models):
    """A search step measures its rows with the baseline in later rounds: if the machine
    ran 1.5x slower then, every figure of that step is 1.5x higher, but not the ratios to
    the baseline measured beside them. 'fast_large' measured so (weighted p50 3.5 ms of
    its own against fast_small's 3.45) still ranks first: 2.35 ms, as in the same rounds."""
    metrics, candidates = metrics_and_models
    throughput = {"traffic": {**ONLINE, "objective": "throughput_per_core"}, **NO_ACCURACY}
    same_rounds = evaluate_gate(metrics, throughput, candidates).candidate("fast_large")
    for batch in metrics["models"]["fast_large"]["batches"].values():
        for key in ("p50_ms", "p99_ms", "mean_ms"):
            batch[key] *= 1.5
        batch["throughput"] /= 1.5
    decision = evaluate_gate(metrics, {"traffic": ONLINE, **NO_ACCURACY}, candidates)
    assert decision.chosen == "fast_large"
    assert decision.candidate("fast_large").weighted == pytest.approx(2.35)
    assert decision.candidate("fast_large").per_batch[100]["p50_ms"] == 15.0  # its own
    # Throughput the same way: the baseline's throughput times the paired ratio.
    later = evaluate_gate(metrics, throughput, candidates).candidate("fast_large")
    assert later.weighted == pytest.approx(same_rounds.weighted)


def test_a_one_entry_profile_judges_like_the_primary_batch_size_did(metrics_and_models):
    metrics, candidates = metrics_and_models
    at_1 = evaluate_gate(metrics, {"primary_batch_size": 1, "objective": ["p50_ms"],
                                   **NO_ACCURACY}, candidates)
    assert at_1.chosen == "slo_breaker"  # no SLO, the lowest p50 at batch 1
    assert evaluate_gate(metrics, {"traffic": {"requests": {100: 1.0}}, **NO_ACCURACY},
                         candidates).chosen == "slo_breaker"


def test_per_batch_checks_run_at_every_batch_size_of_the_profile(metrics_and_models):
    metrics, candidates = metrics_and_models
    decision = evaluate_gate(metrics, {"traffic": ONLINE, "value": {"max_p50_ms": 20},
                                       **NO_ACCURACY}, candidates)
    checks = [c for c in decision.checks_for("fast_small") if c.threshold == "value.max_p50_ms"]
    assert [c.passed for c in checks] == [True, False]  # 0.5 ms at batch 1, 30 at 100
    assert "at batch 100" in checks[1].reason


def test_the_decision_reads_back_with_its_per_batch_figures(metrics_and_models, tmp_path):
    from components.core.gate.decision import GateDecision

    metrics, candidates = metrics_and_models
    decision = evaluate_gate(metrics, {"traffic": ONLINE, **NO_ACCURACY}, candidates)
    back = GateDecision.from_dict(json.loads(json.dumps(decision.to_dict())))
    assert back.candidate("fast_large").per_batch == decision.candidate(
        "fast_large").per_batch


def test_the_packaged_profile_is_one_entry_and_the_demo_declares_an_online_one():
    from pipelines.digits.config import load_pipeline_config

    assert Thresholds().traffic == TrafficProfile.one_batch(100)
    demo = load_pipeline_config().thresholds.traffic
    assert len(demo.batch_sizes) == 2 and demo.shares[1] >= 0.5
    assert demo.slo_p99_ms and demo.objective == "weighted_p50_ms"




def test_the_pairs_table_shows_each_batch_size_and_the_weighted_objective(
        metrics_and_models):
    metrics, candidates = metrics_and_models
    decision = evaluate_gate(metrics, {"traffic": ONLINE, **NO_ACCURACY}, candidates)
    text = pairs_table(decision).plain(200)
    assert "pairs judged on the traffic profile 90% batch 1, 10% batch 100" in text
    assert "p50 ms @1" in text and "p99 ms @100" in text and "weighted_p50_ms" in text
    chosen_line = next(line for line in text.splitlines() if "chosen" in line)
    assert "2.35" in chosen_line and "1.5" in chosen_line and "10" in chosen_line


def test_replacing_a_group_or_the_profile_keeps_the_profile_given():
    import dataclasses

    online = Thresholds.from_dict({"traffic": ONLINE})
    relaxed = dataclasses.replace(online, inconclusive="allow")
    assert relaxed.traffic == online.traffic and relaxed.primary_batch_size == 1
    flagged = dataclasses.replace(Thresholds(), traffic=online.traffic)
    assert flagged.traffic == online.traffic


def test_servopt_benchmark_measures_what_the_gate_it_feeds_will_decide(tmp_path):
    """`servopt benchmark` then `servopt gate`: the benchmark reads the thresholds the
    gate will read (packaged, or --thresholds): their speedup lines, so a candidate is
    measured until its interval clears them, and their traffic profile."""
    from components.benchmark_cli import _gate_lines

    packaged = _gate_lines({}, None)
    assert packaged["decide_speedup_p50"] == Thresholds().vs_baseline.min_speedup_p50
    assert packaged["traffic"] == Thresholds().traffic  # {100: 1.0}, measured by default
    other_sizes = _gate_lines({"batch_sizes": (1, 8)}, None)
    assert "traffic" not in other_sizes and "batch_sizes" not in other_sizes
    path = tmp_path / "t.yaml"
    path.write_text("traffic: {requests: {1: 0.5, 8: 0.5}}\n"
                    "vs_baseline: {min_speedup_p50: 1.2}\n")
    given = _gate_lines({"batch_sizes": (1,)}, str(path))
    assert given["batch_sizes"] == (1, 8) and given["decide_speedup_p50"] == 1.2
    assert given["traffic"].shares == {1: 0.5, 8: 0.5}
    flagged = _gate_lines({}, None, "1:1.0", None, None, None)
    assert flagged["traffic"].batch_sizes == (1,) and 1 in flagged["batch_sizes"]
