"""How often the gate mistakes noise for a regression, and how often it catches a real one.

Runs the benchmark and the PusherGate N times with the shipped settings
(configs/benchmark.yaml, configs/thresholds.yaml) on three models: the seed CNN
(baseline), an identical copy of it (noise only: any block is a false block) and the seed
CNN with one extra layer, ~15% more work (a Conv2D 128->128 3x3 on its last 3x3x128
map: +1.33 M multiply-adds on 8.3 M; every block of it is a detection). Both candidates
are measured in the same interleaved run and judged independently against the baseline.

    python3 -m uv run python -m pipelines.gate_quality --runs 10 --out gate_quality.json

Prints one line per run and the rates; the JSON holds every run's speedups and reasons.
The accuracy thresholds are left out (the slower model is a different network, so its
top-1 agreement says nothing about latency): every block here is a latency decision.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import time
from contextlib import ExitStack
from pathlib import Path

from components.core.benchmark.config import BenchmarkConfig, ModelSpec
from components.core.benchmark.engines import resolve_model
from components.core.benchmark.feeds import input_pools, read_signature
from components.core.benchmark.machine import machine_info
from components.core.benchmark.run import fill_batches, size_on_disk
from components.core.benchmark.runtimes import engine_spec, plan_rows, runtime_info
from components.core.benchmark.scheduler import interleaved_rounds
from components.core.benchmark.schema import BASELINE, CANDIDATE, SCHEMA_VERSION, ModelResult
from components.core.benchmark.worker import ProcessRunner
from components.core.gate import Thresholds, evaluate_gate
from components.core.gate.metrics import batch_entry
from components.core.requirements import cpu_flags

NOISE, SLOWER = "copy", "slower"


def build_models(work: Path) -> dict[str, Path]:
    """The baseline, its copy and the one-layer-slower model (built once, kept in work)."""
    import keras

    from pipelines.digits.model import seed_cnn

    paths = {"baseline": work / "baseline", NOISE: work / NOISE, SLOWER: work / SLOWER}
    if not paths["baseline"].exists():
        keras.utils.set_random_seed(0)
        seed_cnn().export(str(paths["baseline"]), verbose=False)
    if not paths[NOISE].exists():
        shutil.copytree(paths["baseline"], paths[NOISE])
    if not paths[SLOWER].exists():
        keras.utils.set_random_seed(0)
        model = seed_cnn()
        flatten = next(layer for layer in model.layers if layer.name.startswith("flatten"))
        x = keras.layers.Conv2D(128, 3, padding="same", activation="relu")(flatten.input)
        for layer in model.layers[model.layers.index(flatten):]:
            x = layer(x)
        keras.Model(model.inputs, x).export(str(paths[SLOWER]), verbose=False)
    return paths


class Workers:
    """One worker per model, started and loaded once: every trial then measures them in
    fresh interleaved rounds (warm-up, windows, stability) exactly as a benchmark run does.
    Starting three TensorFlow processes costs ~2 min on this loaded 2-core machine, which
    10 fresh benchmark runs could not afford."""

    def __init__(self, paths: dict[str, Path], config: BenchmarkConfig, cleanup: ExitStack):
        models = [ModelSpec(name, path) for name, path in paths.items()]
        self.rows = plan_rows(models, {m.name: resolve_model(m.path) for m in models})
        self.config = config
        first = self.rows[0]
        pools = input_pools(read_signature(first.path, first.runtime, config.signature),
                            config.batch_sizes, config.input_pool, config.seed)
        self.runners = {}
        for row in self.rows:
            runner = ProcessRunner(engine_spec(row, config))
            cleanup.callback(runner.close)
            self.runners[row.name] = runner
        for runner in self.runners.values():
            runner.load(pools[config.batch_sizes[0]][0])
            for size, pool in pools.items():
                runner.set_inputs(size, pool)

    def benchmark(self) -> dict:
        """One trial: interleaved rounds at each batch size, as metrics.json holds them."""
        baseline = self.rows[0].name
        results = {row.name: ModelResult(path=str(row.model.path),
                                         role=BASELINE if row.name == baseline else CANDIDATE,
                                         runtime=runtime_info(row, self.config),
                                         size_bytes=size_on_disk(row.path))
                   for row in self.rows}
        series: dict = {name: {} for name in results}
        for size in self.config.batch_sizes:
            outcome = interleaved_rounds(self.runners, size, self.config)
            for name, measured in outcome.series.items():
                series[name][size] = measured
        fill_batches(results, series, baseline)
        return {"schema_version": SCHEMA_VERSION, "baseline": baseline,
                "models": {name: result.to_dict() for name, result in results.items()}}


def one_run(workers: Workers, paths: dict[str, Path], thresholds: Thresholds) -> dict:
    metrics = workers.benchmark()
    decision = evaluate_gate(metrics, thresholds, {NOISE: paths[NOISE],
                                                   SLOWER: paths[SLOWER]})
    run = {}
    for name in (NOISE, SLOWER):
        entry = batch_entry(metrics["models"][name], thresholds.primary_batch_size) or {}
        result = decision.candidate(name)
        run[name] = {"blocked": not result.passed, "speedup_p50": entry.get("speedup_p50"),
                     "speedup_p99": entry.get("speedup_p99"), "stable": entry.get("stable"),
                     "speedup_stable": entry.get("speedup_stable"),
                     "windows": entry.get("windows"), "blocked_by": result.blocked_by}
    return run


def summarize(runs: list[dict]) -> dict:
    def speedups(name: str) -> list[float]:
        return sorted(r[name]["speedup_p50"] for r in runs if r[name]["speedup_p50"])

    noise, slower = speedups(NOISE), speedups(SLOWER)
    summary = {
        "runs": len(runs),
        "false_blocks": sum(r[NOISE]["blocked"] for r in runs),
        "detections": sum(r[SLOWER]["blocked"] for r in runs),
        "noise_speedup_p50": {"min": noise[0], "median": statistics.median(noise),
                              "max": noise[-1]} if noise else None,
        "slower_speedup_p50": {"min": slower[0], "median": statistics.median(slower),
                               "max": slower[-1]} if slower else None,
    }
    if noise and slower and slower[-1] < noise[0]:
        summary["separating_min_speedup_p50"] = [slower[-1], noise[0]]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("/tmp/servopt-gate-quality"))
    parser.add_argument("--thresholds", type=Path, default=None,
                        help="default: the packaged thresholds.yaml")
    parser.add_argument("--benchmark", type=Path, default=None,
                        help="default: the packaged benchmark.yaml")
    parser.add_argument("--out", type=Path, default=None, help="write every run as JSON")
    args = parser.parse_args()

    thresholds = Thresholds.from_yaml(args.thresholds)
    thresholds = dataclasses.replace(thresholds, vs_baseline=dataclasses.replace(
        thresholds.vs_baseline, max_accuracy_drop=None, min_top1_agreement=None))
    settings = dataclasses.replace(  # the batch the gate reads; no concurrency sweep
        BenchmarkConfig.from_yaml(args.benchmark).for_run(),
        batch_sizes=(thresholds.primary_batch_size,), concurrency=()).resolved()
    args.work.mkdir(parents=True, exist_ok=True)
    paths = build_models(args.work)
    cleanup = ExitStack()
    with cleanup:
        workers = Workers(paths, settings, cleanup)
        runs = trials(args.runs, workers, paths, thresholds, settings)
    report(runs, thresholds, args.out)


def trials(count: int, workers: Workers, paths: dict[str, Path], thresholds: Thresholds,
           settings: BenchmarkConfig) -> list[dict]:
    machine = machine_info()
    print(f"{count} runs on {machine.cpu_model}, {machine.cores} cores "
          f"(avx512_bf16: {'avx512_bf16' in cpu_flags()}), batch "
          f"{thresholds.primary_batch_size}, windows of {settings.window_seconds} s",
          flush=True)
    runs = []
    for index in range(count):
        start = time.monotonic()
        run = one_run(workers, paths, thresholds)
        runs.append(run)
        print(f"run {index + 1}: " + "; ".join(
            f"{name} x{run[name]['speedup_p50'] or 0:.3f} "
            f"{'BLOCKED' if run[name]['blocked'] else 'passed'}"
            f"{'' if run[name]['stable'] else ' (unstable)'}" for name in (NOISE, SLOWER))
            + f" [{time.monotonic() - start:.0f} s]", flush=True)
        for name in (NOISE, SLOWER):
            if run[name]["blocked"] and name == NOISE:
                print(f"  false block: {'; '.join(run[name]['blocked_by'])}", flush=True)
    return runs


def report(runs: list[dict], thresholds: Thresholds, out: Path | None) -> None:
    summary = summarize(runs)
    print(f"false blocks (identical copy): {summary['false_blocks']}/{len(runs)}; "
          f"detections (15% slower): {summary['detections']}/{len(runs)}")
    print(f"speedup p50, copy: {summary['noise_speedup_p50']}; "
          f"slower: {summary['slower_speedup_p50']}")
    if out:
        out.write_text(json.dumps({"machine": vars(machine_info()), "summary": summary,
                                        "thresholds": thresholds.to_dict(),
                                        "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
