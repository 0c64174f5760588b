"""Statistics of measured latencies: percentiles, the stability rule, paired speedups.

Vocabulary from Triton's perf_analyzer: a measurement *window* is a batch of timed
requests; a result is *stable* when the p50 of the last `STABILITY_WINDOWS` windows
spreads by at most the stability percentage (spread = max/min - 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STABILITY_WINDOWS = 3  # windows the stability rule looks at (perf_analyzer's choice)
# Requests a p99 needs: of n requests, the largest exceeds the true p99 with probability
# 1 - 0.99^n, which reaches 95% at n = 299; with fewer, a sample's p99 is decided by its
# one or two slowest requests (below 100 it is interpolated towards the maximum). The
# benchmark measures a batch size for more rounds (up to max_windows) until every model
# has this many requests there (BenchmarkConfig.min_requests), and the gate's SLO check
# says when a p99 came from fewer.
MIN_REQUESTS_P99 = 300


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    if len(values) == 0:
        raise ValueError("percentile of no values")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass
class LatencySummary:
    """Latency statistics in milliseconds."""

    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float


def summarize(latencies_ms: Sequence[float]) -> LatencySummary:
    values = np.asarray(latencies_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("summary of no latencies")
    p50, p90, p95, p99 = (float(v) for v in np.percentile(values, [50, 90, 95, 99]))
    return LatencySummary(p50_ms=p50, p90_ms=p90, p95_ms=p95, p99_ms=p99,
                          mean_ms=float(values.mean()), std_ms=float(values.std()),
                          min_ms=float(values.min()), max_ms=float(values.max()))


def spread(values: Sequence[float]) -> float:
    """max/min - 1: 0.0 for identical values, inf if the smallest is not positive."""
    low, high = min(values), max(values)
    if low <= 0:
        return 0.0 if high == low else float("inf")
    return high / low - 1.0


def is_stable(window_p50s: Sequence[float], stability_percent: float,
              windows: int = STABILITY_WINDOWS) -> bool:
    """True when the last `windows` p50 values spread by at most `stability_percent`%."""
    if len(window_p50s) < windows:
        return False
    return spread(window_p50s[-windows:]) <= stability_percent / 100.0 + 1e-12  # rounding


def paired_speedup(baseline: Sequence[float], candidate: Sequence[float]) -> float | None:
    """Median over rounds of baseline[r] / candidate[r]: latencies measured in the same
    round share the machine's state at that time, so drift cancels in each ratio."""
    ratios = paired_ratios(baseline, candidate)
    return float(np.median(ratios)) if ratios else None


# --- confidence ------------------------------------------------------------------------
# A speedup is the median of per-round ratios (baseline / candidate, paired by round so
# drift cancels). Its confidence interval is the distribution-free one for a median: the
# k-th smallest and k-th largest of n ratios cover the true median with probability
# 1 - 2 P(Binomial(n, 1/2) < k). Why not a t-interval on log-ratios: on shared machines a
# window now and then collides with another process, and such outliers widen a t-interval
# and move its centre, while the order-statistic interval ignores k - 1 of them at each end,
# assumes no distribution, and brackets the very figure the gate reads (the median).
# The price: 95% needs at least 6 rounds (5 reach only 93.75%).

REGRESSED = "regressed"
NOT_REGRESSED = "not regressed"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Interval:
    """A median and its confidence interval; `coverage` is the interval's exact coverage
    (at least the confidence asked for), 0.0 when too few values can reach it."""

    estimate: float
    low: float
    high: float
    coverage: float
    count: int

    def to_list(self) -> list[float | None]:
        """[low, high] for JSON; [null, null] when too few values to know anything."""
        return [self.low, self.high] if self.coverage else [None, None]


def interval_text(interval: Sequence[float | None] | None) -> str:
    """'[0.97, 1.04]' for a recorded [low, high]; '' where there is none."""
    low, high = interval or (None, None)
    return "" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def _binomial_cdf_half(n: int, k: int) -> float:
    """P(Binomial(n, 1/2) <= k)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n


def rounds_for(confidence: float) -> int:
    """The fewest values whose median interval (min to max) reaches `confidence`."""
    n = 1
    while 1.0 - 2.0 * 0.5 ** n < confidence:
        n += 1
    return n


def median_interval(values: Sequence[float], confidence: float) -> Interval:
    """The median of `values` and its distribution-free `confidence` interval."""
    data = sorted(float(v) for v in values)
    n = len(data)
    if n == 0:
        raise ValueError("interval of no values")
    estimate = float(np.median(data))
    best = 0
    for k in range(1, n // 2 + 1):
        if 1.0 - 2.0 * _binomial_cdf_half(n, k - 1) >= confidence:
            best = k
        else:
            break
    if best == 0:  # too few values: nothing is known at this confidence
        return Interval(estimate, 0.0, math.inf, 0.0, n)
    coverage = 1.0 - 2.0 * _binomial_cdf_half(n, best - 1)
    return Interval(estimate, data[best - 1], data[n - best], coverage, n)


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """numerator[r] / denominator[r] for every round r with a positive denominator."""
    return [a / b for a, b in zip(numerators, denominators, strict=False) if b > 0]


ABOVE_ONE, BELOW_ONE, STRADDLES_ONE = "above 1", "below 1", "straddles 1"


def side_of_one(low: float | None, high: float | None) -> str:
    """Where the interval [low, high] of a ratio (a gain, a speedup) lies against 1: wholly
    above it (better with confidence), wholly below (worse), or straddling it (also when a
    bound is unknown). The rule the search keeps a setting by and the gate lets a pair
    replace the served version by."""
    if low is None or high is None:
        return STRADDLES_ONE
    if low > 1.0:
        return ABOVE_ONE
    if high < 1.0:
        return BELOW_ONE
    return STRADDLES_ONE


def judge_at_least(low: float | None, high: float | None, line: float) -> str:
    """A figure whose interval is [low, high] must not fall below `line` (e.g. a speedup
    of 0.95): regressed when the whole interval is below it, not regressed when it is
    wholly at or above it, inconclusive when it straddles it or is unknown (None)."""
    if low is None or high is None:
        return INCONCLUSIVE
    if high < line:
        return REGRESSED
    if low >= line:
        return NOT_REGRESSED
    return INCONCLUSIVE
