"""`servopt demo`: the digits pipeline end to end on embedded defaults, with progress.

Runs pipelines/digits locally (BeamDagRunner or LocalDagRunner) on an embedded SQLite
ML Metadata store under the work directory, shows each component as MLMD records it,
and ends with what each stage produced, read back from MLMD.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from absl import logging as absl_logging
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from components.core.benchmark.schema import BenchmarkResult
from components.core.benchmark.stats import interval_text
from components.core.gate import GateDecision
from components.core.table import Column, Table
from components.quantizer.keys import VARIANT_OUTPUTS
from pipelines.local_runner import (
    METADATA_FILE,
    PIPELINE_ROOT,
    SERVING_DIR,
    local_pipeline,
    run_tfx_pipeline,
    work_directory,
)
from pipelines.mlmd_summary import (
    ExecutionRecord,
    completed_components,
    custom_properties,
    latest_run_id,
    open_store,
    run_executions,
)

MODEL_STAGES = {"DigitsTrainer": "model", "Freezer": "frozen_model",
                "GraphOptimizer": "optimized_model", "Quantizer": "quantized_model"}


@dataclass
class DemoResult:
    workdir: Path
    metadata_path: Path
    pipeline_root: Path
    serving_dir: Path
    executions: list[ExecutionRecord]

    def execution(self, component: str) -> ExecutionRecord | None:
        return next((e for e in self.executions if e.component == component), None)

    def output(self, component: str, key: str):
        record = self.execution(component)
        return record.outputs[key][0] if record and record.outputs.get(key) else None


def run_demo(workdir: Path, runner: str = "beam", config_path: Path | None = None,
             console: Console | None = None, verbose: bool = False) -> DemoResult:
    console = console or Console(stderr=True)
    workdir = work_directory(workdir)  # absolute URIs in ML Metadata and metrics.json
    metadata_path = workdir / METADATA_FILE
    if not verbose:
        absl_logging.set_verbosity(absl_logging.ERROR)
    tfx_pipeline = local_pipeline(workdir, config_path)
    total = len(tfx_pipeline.components)
    previous_run = latest_run_id(open_store(metadata_path)) if metadata_path.exists() else None
    done = threading.Event()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task(f"digits pipeline ({runner})", total=total)
        watcher = threading.Thread(target=_watch, daemon=True,
                                   args=(metadata_path, previous_run, progress, task, done))
        watcher.start()
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            run_tfx_pipeline(tfx_pipeline, runner)
        finally:
            done.set()
            watcher.join()
    store = open_store(metadata_path)
    executions = run_executions(store, latest_run_id(store))
    if executions:
        console.print(f"[green]pipeline finished[/]: {len(executions)} components")
    return DemoResult(workdir, metadata_path, workdir / PIPELINE_ROOT, workdir / SERVING_DIR,
                      executions)


def _watch(metadata_path: Path, previous_run: int | None, progress: Progress, task,
           done: threading.Event) -> None:
    """Moves the progress bar as MLMD records finished components."""
    seen: list[str] = []
    while True:
        finished = done.wait(1.0)
        if metadata_path.exists():
            store = open_store(metadata_path, read_only=True)
            run = latest_run_id(store)
            if run is not None and run != previous_run:
                for name in completed_components(store, run)[len(seen):]:
                    seen.append(name)
                    progress.console.print(f"  [green]✓[/] {name}")
                progress.update(task, completed=len(seen),
                                description=f"digits pipeline: {seen[-1]} done" if seen
                                else "digits pipeline")
        if finished:
            return


def _benchmark_metrics(result: DemoResult) -> dict:
    artifact = result.output("ServingBenchmark", "benchmark")
    if artifact is None or not (Path(artifact.uri) / "metrics.json").is_file():
        return {}
    return json.loads((Path(artifact.uri) / "metrics.json").read_text())


def _measured(metrics: dict, model: str, batch: int) -> tuple[str, str, str]:
    """p99, speedup and accuracy of `model` under its default TF Serving settings; a TFLite
    variant's two rows (its model.tflite and its saved_model.pb, see benchmark.runtimes)
    side by side, "tflite / pb". The settings the search tried are in the search table."""
    result = BenchmarkResult.from_dict(metrics) if metrics.get("models") else None
    rows = [_row_figures(entry.to_dict(), batch) for entry in result.rows_of(model).values()
            if not entry.error and (entry.runtime is None or entry.runtime.label == "default")
            ] if result else []
    if not rows:
        return ("", "", "")
    return tuple(" / ".join(figures) for figures in zip(*rows, strict=True))


def _row_figures(entry: dict, batch: int) -> tuple[str, str, str]:
    measured = entry["batches"].get(str(batch), {})
    p99 = f"{measured['p99_ms']:.2f} ms" if measured.get("p99_ms") is not None else ""
    speedup = measured.get("speedup_p50")
    accuracy = (entry.get("accuracy") or {}).get("accuracy")
    interval = interval_text(measured.get("speedup_p50_interval"))
    return (p99, f"{speedup:.2f}x {interval}".strip() if speedup
            else "baseline" if entry["role"] == "baseline" else "",
            f"{accuracy:.1%}" if accuracy is not None else "")


def stage_table(result: DemoResult, batch: int = 100) -> Table:
    table = Table(title="digits pipeline: what each stage produced (from ML Metadata)",
                  columns=(Column("stage"), Column("run"),
                           *(Column(c, numeric=True) for c in ("size", "nodes", "variables")),
                           Column("verification"),
                           *(Column(c, numeric=True) for c in (
                               f"p99 @{batch}", f"speedup p50 @{batch}", "accuracy"))))
    metrics = _benchmark_metrics(result)
    for record in result.executions:
        key = MODEL_STAGES.get(record.component)
        if key is None or key not in record.outputs:
            continue
        props = custom_properties(record.outputs[key][0])
        if "size_bytes_total" not in props:  # the Trainer's model: measure it now
            from components.core.describe import describe

            described = describe(record.outputs[key][0].uri)
            props.update(size_bytes_total=described.size_bytes.total,
                         node_count=described.node_count,
                         variable_count=described.variable_count)
        table.add_row(record.component, record.state, f"{props['size_bytes_total'] / 1e6:.2f} MB",
                      str(props["node_count"]), str(props["variable_count"]),
                      _verification_text(props), *_measured(metrics, record.component, batch))
        for variant_key in VARIANT_OUTPUTS:
            if variant_key in record.outputs:
                table.add_row(*_variant_row(record, variant_key, metrics, batch))
    return table


def _variant_row(record, key: str, metrics: dict, batch: int) -> tuple[str, ...]:
    artifact = record.outputs[key][0]
    props = custom_properties(artifact)
    name = f"{record.component}-{VARIANT_OUTPUTS[key]}"  # as ServingBenchmark names it
    if not props.get("produced"):
        return (name, record.state, "", "", "", f"skipped: {props.get('skipped_reason', '')}",
                "", "", "")
    text = _verification_text(props)
    if "tflite_verification_max_abs_diff" in props:
        text += (f"; model.tflite {props['tflite_size_bytes'] / 1e6:.2f} MB, max abs diff "
                 f"{props['tflite_verification_max_abs_diff']:.1e}")
    return (name, record.state, f"{props['size_bytes_total'] / 1e6:.2f} MB",
            str(props["node_count"]), str(props["variable_count"]), text,
            *_measured(metrics, name, batch))


def benchmark_result(result: DemoResult) -> BenchmarkResult | None:
    """What the ServingBenchmark measured (its metrics.json), None if it did not run."""
    metrics = _benchmark_metrics(result)
    return BenchmarkResult.from_dict(metrics) if metrics.get("models") else None


def gate_decision(result: DemoResult) -> GateDecision | None:
    blessing = result.output("PusherGate", "blessing")
    if blessing is None or not (Path(blessing.uri) / "decision.json").is_file():
        return None
    return GateDecision.from_dict(json.loads((Path(blessing.uri) / "decision.json").read_text()))


def push_summary(result: DemoResult) -> str:
    pushed = result.output("PusherGate", "pushed_model")
    if pushed is None:
        return "PusherGate did not run"
    props = custom_properties(pushed)
    if props.get("pushed"):
        return (f"pushed '{props['pushed_model_name']}' as version {props['pushed_version']}: "
                f"{props['pushed_destination']}")
    return f"nothing pushed to {result.serving_dir}: {props.get('decision', '')}"


def _verification_text(props: dict) -> str:
    if "verification_passed" not in props:
        eval_accuracy = props.get("eval_accuracy")
        return f"eval accuracy {eval_accuracy:.1%}" if eval_accuracy is not None else ""
    text = f"max abs diff {props['verification_max_abs_diff']:.1e}"
    if "verification_top1_agreement" in props:
        text += f", top-1 {props['verification_top1_agreement']:.1%}"
    return ("passed: " if props["verification_passed"] else "FAILED: ") + text
