"""Statistics of measured latencies: percentiles, the stability rule, paired speedups.

Vocabulary from Triton's perf_analyzer: a measurement *window* is a batch of timed
requests; a result is *stable* when the p50 of the last `STABILITY_WINDOWS` windows
spreads by at most the stability percentage (spread = max/min - 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STABILITY_WINDOWS = 3  # windows the stability rule looks at (perf_analyzer's choice)


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
    ratios = [b / c for b, c in zip(baseline, candidate, strict=False) if c > 0]
    return float(np.median(ratios)) if ratios else None
