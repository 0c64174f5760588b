"""Interleaved measurement: every model is measured in the same rounds, A B A B ...

Machines drift (other processes, thermal state, frequency). Measuring all of model A and
then all of model B puts the drift into the comparison; measuring one window of each model
per round and comparing the windows of the same round cancels it. The speedup of a
candidate is the median over rounds of baseline_p50[round] / candidate_p50[round] (the
same for p99).

Every speedup comes with a confidence interval over its per-round ratios (see
stats.median_interval), so rounds go on at least until the interval can reach the
configured confidence (6 rounds for 95%). Then:

- when the gate's decision lines are given (`decide_speedup_p50` / `_p99`: the speedups
  it blocks below), rounds end as soon as every candidate's interval lies wholly on one
  side of each line: the question the gate asks is answered. One that still straddles a
  line after `max_windows` rounds is measured on, for at most `decision_budget_s` seconds,
  and the gate reports what is still inconclusive then;
- otherwise rounds end when every model is stable (the p50 of its last 3 windows within
  the stability percentage), or every candidate's *speedup* is (its ratio to the baseline
  in each of the last 3 rounds within the stability percentage), or at `max_windows`. The
  second rule is what settles on a shared machine: other tenants' load moves every
  model's latency together, so absolute latency may never settle while the comparison has.

With a `deadline` (the total time budget's share of this batch size, see budget), rounds
also end when it passes, once the minimum rounds an interval needs are complete (the
budget keeps only the rows whose minimum rounds fit).

A model that never settled is reported `stable: false`. A model that fails is dropped
from the following rounds and its error kept; the others go on.

Rounds rotate the order (A B C, B C A, C A B, ...): on a machine with few cores a
window is disturbed by the model measured just before it (its threads still spinning,
its data in the caches), and where a model sits in the round showed as a 10% bias
between identical copies here; rotating gives every model every position equally often.

Switching models idles the previous model's thread pools (TF's and TFLite's workers spin
briefly, then sleep) and lets the next model's caches go cold; each window is therefore
preceded by `rewarm_requests` untimed requests (fewer where a request is slow, about
REWARM_WORK_S of work: budget.rewarm_count), so that a window measures the model in
steady state, not the wake-up after the switch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from components.core.benchmark.budget import rewarm_count
from components.core.benchmark.config import BenchmarkConfig
from components.core.benchmark.load import BUSY_SHARE
from components.core.benchmark.measure import ConcurrencySample, WindowSample
from components.core.benchmark.schema import BatchResult, ConcurrencyResult
from components.core.benchmark.stats import (
    INCONCLUSIVE,
    Interval,
    is_stable,
    judge_at_least,
    median_interval,
    paired_ratios,
    percentile,
    rounds_for,
    summarize,
)
from components.core.errors import ServoptError


class Runner(Protocol):
    def warmup(self, batch_size: int, requests: int) -> None: ...

    def window(self, batch_size: int, requests: int, seconds: float | None = None
               ) -> WindowSample: ...

    def concurrent(self, batch_size: int, clients: int, requests_per_client: int,
                   seconds: float | None = None) -> ConcurrencySample: ...


@dataclass
class Series:
    """One model's measurement windows at one batch size, one per round, in order."""

    batch_size: int
    stability_percent: float
    windows: list[WindowSample] = field(default_factory=list)

    @property
    def p50s(self) -> list[float]:
        return [percentile(w.latencies_ms, 50) for w in self.windows]

    @property
    def p99s(self) -> list[float]:
        return [percentile(w.latencies_ms, 99) for w in self.windows]

    @property
    def throughputs(self) -> list[float]:
        return [w.examples / w.duration_s if w.duration_s else 0.0 for w in self.windows]

    @property
    def requests(self) -> int:
        """Timed requests over every window."""
        return sum(len(w.latencies_ms) for w in self.windows)

    @property
    def other_cpu(self) -> list[float]:
        """Each window's share of the machine other processes took (where known)."""
        return [w.other_cpu for w in self.windows if w.other_cpu is not None]

    @property
    def stable(self) -> bool:
        return is_stable(self.p50s, self.stability_percent)

    def speedup_stable(self, baseline: Series) -> bool:
        """The per-round ratio baseline/candidate of the last 3 rounds has settled."""
        ratios = [b / c for b, c in zip(baseline.p50s, self.p50s, strict=False) if c > 0]
        return is_stable(ratios, self.stability_percent)

    def result(self) -> BatchResult:
        """Statistics over every measured request (warm-up excluded)."""
        latencies = [v for w in self.windows for v in w.latencies_ms]
        summary = summarize(latencies)
        duration = sum(w.duration_s for w in self.windows)
        examples = sum(w.examples for w in self.windows)
        shares = self.other_cpu
        return BatchResult(**vars(summary), throughput=examples / duration if duration else 0.0,
                           stable=self.stable, windows=len(self.windows),
                           requests=len(latencies),
                           other_cpu=percentile(shares, 50) if shares else None,
                           busy_windows=sum(share > BUSY_SHARE for share in shares))


@dataclass
class RoundsOutcome:
    series: dict[str, Series]  # models measured to the end, in the runners' order
    errors: dict[str, str]  # models that failed at this batch size


def warm_up(runners: dict[str, Runner], batch_size: int, requests: int
            ) -> tuple[dict[str, float], dict[str, str]]:
    """Every model's warm-up at `batch_size`: (seconds per warm-up request, errors). The
    time ranks the rows by promise when the budget is short (see budget)."""
    per_request: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name, runner in runners.items():
        start = time.perf_counter()
        try:
            runner.warmup(batch_size, requests)
        except ServoptError as err:
            errors[name] = str(err)
            continue
        per_request[name] = (time.perf_counter() - start) / max(requests, 1)
    return per_request, errors


def interleaved_rounds(runners: dict[str, Runner], batch_size: int, plan: BenchmarkConfig,
                       *, deadline: float | None = None, warmed: bool = False,
                       progress: Callable[[int], None] | None = None) -> RoundsOutcome:
    """Warms every model up (unless `warmed`), then measures rounds of one window per
    model, in order, until a rule above ends them or `deadline` (time.monotonic) passes.
    `progress` hears the number of each completed round."""
    errors: dict[str, str] = {}
    active = dict(runners)
    if not warmed:
        _, errors = warm_up(active, batch_size, plan.warmup_requests)
        for name in errors:
            del active[name]
    series = {name: Series(batch_size, plan.stability_percent)
              for name in active}
    minimum = rounds_for(plan.confidence)
    deciding = plan.decide_speedup_p50 is not None or plan.decide_speedup_p99 is not None
    overtime_ends: float | None = None
    round_index = 0
    while active:
        order = list(active.items())
        shift = round_index % len(order) if order else 0
        for name, runner in order[shift:] + order[:shift]:
            try:
                windows = series[name].windows
                rewarm = rewarm_count(plan.rewarm_requests, windows[-1].duration_s / max(
                    len(windows[-1].latencies_ms), 1) if windows else None)
                if rewarm:
                    runner.warmup(batch_size, rewarm)
                series[name].windows.append(
                    runner.window(batch_size, plan.window_requests, plan.window_seconds))
            except ServoptError as err:
                errors[name] = str(err)
                del active[name], series[name]
        round_index += 1
        if progress is not None:
            progress(round_index)
        if round_index < minimum:  # an interval needs these, deadline or not
            continue
        if deadline is not None and time.monotonic() >= deadline:
            break
        if round_index < plan.max_windows and any(
                series[name].requests < plan.min_requests for name in active):
            continue  # too few requests yet for a p99 (stats.MIN_REQUESTS_P99)
        if deciding:
            if _decided(series, plan):
                break
        elif all(series[name].stable for name in active) or _speedups_settled(series):
            break
        if round_index >= plan.max_windows:
            now = time.monotonic()
            overtime_ends = overtime_ends or now + plan.decision_budget_s
            if not deciding or now >= overtime_ends:
                break
    return RoundsOutcome(series, errors)


def _speedups_settled(series: dict[str, Series]) -> bool:
    """Every candidate's ratio to the baseline (the first series) has settled."""
    baseline, *candidates = series.values()
    return bool(candidates) and all(c.speedup_stable(baseline) for c in candidates)


def _decided(series: dict[str, Series], plan: BenchmarkConfig) -> bool:
    """Every candidate's speedup interval lies wholly on one side of each decision line."""
    if not series:
        return True
    baseline, *candidates = series.values()
    comparisons = [compare(baseline, candidate, plan.confidence) for candidate in candidates]
    return all(judge_at_least(*interval.to_list(), line) != INCONCLUSIVE
               for c in comparisons if c is not None
               for interval, line in ((c.speedup_p50, plan.decide_speedup_p50),
                                      (c.speedup_p99, plan.decide_speedup_p99))
               if line is not None)


@dataclass(frozen=True)
class Comparison:
    """A candidate against the baseline, round by round: medians of the per-round ratios
    with their confidence intervals. Speedups are baseline / candidate latency (above 1:
    the candidate is faster); the throughput ratio is candidate / baseline."""

    speedup_p50: Interval
    speedup_p99: Interval
    throughput_ratio: Interval


def compare(baseline: Series, candidate: Series, confidence: float) -> Comparison | None:
    """None when the two share no round with a usable measurement."""
    ratios = (paired_ratios(baseline.p50s, candidate.p50s),
              paired_ratios(baseline.p99s, candidate.p99s),
              paired_ratios(candidate.throughputs, baseline.throughputs))
    if not all(ratios):
        return None
    return Comparison(*(median_interval(values, confidence) for values in ratios))


def concurrency_sweep(runners: dict[str, Runner], batch_sizes: Sequence[int],
                      levels: Sequence[int], plan: BenchmarkConfig
                      ) -> tuple[dict[str, list[ConcurrencyResult]], dict[str, str]]:
    """Throughput against latency with N clients at once, interleaved like the rounds:
    for each batch size and level, each model in turn."""
    results: dict[str, list[ConcurrencyResult]] = {name: [] for name in runners}
    errors: dict[str, str] = {}
    for batch_size in batch_sizes:
        for level in levels:
            for name, runner in runners.items():
                if name in errors:
                    continue
                try:
                    sample = runner.concurrent(batch_size, level, plan.window_requests,
                                               plan.window_seconds)
                except ServoptError as err:
                    errors[name] = str(err)
                    continue
                results[name].append(ConcurrencyResult(
                    concurrency=level, batch_size=batch_size,
                    throughput=sample.examples / sample.duration_s if sample.duration_s
                    else 0.0,
                    p50_ms=percentile(sample.latencies_ms, 50),
                    p99_ms=percentile(sample.latencies_ms, 99)))
    return results, errors
