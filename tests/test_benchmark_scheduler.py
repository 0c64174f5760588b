"""The interleaving scheduler: rounds rotate A B C, B C A, each window after a few untimed
re-warm requests, ratios are taken round by round with their confidence intervals,
stability (of latency, or of the speedup) or a decided speedup ends the rounds once the
interval can reach its confidence, and a failing model leaves the others measured.

These tests use a fake in-process runner (it returns scripted latencies and records the
order of calls): what is under test is the scheduler, not a model.
"""

from __future__ import annotations

import dataclasses

import pytest

from components.core.benchmark.config import BenchmarkConfig
from components.core.benchmark.measure import ConcurrencySample, WindowSample
from components.core.benchmark.scheduler import (
    compare,
    concurrency_sweep,
    interleaved_rounds,
)
from components.core.errors import ServoptError


class FakeRunner:
    """Window r of this model has every latency equal to `p50s[r]` (ms)."""

    def __init__(self, name: str, p50s: list[float], calls: list, fail_at: int | None = None,
                 other_cpu: float | None = None):
        self.name, self.p50s, self.calls, self.fail_at = name, p50s, calls, fail_at
        self.other_cpu = other_cpu
        self.windows = 0

    def warmup(self, batch_size, requests):
        self.calls.append(("warmup", self.name, batch_size, requests))

    def window(self, batch_size, requests, seconds=None):
        self.calls.append(("window", self.name, batch_size))
        if self.fail_at is not None and self.windows == self.fail_at:
            raise ServoptError(f"{self.name}: the model crashed")
        value = self.p50s[self.windows % len(self.p50s)]  # the script repeats
        self.windows += 1
        return WindowSample([value] * requests, duration_s=value * requests / 1e3,
                            examples=batch_size * requests, other_cpu=self.other_cpu)

    def concurrent(self, batch_size, clients, requests_per_client, seconds=None):
        self.calls.append(("concurrent", self.name, batch_size, clients))
        latencies = [self.p50s[0] * clients] * (clients * requests_per_client)
        return ConcurrencySample(clients, batch_size, latencies, 1.0,
                                 batch_size * len(latencies))


# Confidence 0.75: 3 rounds can reach it (min to max of 3 ratios), as the stability rule's 3.
PLAN = BenchmarkConfig(warmup_requests=5, window_requests=4, window_seconds=None,
                       rewarm_requests=2, max_windows=6, stability_percent=10,
                       confidence=0.75, min_requests=1)  # the request rule: its own test


def windows(calls: list) -> list[str]:
    return [c[1] for c in calls if c[0] == "window"]


def test_models_are_warmed_up_then_measured_in_rounds_of_rotating_order():
    calls: list = []
    runners = {"A": FakeRunner("A", [10.0] * 6, calls), "B": FakeRunner("B", [5.0] * 6, calls)}
    outcome = interleaved_rounds(runners, batch_size=8, plan=PLAN)
    assert calls[:2] == [("warmup", "A", 8, 5), ("warmup", "B", 8, 5)]
    assert windows(calls) == ["A", "B", "B", "A", "A", "B"]  # stable after 3 rounds
    assert calls[2:4] == [("warmup", "A", 8, 2), ("window", "A", 8)]  # re-warmed first
    assert all(s.stable for s in outcome.series.values())
    assert outcome.series["A"].result().windows == 3
    assert outcome.series["A"].result().requests == 12


def test_speedup_is_computed_round_by_round_so_drift_cancels():
    """The machine slows down 4x during the run; A is always 2x slower than B in the same
    round. Pooled latencies would compare A's early rounds with B's late ones."""
    calls: list = []
    drift = [1.0, 1.5, 2.5, 4.0, 4.0, 4.0]
    runners = {"A": FakeRunner("A", [10.0 * d for d in drift], calls),
               "B": FakeRunner("B", [5.0 * d for d in drift], calls)}
    outcome = interleaved_rounds(runners, batch_size=1, plan=PLAN)
    comparison = compare(outcome.series["A"], outcome.series["B"], PLAN.confidence)
    assert comparison.speedup_p50.estimate == pytest.approx(2.0)
    assert comparison.speedup_p99.estimate == pytest.approx(2.0)
    assert comparison.speedup_p50.to_list() == pytest.approx([2.0, 2.0])  # no noise
    assert comparison.throughput_ratio.estimate == pytest.approx(2.0)  # B: twice A's


def test_rounds_go_on_until_max_windows_and_an_unsettled_model_is_reported_unstable():
    calls: list = []
    runners = {"A": FakeRunner("A", [10.0] * 6, calls),
               "B": FakeRunner("B", [5.0, 8.0, 5.0, 8.0, 5.0, 8.0], calls)}
    outcome = interleaved_rounds(runners, batch_size=1, plan=PLAN)
    assert len(windows(calls)) == 12  # 6 rounds of A B
    assert outcome.series["A"].result().stable
    assert not outcome.series["B"].result().stable
    assert outcome.series["B"].result().windows == 6


def test_rounds_end_when_every_speedup_has_settled_though_latency_moves_with_the_load():
    """Other tenants' load doubles and halves every model's latency together."""
    calls: list = []
    load = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    runners = {"A": FakeRunner("A", [10.0 * x for x in load], calls),
               "B": FakeRunner("B", [8.0 * x for x in load], calls)}
    outcome = interleaved_rounds(runners, batch_size=1, plan=PLAN)
    assert len(windows(calls)) == 6  # 3 rounds, not max_windows
    assert not outcome.series["B"].stable
    assert outcome.series["B"].speedup_stable(outcome.series["A"])


def test_a_model_that_fails_is_dropped_and_the_others_are_still_measured():
    calls: list = []
    runners = {"A": FakeRunner("A", [10.0] * 6, calls),
               "B": FakeRunner("B", [5.0] * 6, calls, fail_at=1),
               "C": FakeRunner("C", [4.0] * 6, calls)}
    outcome = interleaved_rounds(runners, batch_size=1, plan=PLAN)
    assert outcome.errors == {"B": "B: the model crashed"}
    assert set(outcome.series) == {"A", "C"}
    assert windows(calls) == ["A", "B", "C", "B", "C", "A", "A", "C"]  # rotation of A C
    assert outcome.series["C"].result().p50_ms == 4.0


def test_throughput_is_examples_per_second_of_wall_time():
    calls: list = []
    outcome = interleaved_rounds({"A": FakeRunner("A", [10.0] * 6, calls)}, 4, PLAN)
    assert outcome.series["A"].result().throughput == pytest.approx(4 / 0.010)


def test_the_concurrency_sweep_interleaves_models_per_level():
    calls: list = []
    runners = {"A": FakeRunner("A", [10.0], calls), "B": FakeRunner("B", [5.0], calls)}
    results, errors = concurrency_sweep(runners, [1, 8], [1, 2], PLAN)
    assert not errors
    assert [c[1:] for c in calls] == [("A", 1, 1), ("B", 1, 1), ("A", 1, 2), ("B", 1, 2),
                                      ("A", 8, 1), ("B", 8, 1), ("A", 8, 2), ("B", 8, 2)]
    point = results["A"][3]
    assert (point.batch_size, point.concurrency) == (8, 2)
    assert point.throughput == pytest.approx(8 * 2 * 4 / 1.0)
    assert point.p99_ms == pytest.approx(20.0)


def test_rounds_go_on_until_the_interval_can_reach_its_confidence():
    """Stable after 3 rounds, but a 95% interval needs 6 ratios (5 reach 93.75%)."""
    calls: list = []
    runners = {"A": FakeRunner("A", [10.0], calls), "B": FakeRunner("B", [5.0], calls)}
    plan = BenchmarkConfig(window_requests=4, window_seconds=None, max_windows=10,
                           min_requests=1)
    outcome = interleaved_rounds(runners, batch_size=1, plan=plan)
    assert len(windows(calls)) == 12  # 6 rounds
    interval = compare(outcome.series["A"], outcome.series["B"], 0.95).speedup_p50
    assert interval.count == 6 and interval.coverage >= 0.95


def test_with_a_decision_line_rounds_end_as_soon_as_every_interval_is_clear_of_it():
    """B is 2x faster than the baseline whatever the noise: decided at the minimum."""
    calls: list = []
    runners = {"A": FakeRunner("A", [10.0, 12.0, 9.0], calls),
               "B": FakeRunner("B", [5.0, 5.5, 4.5], calls)}
    plan = dataclasses.replace(PLAN, decide_speedup_p50=0.95, max_windows=6)
    interleaved_rounds(runners, batch_size=1, plan=plan)
    assert len(windows(calls)) == 6  # 3 rounds: [1.8, 2.4] lies wholly above 0.95


def test_an_undecided_interval_is_measured_past_max_windows_within_the_budget():
    """B's ratio swings around the line 0.95: undecided. With no budget the rounds end at
    max_windows; with one they go on (here until the script's 60 windows run out)."""
    ratios = [0.9, 1.0]
    calls: list = []
    runners = {"A": FakeRunner("A", [10.0], calls),
               "B": FakeRunner("B", [10.0 / r for r in ratios], calls)}
    plan = dataclasses.replace(PLAN, decide_speedup_p50=0.95, decision_budget_s=0.0)
    interleaved_rounds(runners, batch_size=1, plan=plan)
    assert len(windows(calls)) == 2 * PLAN.max_windows

    calls.clear()
    runners = {"A": FakeRunner("A", [10.0], calls),
               "B": FakeRunner("B", [10.0 / r for r in ratios], calls, fail_at=30)}
    plan = dataclasses.replace(plan, decision_budget_s=60.0)
    outcome = interleaved_rounds(runners, batch_size=1, plan=plan)
    assert len([w for w in windows(calls) if w == "B"]) == 31  # went on until B failed
    assert "B" in outcome.errors


def test_each_window_records_how_busy_the_machine_was():
    calls: list = []
    runners = {"A": FakeRunner("A", [10.0], calls, other_cpu=0.5),
               "B": FakeRunner("B", [5.0], calls, other_cpu=0.1)}
    outcome = interleaved_rounds(runners, batch_size=1, plan=PLAN)
    busy, quiet = outcome.series["A"].result(), outcome.series["B"].result()
    assert (busy.other_cpu, busy.busy_windows) == (0.5, busy.windows)
    assert (quiet.other_cpu, quiet.busy_windows) == (0.1, 0)


def test_rounds_go_on_until_every_model_has_the_requests_a_p99_needs():
    """Stable and confident after 6 rounds of 4 requests (24 each), but a p99 from 24
    requests is their maximum: rounds go on to 300 requests, up to max_windows."""
    calls: list = []
    runners = {"A": FakeRunner("A", [10.0], calls), "B": FakeRunner("B", [5.0], calls)}
    plan = dataclasses.replace(PLAN, window_requests=40, max_windows=20, min_requests=300)
    outcome = interleaved_rounds(runners, batch_size=1, plan=plan)
    assert outcome.series["A"].requests == 320  # 8 rounds of 40: the first >= 300
    capped = dataclasses.replace(plan, max_windows=7)
    calls.clear()
    outcome = interleaved_rounds({"A": FakeRunner("A", [10.0], calls),
                                  "B": FakeRunner("B", [5.0], calls)}, 1, capped)
    assert outcome.series["A"].requests == 280  # never past max_windows
