"""The model zoo's tables (Markdown), rendered from a recorded run (pipelines/zoo.py).

Every figure comes from the record; the header names the CPU, its cores and the date of
the run. `servopt zoo table RECORD.json` prints them (or writes them with --output).
"""

from __future__ import annotations

import json
from pathlib import Path

from components.core.errors import ServoptError

# The pipeline's stages as kfp.local runs them, in order (others follow as recorded).
STAGE_ORDER = ("freeze", "optimize", "quantize", "benchmark", "gate", "push")
# The run's own process (kfp.local): alive throughout, so its time is the whole run's.
STAGE_LABELS = {"orchestrator": "kfp.local itself (whole run)"}


def read_record(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ServoptError(f"{path}: no such zoo record; run `servopt zoo run` first"
                           ) from None
    except (OSError, json.JSONDecodeError) as err:
        raise ServoptError(f"{path}: not a zoo record ({err}); run `servopt zoo run` again"
                           ) from None
    if not isinstance(record, dict) or not isinstance(record.get("models"), list):
        raise ServoptError(f"{path}: not a zoo record (no 'models' list); pass the JSON "
                           "`servopt zoo run` wrote")
    return record


def _time(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _gb(value) -> str:
    return f"{value / 1e9:.2f} GB" if value else ""


def _x(value) -> str:
    return f"{value:.2f}x" if value is not None else ""


def _pct(value) -> str:
    return f"{value:.1%}" if value is not None else ""


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _peak(entry: dict) -> int:
    return max((entry.get(part) or {}).get("peak_memory_bytes") or 0
               for part in ("build", "pipeline"))


def summary_table(record: dict) -> list[str]:
    lines = ["| model | batches | status | whole pipeline | peak memory | pushed | "
             "speedup p50 @1 | @largest | accuracy | top-1 agreement |",
             "|---|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for entry in record["models"]:
        pushed = entry.get("pushed") or {}
        speedups = pushed.get("speedup_p50") or {}
        largest = str(max(entry.get("batch_sizes") or [1]))
        status = entry.get("status", "")
        if status != "done":
            status = f"{status}: {entry.get('reason', '')}"
        chosen = (entry.get("chosen") or "") if entry.get("blessed") else \
            f"nothing ({entry.get('reason', '')})" if status == "done" else ""
        lines.append("| " + " | ".join(_cell(c) for c in (
            entry["name"], ", ".join(map(str, entry.get("batch_sizes", []))), status,
            _time((entry.get("pipeline") or {}).get("wall_s")), _gb(_peak(entry)), chosen,
            _x(speedups.get("1")), _x(speedups.get(largest)),
            _pct(pushed.get("accuracy")), _pct(pushed.get("top1_agreement")))) + " |")
    return lines


def stages_table(record: dict) -> list[str]:
    """Per model and stage: wall time and peak memory (the stage's processes at once)."""
    lines = ["| model | stage | time | peak memory | largest process |",
             "|---|---|---:|---:|---:|"]
    for entry in record["models"]:
        build = entry.get("build") or {}
        if build:
            lines.append(f"| {_cell(entry['name'])} | build model + examples | "
                         f"{_time(build.get('wall_s'))} | {_gb(build.get('peak_memory_bytes'))} "
                         "| |")
        stages = (entry.get("pipeline") or {}).get("stages") or {}
        ordered = [s for s in STAGE_ORDER if s in stages] + [
            s for s in stages if s not in STAGE_ORDER]
        for stage in ordered:
            usage = stages[stage]
            lines.append(f"| {_cell(entry['name'])} | {_cell(STAGE_LABELS.get(stage, stage))} | "
                         f"{_time(usage.get('wall_s'))} | {_gb(usage.get('peak_memory_bytes'))} "
                         f"| {_gb(usage.get('peak_process_bytes'))} |")
    return lines


def variants_table(record: dict) -> list[str]:
    lines = ["| model | variant | made | why not |", "|---|---|---|---|"]
    for entry in record["models"]:
        for name, variant in (entry.get("variants") or {}).items():
            lines.append(f"| {_cell(entry['name'])} | {_cell(name)} | "
                         f"{'yes' if variant.get('produced') else 'no'} | "
                         f"{_cell(variant.get('reason', ''))} |")
    return lines


def budget_lines(record: dict) -> list[str]:
    """What each benchmark's time budget left out and the steps that failed."""
    lines = []
    for entry in record["models"]:
        benchmark = entry.get("benchmark")
        if not isinstance(benchmark, dict):
            continue
        budget = benchmark.get("budget") or {}
        text = (f"- {entry['name']}: benchmark {benchmark.get('rows')} rows, "
                f"{benchmark.get('failed')} not measured or failed; measuring took "
                f"{_time(budget.get('elapsed_s'))} of a {budget.get('budget_s')} s budget")
        if budget.get("stopped"):
            text += f" ({budget['stopped']})"
        lines.append(text)
        for step, error in (benchmark.get("step_errors") or {}).items():
            lines.append(f"  - {step} failed: {error}")
    return lines


def caption(record: dict) -> str:
    """The CPU, its cores and features, and the date of the run."""
    machine = record.get("machine") or {}
    features = ", ".join(machine.get("cpu_features") or []) or "none of note"
    return (f"Measured on {machine.get('cpu_model', 'an unknown CPU')} "
            f"({machine.get('cores', '?')} cores; {features}), {record.get('date', '')}, "
            "one run of `servopt zoo run`.")


def render(record: dict) -> str:
    parts = [caption(record), "", *summary_table(record), "",
             "Per stage (wall time; peak memory: the stage's processes at once, each "
             "counting its share of shared pages (Pss), sampled every 0.5 s; largest "
             "process: its own peak resident memory):", "", *stages_table(record), "",
             "Variants:", "", *variants_table(record)]
    budget = budget_lines(record)
    if budget:
        parts += ["", "Benchmark budget:", "", *budget]
    return "\n".join(parts) + "\n"
