"""`servopt zoo run`: the whole pipeline on a zoo of models, each stage timed and measured.

For each model: build its SavedModel and examples (a child process, stage `build`), then
run the whole pipeline on them as `servopt kfp run-local` does (components.kfp.pipeline
.run_local: freeze, optimize, quantize and its variants with verification, the benchmark
with its configuration search, the gate and the push), in a child process whose tree
zoo_monitor samples: per stage (kfp task) its wall time and peak memory. The record
(JSON) is written again after every model, so a model that fails or a run cut short
loses nothing measured; `servopt zoo table` renders it as the docs' table (zoo_table).

Models are (name, builder) entries: `ZOO` below. A builder is "module:function" taking
the output directory and returning the SavedModel's path; an entry whose builder cannot
be imported is recorded as skipped with the reason (a builder of a module not
installed, e.g. tensorflow-text's models without tensorflow-text).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from components.core.errors import ServoptError
from pipelines.zoo_monitor import ProcessTreeMonitor

DEFAULT_EXAMPLES = "pipelines.zoo_models:write_examples"
# The benchmark's workers hold at most this much (BenchmarkConfig.memory_budget_mb), what a
# machine or pod of 6 GB leaves them beside the pipeline's own processes: the zoo measures
# the pipeline as it runs there, not as on the 24 GB machine it may run on.
WORKERS_MEMORY_MB = 4096


@dataclass(frozen=True)
class ZooModel:
    name: str
    builder: str  # "module:function": f(out: Path) -> Path (a SavedModel)
    batch_sizes: tuple[int, ...]
    examples: str = DEFAULT_EXAMPLES  # "module:function": f(model, out, count) -> Path
    num_examples: int = 64
    note: str = ""


ZOO: tuple[ZooModel, ...] = (
    ZooModel("demo-cnn", "pipelines.zoo_models:export_demo_cnn", (1, 100),
             examples="pipelines.zoo_models:digits_examples",
             note="the digits demo's CNN, trained as the demo trains it; the digits eval "
                  "split, true labels"),
    ZooModel("mobilenet_v2", "pipelines.zoo_models:export_mobilenet_v2", (1, 16),
             note="keras.applications, weights=None, 224x224x3; labels: its own top-1"),
    ZooModel("resnet50", "pipelines.zoo_models:export_resnet50", (1, 16),
             note="keras.applications, weights=None, 224x224x3; labels: its own top-1"),
    ZooModel("bert-encoder", "pipelines.zoo_text:export_transformer_encoder", (1, 100),
             note="a BERT-like encoder, 2 blocks, width 32 (token ids and padding mask "
                  "in); labels: its own top-1"),
    ZooModel("text-tokenizing", "pipelines.zoo_text:export_text_classifier", (1, 100),
             note="raw strings in, TF Text tokenization in the graph; labels: its own "
                  "top-1"),
)


def find(names: list[str] | None) -> list[ZooModel]:
    """The zoo's entries named in `names` (all when None), in the zoo's order."""
    if not names:
        return list(ZOO)
    known = {model.name: model for model in ZOO}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ServoptError(f"unknown zoo model '{unknown[0]}'; choose from "
                           f"{', '.join(known)}")
    return [model for model in ZOO if model.name in names]


def load_function(reference: str):
    """'module:function' -> the function; ServoptError saying what is missing."""
    module_name, _, function = reference.partition(":")
    try:
        return getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as err:
        raise ServoptError(f"{reference} is not available ({type(err).__name__}: {err})"
                           ) from None


def available(model: ZooModel) -> str | None:
    """Why `model` cannot be built here (its builder or examples writer is missing), None
    when it can. Imports the builders' modules (TensorFlow): call it in a child."""
    for reference in (model.builder, model.examples):
        try:
            load_function(reference)
        except ServoptError as err:
            return str(err)
    return None


# ------------------------------------------------------------------- child processes

def _build(model: ZooModel, workdir: Path) -> dict:
    """Child: the SavedModel and its examples under `workdir`."""
    reason = available(model)
    if reason:
        return {"skipped": reason}
    model_dir = workdir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    saved = load_function(model.builder)(model_dir)
    examples = load_function(model.examples)(Path(saved), workdir / "examples",
                                             model.num_examples)
    return {"model": str(saved), "examples": str(examples)}


def _pipeline(model: ZooModel, workdir: Path, built: dict) -> dict:
    """Child: the whole pipeline (`servopt kfp run-local`'s library call)."""
    from components.core.gate import Thresholds
    from components.kfp.mapping import parameter_value
    from components.kfp.pipeline import DEFAULT_BENCHMARK_SETTINGS, run_local

    thresholds = Thresholds.from_yaml()
    # As the demo's destination (pipelines.digits.config.DEMO_OVERLAY): a server started
    # with --prefer_tflite_model=true, so a TFLite variant's pair can be pushed (the
    # decision's server command carries the flag); with TF Serving's default (false) the
    # gate judges its saved_model.pb instead.
    server = dataclasses.replace(thresholds.server, prefer_tflite_model=True)
    thresholds = dataclasses.replace(thresholds, server=server,
                                     primary_batch_size=max(model.batch_sizes))
    serving = workdir / "serving" / model.name
    run = run_local(built["model"], built["examples"], serving, workdir / "pipeline",
                    batch_sizes=list(model.batch_sizes),
                    thresholds=parameter_value(thresholds.to_dict()),
                    benchmark_settings={**DEFAULT_BENCHMARK_SETTINGS,
                                        "memory_budget_mb": WORKERS_MEMORY_MB})
    return {"run_dir": str(run.run_dir), "results": str(run.results),
            "decision": run.decision, "pushed": run.pushed,
            "model_metadata": run.model_metadata}


SPEC_FILE = "model.json"


def child_main(argv: list[str]) -> int:
    """`python -m pipelines.zoo build|pipeline WORKDIR`: the model WORKDIR/model.json
    names; writes WORKDIR/STEP.json."""
    step, workdir = argv[0], Path(argv[1])
    spec = json.loads((workdir / SPEC_FILE).read_text())
    model = ZooModel(**{**spec, "batch_sizes": tuple(spec["batch_sizes"])})
    if step == "build":
        output = _build(model, workdir)
    else:
        from components.core.keras_deferred import defer_keras

        defer_keras()  # as `servopt kfp run-local` does: the orchestrator runs no Keras
        output = _pipeline(model, workdir, json.loads((workdir / "build.json").read_text()))
    (workdir / f"{step}.json").write_text(json.dumps(output, indent=2, default=str))
    return 0


# ------------------------------------------------------------------- the parent

def cpu_description() -> dict:
    """The CPU every figure was measured on (read from /proc/cpuinfo, no TensorFlow)."""
    model, flags = platform.processor() or "unknown", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("unknown", platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value.split()
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx_vnni")
    return {"cpu_model": model, "cores": len(os.sched_getaffinity(0)),
            "cpu_features": [flag for flag in wanted if flag in flags],
            "platform": platform.platform(), "python": platform.python_version()}


def _usage(monitor: ProcessTreeMonitor, started: float) -> dict:
    return {"wall_s": round(time.monotonic() - started, 1),
            "peak_memory_bytes": monitor.peak_memory_bytes,
            "stages": {name: u.to_dict() for name, u in sorted(
                dict(monitor.stages).items(), key=lambda item: item[1].first_seen_s)}}


def _child(step: str, model: ZooModel, workdir: Path, log, say,
           partial=lambda usage: None) -> tuple[dict, dict]:
    """Runs one child step under the monitor: (its JSON output, its stages' usage);
    `partial` gets the usage so far every minute (the record is written with it)."""
    command = [sys.executable, "-m", "pipelines.zoo", step, str(workdir)]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               cwd=Path(__file__).resolve().parent.parent)
    monitor = ProcessTreeMonitor(process.pid).start()
    last_said = started
    while process.poll() is None:
        time.sleep(1.0)
        if time.monotonic() - last_said >= 60:
            stages = dict(monitor.stages)
            latest = max((u.last_seen_s for u in stages.values()), default=0.0)
            running = [s for s, u in stages.items()
                       if u.last_seen_s >= latest and s != "orchestrator"]
            say(f"  {model.name}: {step} running for {time.monotonic() - started:.0f} s "
                f"({', '.join(sorted(running)) or 'starting'})")
            last_said = time.monotonic()
            partial(_usage(monitor, started))
    monitor.stop()
    usage = _usage(monitor, started)
    output_file = workdir / f"{step}.json"
    if process.returncode != 0 or not output_file.is_file():
        return {"error": f"{step} failed (exit code {process.returncode}); its log: "
                         f"{log.name}"}, usage
    return json.loads(output_file.read_text()), usage


def run_zoo(models: list[ZooModel], workdir: Path, record_path: Path,
            say=print) -> dict:
    """Runs the zoo; returns the record, written to `record_path` after every model."""
    workdir = workdir.resolve()
    record = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": cpu_description(), "models": []}
    for model in models:
        entry = {"name": model.name, "note": model.note,
                 "batch_sizes": list(model.batch_sizes)}
        record["models"].append(entry)
        model_dir = workdir / model.name
        model_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("build.json", "pipeline.json"):
            (model_dir / stale).unlink(missing_ok=True)
        (model_dir / SPEC_FILE).write_text(json.dumps(dataclasses.asdict(model)))
        started = time.monotonic()
        with open(model_dir / "log.txt", "w") as log:
            say(f"{model.name}: building the model and its examples")
            entry["status"] = "running"

            def partial(usage: dict, key: str = "build", entry: dict = entry) -> None:
                entry[key] = usage
                _write(record, record_path)

            built, build_usage = _child("build", model, model_dir, log, say, partial)
            entry["build"] = build_usage
            if "skipped" in built or "error" in built:
                entry["status"] = "skipped" if "skipped" in built else "failed"
                entry["reason"] = built.get("skipped") or built.get("error")
                say(f"{model.name}: {entry['status']}: {entry['reason']}")
                _write(record, record_path)
                continue
            say(f"{model.name}: the whole pipeline (kfp run-local)")
            output, usage = _child("pipeline", model, model_dir, log, say,
                                   lambda usage: partial(usage, "pipeline"))
        entry["pipeline"] = usage
        entry["total_s"] = round(time.monotonic() - started, 1)
        if "error" in output:
            entry.update(status="failed", reason=output["error"])
        else:
            entry.update(status="done", **summarize(output, model.batch_sizes))
        say(f"{model.name}: {entry['status']} in {entry['total_s']:.0f} s")
        _write(record, record_path)
    _write(record, record_path)
    return record


def _write(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, path)


def summarize(output: dict, batch_sizes: tuple[int, ...]) -> dict:
    """What the table shows of one pipeline run: variants made or skipped, the pushed
    pair with its speedups at batch 1 and the largest batch, accuracy and agreement, what
    the benchmark's budget left out and the steps that failed."""
    from components.core.benchmark.schema import load_metrics

    variants = {}
    for output_name, metadata in output["model_metadata"].items():
        produced = bool(metadata.get("produced", 1))
        variants[output_name] = ({"produced": True} if produced else
                                 {"produced": False,
                                  "reason": metadata.get("skipped_reason") or ""})
    decision = output["decision"]
    summary = {"variants": variants, "blessed": bool(decision.get("blessed")),
               "chosen": decision.get("chosen_pair") or decision.get("chosen"),
               "reason": decision.get("reason", ""),
               "pushed_version": (output.get("pushed") or {}).get("version")}
    metrics_file = Path(output["results"]) / "metrics.json"
    if not metrics_file.is_file():
        summary["benchmark"] = "no metrics.json"
        return summary
    result = load_metrics(metrics_file)
    baseline = result.models.get(result.baseline)
    summary["baseline_accuracy"] = baseline.accuracy_value("accuracy") if baseline else None
    row = decision.get("row") or decision.get("chosen")
    chosen = result.models.get(row) if row else None
    if chosen is not None:
        summary["pushed"] = {
            "row": row,
            "speedup_p50": {str(size): (chosen.at(size).speedup_p50 if chosen.at(size)
                                        else None) for size in (1, max(batch_sizes))},
            "accuracy": chosen.accuracy_value("accuracy"),
            "top1_agreement": chosen.accuracy_value("top1_agreement")}
    summary["benchmark"] = {
        "rows": len(result.models), "failed": len(result.failed()),
        "budget": result.budget.to_dict() if result.budget else None,
        "step_errors": {**result.step_errors,
                        **{f"{name}: {step}": error for name, model in result.models.items()
                           for step, error in model.step_errors.items()}}}
    return summary


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
