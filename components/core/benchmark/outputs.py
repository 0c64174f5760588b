"""Writing a benchmark's files so that nothing measured is lost.

metrics.json is written first (and, through `metrics_checkpoint`, again as rows complete
while the benchmark runs); the HTML report after it. A report that cannot be made (a
figure's plotting library failing, a full disk) is recorded in the result's
`step_errors['report']` and metrics.json is written again with that record: the gate
reads metrics.json, never the report.
"""

from __future__ import annotations

import os
from pathlib import Path

from components.core.benchmark.schema import BenchmarkResult


def metrics_checkpoint(path: str | os.PathLike):
    """A `run_benchmark` checkpoint that writes the result so far to `path`."""
    target = Path(path)

    def write(result: BenchmarkResult) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        result.write_json(target)

    return write


def write_results(result: BenchmarkResult, metrics_path: str | os.PathLike | None,
                  report_path: str | os.PathLike | None) -> str | None:
    """metrics.json, then the report; returns the report's failure (also recorded in the
    result and in metrics.json), None when it was written. A metrics file that cannot be
    written raises (ServoptError naming the path): without it nothing downstream works."""
    if metrics_path is not None:
        result.write_json(metrics_path)
    if report_path is None:
        return None
    from components.core.benchmark.report import write_report
    from components.core.benchmark.run import failure_text

    plots_before = result.step_errors.get("plots")
    try:
        write_report(result, report_path)
    except Exception as err:  # noqa: BLE001 - the measurements stand without a report
        result.step_errors["report"] = failure_text(err)
    failure = result.step_errors.get("report")
    if metrics_path is not None and (failure or result.step_errors.get("plots")
                                     != plots_before):
        result.write_json(metrics_path)
    return failure
