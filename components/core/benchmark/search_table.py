"""The configuration search's result as one table: every (version, runtime, configuration)
row it measured at the search batch size, best first by the search's objective.

One source for the CLI table (`servopt benchmark`), the HTML report and its plot; the
gate marks the pair it chose on the same rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from components.core.benchmark.schema import BenchmarkResult


@dataclass(frozen=True)
class SearchRow:
    row: str  # the row's name in the metrics
    version: str
    runtime: str
    label: str  # "default" or what the search changed
    p50_ms: float
    p99_ms: float
    throughput: float
    speedup_p50: float | None  # over the baseline, from the same rounds
    speedup_p99: float | None
    speedup_p99_interval: list[float | None] | None
    best: bool  # the best configuration the search found for this version and runtime
    flags: tuple[str, ...]  # the tensorflow_model_server flags of this configuration


def search_rows(result: BenchmarkResult) -> list[SearchRow]:
    """The rows of every searched contender (default and tried settings), best first by
    the search's objective at its batch size; [] when no search ran."""
    search = result.search
    if search is None:
        return []
    versions = {(result.version_of(c), result.models[c].runtime_name())
                for c in search.contenders if c in result.models}
    best = set(search.best.values())
    rows = []
    for name, model in result.models.items():
        runtime = model.runtime
        batch = model.at(search.batch_size)
        if (runtime is None or batch is None or model.error
                or (runtime.version, runtime.runtime) not in versions):
            continue
        rows.append(SearchRow(
            row=name, version=runtime.version, runtime=runtime.runtime, label=runtime.label,
            p50_ms=batch.p50_ms, p99_ms=batch.p99_ms, throughput=batch.throughput,
            speedup_p50=batch.speedup_p50, speedup_p99=batch.speedup_p99,
            speedup_p99_interval=batch.speedup_p99_interval, best=name in best,
            flags=tuple(runtime.server_flags)))
    lower = search.objective.endswith("_ms")

    def key(row: SearchRow) -> tuple:
        value = getattr(row, search.objective)
        value = math.inf if value is None else (value if lower else -value)
        return value, row.row
    return sorted(rows, key=key)
