"""`servopt demo`: the digits pipeline end to end on embedded defaults, with progress.

Runs pipelines/digits locally (BeamDagRunner or LocalDagRunner) on an embedded SQLite
ML Metadata store under the work directory, shows each component as MLMD records it,
and ends with what each stage produced, read back from MLMD.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from absl import logging as absl_logging
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from components.core.config import DEFAULT_RECIPE
from pipelines.local_runner import METADATA_FILE, PIPELINE_ROOT, run_pipeline
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
    executions: list[ExecutionRecord]


def run_demo(workdir: Path, runner: str = "beam", config_path: Path = DEFAULT_RECIPE,
             console: Console | None = None, verbose: bool = False) -> DemoResult:
    console = console or Console(stderr=True)
    metadata_path = workdir / METADATA_FILE
    if not verbose:
        absl_logging.set_verbosity(absl_logging.ERROR)
    from pipelines.digits.pipeline import create_pipeline

    total = len(create_pipeline(workdir / PIPELINE_ROOT, metadata_path,
                                config_path).components)
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
            run_pipeline(workdir, runner, config_path)
        finally:
            done.set()
            watcher.join()
    store = open_store(metadata_path)
    executions = run_executions(store, latest_run_id(store))
    progress_done = len(executions)
    if progress_done:
        console.print(f"[green]pipeline finished[/]: {progress_done} components")
    return DemoResult(workdir, metadata_path, workdir / PIPELINE_ROOT, executions)


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


def stage_table(result: DemoResult) -> Table:
    table = Table(title="digits pipeline: what each stage produced (from ML Metadata)")
    for column in ("stage", "run", "size", "nodes", "variables", "verification"):
        table.add_column(column, justify="left" if column in ("stage", "run") else "right")
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
                      _verification_text(props))
        if "tflite_model" in record.outputs:
            tflite = custom_properties(record.outputs["tflite_model"][0])
            if tflite.get("produced"):
                table.add_row(f"{record.component} (TFLite {tflite['tflite_mode']})",
                              record.state, f"{tflite['size_bytes_total'] / 1e6:.2f} MB", "",
                              "", _verification_text(tflite))
            else:
                table.add_row(f"{record.component} (TFLite)", record.state, "", "", "",
                              f"skipped: {tflite.get('skipped_reason', '')}")
    return table


def _verification_text(props: dict) -> str:
    if "verification_passed" not in props:
        eval_accuracy = props.get("eval_accuracy")
        return f"eval accuracy {eval_accuracy:.1%}" if eval_accuracy is not None else ""
    text = f"max abs diff {props['verification_max_abs_diff']:.1e}"
    if "verification_top1_agreement" in props:
        text += f", top-1 {props['verification_top1_agreement']:.1%}"
    return ("passed: " if props["verification_passed"] else "FAILED: ") + text
