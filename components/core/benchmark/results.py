"""Filling a benchmark's results: each row's statistics and speedups from its measured
series, and a row's measurements copied onto a row that computes the same.

Shared by the measurement (run.BenchmarkSession) and the configuration search (search), so
neither imports the other for them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from components.core.benchmark.scheduler import Series, compare
from components.core.benchmark.schema import ModelResult

MEASUREMENTS = ("load_time_s", "first_request_ms", "peak_memory_bytes", "flops_per_example",
                "batches", "concurrency", "accuracy", "error")


def copy_measurements(source: ModelResult, target: ModelResult,
                      keys: Sequence[str] = MEASUREMENTS) -> None:
    """`keys` of what was measured of `source`, onto a row that computes the same."""
    for key in keys:
        setattr(target, key, copy.deepcopy(getattr(source, key)))
    if "flops_per_example" in keys and source.flops_per_example is not None:
        for batch in target.batches.values():
            batch.achieved_flops_per_s = source.flops_per_example * batch.throughput


def fill_batches(results: dict[str, ModelResult], series: dict[str, dict[int, Series]],
                 baseline: str, confidence: float, served: str | None = None) -> None:
    """Each model's statistics per batch size, and a candidate's speedups over `baseline`
    with their `confidence` intervals; where the `served` version was measured in the same
    rounds, a candidate's speedups over it too (served_speedup_*), paired the same way."""
    for name, by_size in series.items():
        for size, measured in by_size.items():
            batch = measured.result()
            if served is not None and name not in (baseline, served) \
                    and size in series.get(served, {}):
                versus = compare(series[served][size], measured, confidence)
                if versus is not None:
                    batch.served_speedup_p50 = versus.speedup_p50.estimate
                    batch.served_speedup_p50_interval = versus.speedup_p50.to_list()
                    batch.served_speedup_p99 = versus.speedup_p99.estimate
                    batch.served_speedup_p99_interval = versus.speedup_p99.to_list()
            if name != baseline and size in series[baseline]:
                batch.speedup_stable = measured.speedup_stable(series[baseline][size])
                comparison = compare(series[baseline][size], measured, confidence)
                if comparison is not None:
                    batch.speedup_p50 = comparison.speedup_p50.estimate
                    batch.speedup_p99 = comparison.speedup_p99.estimate
                    batch.throughput_ratio = comparison.throughput_ratio.estimate
                    batch.speedup_p50_interval = comparison.speedup_p50.to_list()
                    batch.speedup_p99_interval = comparison.speedup_p99.to_list()
                    batch.throughput_ratio_interval = comparison.throughput_ratio.to_list()
                    batch.confidence = confidence
            results[name].batches[size] = batch
