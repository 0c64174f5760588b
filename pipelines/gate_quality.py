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

from components.core.benchmark import (
    BenchmarkConfig,
    BenchmarkResult,
    BenchmarkSession,
    ModelSpec,
    machine_info,
)
from components.core.benchmark.stats import INCONCLUSIVE, NOT_REGRESSED, REGRESSED
from components.core.gate import Thresholds, evaluate_gate
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


def open_session(paths: dict[str, Path], config: BenchmarkConfig) -> BenchmarkSession:
    """One worker per model, started and loaded once: every trial then measures them in
    fresh interleaved rounds (warm-up, windows, stability) exactly as a benchmark run does
    (BenchmarkSession, the benchmark library's hook for repeated trials). Starting three
    TensorFlow processes costs ~2 min on this loaded 2-core machine, which 10 fresh
    benchmark runs could not afford."""
    return BenchmarkSession([ModelSpec(name, path) for name, path in paths.items()], config,
                            progress=lambda line: print(line, flush=True))


def one_run(session: BenchmarkSession, paths: dict[str, Path],
            thresholds: Thresholds) -> dict:
    metrics: BenchmarkResult = session.measure()
    decision = evaluate_gate(metrics, thresholds, {NOISE: paths[NOISE],
                                                   SLOWER: paths[SLOWER]})
    run = {}
    for name in (NOISE, SLOWER):
        entry = metrics.models[name].at(thresholds.primary_batch_size)
        result = decision.candidate(name)
        [speedup] = [c for c in decision.checks_for(name)
                     if c.threshold == "vs_baseline.min_speedup_p50"]
        run[name] = {"outcome": speedup.outcome, "blocked": not result.passed,
                     **{key: getattr(entry, key) if entry else None
                        for key in ("speedup_p50", "speedup_p50_interval", "windows",
                                    "other_cpu", "busy_windows", "stable")},
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
    settings = dataclasses.replace(  # the batches the gate reads; no concurrency sweep
        BenchmarkConfig.from_yaml(args.benchmark).for_run(),
        batch_sizes=thresholds.batch_sizes, concurrency=(),
        **thresholds.decision_lines()).resolved()
    args.work.mkdir(parents=True, exist_ok=True)
    paths = build_models(args.work)
    with open_session(paths, settings) as session, ExitStack() as spinners:
        for _ in range(args.busy):
            spinner = multiprocessing.get_context("spawn").Process(target=spin, daemon=True)
            spinner.start()
            spinners.callback(spinner.terminate)
        runs = trials(args.runs, session, paths, thresholds, settings)
    report(runs, thresholds, args.out, args.busy)


def spin() -> None:
    """A competing process that keeps one core busy until it is terminated."""
    while True:
        pass


def trials(count: int, session: BenchmarkSession, paths: dict[str, Path], thresholds: Thresholds,
           settings: BenchmarkConfig) -> list[dict]:
    machine = machine_info()
    print(f"{count} runs on {machine.cpu_model}, {machine.cores} cores "
          f"(avx512_bf16: {'avx512_bf16' in cpu_flags()}), batch "
          f"{thresholds.primary_batch_size}, windows of {settings.window_seconds} s",
          flush=True)
    runs = []
    for index in range(count):
        start = time.monotonic()
        run = one_run(session, paths, thresholds)
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
    for key, what in (("copy", "identical copy"), ("slower", "15% more work")):
        print(f"{what}: " + "; ".join(
            f"{outcome} {c['count']}/{c['runs']} (95% CI {c['interval'][0]:.2f}-"
            f"{c['interval'][1]:.2f})" for outcome, c in summary[key].items()))
    print(f"speedup p50, copy: {summary['copy_speedup_p50']}; "
          f"slower: {summary['slower_speedup_p50']}; busy processes: {busy}")
    if out:
        out.write_text(json.dumps({"machine": vars(machine_info()), "busy_processes": busy,
                                   "summary": summary, "thresholds": thresholds.to_dict(),
                                   "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
