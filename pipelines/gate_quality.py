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
from pathlib import Path

from components.core.benchmark import (
    BenchmarkConfig,
    BenchmarkResult,
    BenchmarkSession,
    ModelSpec,
    machine_info,
)
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
        run[name] = {"blocked": not result.passed,
                     **{key: getattr(entry, key) if entry else None
                        for key in ("speedup_p50", "speedup_p99", "stable",
                                    "speedup_stable", "windows")},
                     "blocked_by": result.blocked_by}
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
    with open_session(paths, settings) as session:
        runs = trials(args.runs, session, paths, thresholds, settings)
    report(runs, thresholds, args.out)


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
