"""How often the gate mistakes noise for a regression, and how often it catches a real one.

Runs the benchmark and the PusherGate N times with the shipped settings
(configs/benchmark.yaml, configs/thresholds.yaml, the benchmark measuring until the
gate's speedup threshold is decided, as the demo pipeline does) on three models: the
seed CNN (baseline), an identical copy of it (noise only: "regressed" is a false
alarm) and the seed CNN with one extra layer, ~15% more work (a Conv2D 128->128 3x3 on
its last 3x3x128 map: +1.33 M multiply-adds on 8.3 M; "regressed" is a detection,
"not regressed" a miss). Both candidates are measured in the same interleaved run and
judged independently against the baseline; each gets one of the three outcomes of its
min_speedup_p50 check (regressed, not regressed, inconclusive).

    python3 -m uv run python -m pipelines.gate_quality --runs 10 --out gate_quality.json
    python3 -m uv run python -m pipelines.gate_quality --runs 10 --busy 1   # noise mode

`--busy N` runs N processes that spin on the CPU throughout (a shared CI machine's
neighbours). Prints one line per run and the counts of each outcome with their 95%
Clopper-Pearson intervals; the JSON holds every run's intervals, load and reasons. The
accuracy thresholds are left out (the slower model is a different network, so its top-1
agreement says nothing about latency): every decision here is a latency decision.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
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
from components.core.benchmark.stats import INCONCLUSIVE, NOT_REGRESSED, REGRESSED
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
        fill_batches(results, series, baseline, self.config.confidence)
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
        [speedup] = [c for c in decision.checks_for(name)
                     if c.threshold == "vs_baseline.min_speedup_p50"]
        run[name] = {"outcome": speedup.outcome, "blocked": not result.passed,
                     "speedup_p50": entry.get("speedup_p50"),
                     "speedup_p50_interval": entry.get("speedup_p50_interval"),
                     "windows": entry.get("windows"), "other_cpu": entry.get("other_cpu"),
                     "busy_windows": entry.get("busy_windows"), "stable": entry.get("stable"),
                     "blocked_by": result.blocked_by}
    return run


def rate(count: int, runs: int) -> dict:
    """count/runs with its exact 95% (Clopper-Pearson) interval."""
    from scipy.stats import binomtest

    interval = binomtest(count, runs).proportion_ci(0.95, method="exact")
    return {"count": count, "runs": runs, "interval": [round(interval.low, 3),
                                                      round(interval.high, 3)]}


def summarize(runs: list[dict]) -> dict:
    def speedups(name: str) -> dict | None:
        values = sorted(r[name]["speedup_p50"] for r in runs if r[name]["speedup_p50"])
        return {"min": values[0], "median": statistics.median(values),
                "max": values[-1]} if values else None

    def outcomes(name: str) -> dict:
        return {outcome: rate(sum(r[name]["outcome"] == outcome for r in runs), len(runs))
                for outcome in (REGRESSED, NOT_REGRESSED, INCONCLUSIVE)}

    return {"runs": len(runs), "copy": outcomes(NOISE), "slower": outcomes(SLOWER),
            "copy_speedup_p50": speedups(NOISE), "slower_speedup_p50": speedups(SLOWER),
            "copy_blocked": sum(r[NOISE]["blocked"] for r in runs),
            "slower_blocked": sum(r[SLOWER]["blocked"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("/tmp/servopt-gate-quality"))
    parser.add_argument("--thresholds", type=Path, default=None,
                        help="default: the packaged thresholds.yaml")
    parser.add_argument("--benchmark", type=Path, default=None,
                        help="default: the packaged benchmark.yaml")
    parser.add_argument("--out", type=Path, default=None, help="write every run as JSON")
    parser.add_argument("--busy", type=int, default=0,
                        help="processes that spin on the CPU while measuring (noise mode)")
    args = parser.parse_args()

    thresholds = Thresholds.from_yaml(args.thresholds)
    thresholds = dataclasses.replace(thresholds, vs_baseline=dataclasses.replace(
        thresholds.vs_baseline, max_accuracy_drop=None, min_top1_agreement=None))
    settings = dataclasses.replace(  # the batch the gate reads; no concurrency sweep
        BenchmarkConfig.from_yaml(args.benchmark).for_run(),
        batch_sizes=(thresholds.primary_batch_size,), concurrency=(),
        **thresholds.decision_lines()).resolved()
    args.work.mkdir(parents=True, exist_ok=True)
    paths = build_models(args.work)
    cleanup = ExitStack()
    with cleanup:
        workers = Workers(paths, settings, cleanup)
        for _ in range(args.busy):
            spinner = multiprocessing.get_context("spawn").Process(target=spin, daemon=True)
            spinner.start()
            cleanup.callback(spinner.terminate)
        runs = trials(args.runs, workers, paths, thresholds, settings)
    report(runs, thresholds, args.out, args.busy)


def spin() -> None:
    """A competing process that keeps one core busy until it is terminated."""
    while True:
        pass


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
            f"{name} x{run[name]['speedup_p50'] or 0:.3f} {_interval(run[name])} "
            f"{run[name]['outcome']} ({run[name]['windows']} rounds, others "
            f"{run[name]['other_cpu'] or 0:.0%} CPU)" for name in (NOISE, SLOWER))
            + f" [{time.monotonic() - start:.0f} s]", flush=True)
    return runs


def _interval(run: dict) -> str:
    low, high = run["speedup_p50_interval"] or (None, None)
    return "[no interval]" if low is None else f"[{low:.3f}, {high:.3f}]"


def report(runs: list[dict], thresholds: Thresholds, out: Path | None, busy: int) -> None:
    summary = summarize(runs)
    for name, what in ((NOISE, "identical copy"), ("slower", "15% more work")):
        counts = summary["copy" if name == NOISE else "slower"]
        print(f"{what}: " + "; ".join(
            f"{outcome} {c['count']}/{c['runs']} (95% CI {c['interval'][0]:.2f}-"
            f"{c['interval'][1]:.2f})" for outcome, c in counts.items()))
    print(f"speedup p50, copy: {summary['copy_speedup_p50']}; "
          f"slower: {summary['slower_speedup_p50']}; busy processes: {busy}")
    if out:
        out.write_text(json.dumps({"machine": vars(machine_info()), "busy_processes": busy,
                                   "summary": summary, "thresholds": thresholds.to_dict(),
                                   "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
