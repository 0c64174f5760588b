"""A benchmark result of a dozen candidate rows, built by hand for the report's layout
tests: the shape of a real run (a baseline, variants on both runtimes, configuration rows
of a search, concurrency sweeps, accuracy), its numbers perturbed from one real run of
small models and bunched on purpose (close speedups, close accuracies) so labels would
collide if nothing placed them."""

from __future__ import annotations

import random

from components.core.benchmark.config import BenchmarkConfig
from components.core.benchmark.schema import (
    AccuracyResult,
    BatchResult,
    BenchmarkResult,
    ConcurrencyResult,
    MachineInfo,
    ModelResult,
    RuntimeInfo,
    SearchRecord,
    SearchStep,
)

BASELINE = "base"
SIZES = (1, 32)
CLIENTS = (1, 2, 4)
# row -> (version, runtime, configuration label, speedup at batch 32, accuracy)
ROWS = {
    "int8@tflite": ("int8", "tflite", "default", 1.62, 0.962),
    "int8@tensorflow": ("int8", "tensorflow", "default", 1.05, 0.968),
    "f32@tflite": ("f32", "tflite", "default", 1.41, 0.970),
    "f32@tensorflow": ("f32", "tensorflow", "default", 1.02, 0.970),
    "optimized": ("optimized", "tensorflow", "default", 1.18, 0.970),
    "pruned@tflite": ("pruned", "tflite", "default", 1.58, 0.955),
    "pruned@tensorflow": ("pruned", "tensorflow", "default", 1.09, 0.957),
    "fp16@tflite": ("fp16", "tflite", "default", 1.37, 0.969),
    "fp16@tensorflow": ("fp16", "tensorflow", "default", 0.97, 0.969),
    "int8@tflite:interpreters_per_pool=4": ("int8", "tflite", "interpreters_per_pool=4",
                                            1.91, 0.962),
    "int8@tflite:interpreters_per_pool=8": ("int8", "tflite", "interpreters_per_pool=8",
                                            1.84, 0.962),
    "optimized@tensorflow:intra_op_threads=1": ("optimized", "tensorflow",
                                                "intra_op_threads=1", 1.22, 0.970),
}
CHOSEN = "int8@tflite:interpreters_per_pool=4"


def _batch(p50: float, speedup: float | None, rng: random.Random) -> BatchResult:
    spread = rng.uniform(0.03, 0.12)
    extra = {} if speedup is None else {
        "speedup_p50": speedup, "speedup_p99": speedup * rng.uniform(0.92, 1.05),
        "speedup_stable": True, "speedup_p50_interval": [speedup * (1 - spread),
                                                         speedup * (1 + spread)],
        "speedup_p99_interval": [speedup * (1 - 2 * spread), speedup * (1 + 2 * spread)],
        "throughput_ratio": speedup, "throughput_ratio_interval": [
            speedup * (1 - spread), speedup * (1 + spread)], "confidence": 0.95}
    return BatchResult(p50_ms=p50, p90_ms=p50 * 1.2, p95_ms=p50 * 1.3, p99_ms=p50 * 1.6,
                       mean_ms=p50 * 1.05, std_ms=p50 / 10, min_ms=p50 * 0.9,
                       max_ms=p50 * 2, throughput=1000 * 32 / p50 if p50 > 1 else 1000 / p50,
                       stable=True, windows=6, requests=300, **extra)


def _sweep(p50_by_size: dict[int, float], rng: random.Random) -> list[ConcurrencyResult]:
    points = []
    for size, p50 in p50_by_size.items():
        for clients in CLIENTS:
            latency = p50 * (1 + 0.7 * (clients - 1)) * rng.uniform(0.95, 1.05)
            points.append(ConcurrencyResult(clients, size, clients * size * 1000 / latency
                                            * rng.uniform(0.9, 1.0), latency, latency * 1.6))
    return points


def dozen_rows(seed: int = 0) -> BenchmarkResult:
    rng = random.Random(seed)
    settings = BenchmarkConfig(batch_sizes=list(SIZES), concurrency=list(CLIENTS),
                               intra_op_threads=2, inter_op_threads=2)
    machine = MachineInfo(cpu_model="Test CPU", cores=2, tensorflow_version="2.21.0",
                          python_version="3.11", platform="Linux")
    base_p50 = {1: 0.31, 32: 4.6}
    models = {BASELINE: ModelResult(
        path="/m/base", role="baseline", size_bytes=1_000_000,
        runtime=RuntimeInfo("tensorflow", BASELINE, {}, []),
        batches={s: _batch(p, None, rng) for s, p in base_p50.items()},
        concurrency=_sweep(base_p50, rng), accuracy=AccuracyResult(0.970, None, None, 300))}
    for row, (version, runtime, label, speedup, accuracy) in ROWS.items():
        small = speedup * rng.uniform(0.8, 1.1)
        p50 = {1: base_p50[1] / small, 32: base_p50[32] / speedup}
        default = label == "default"
        models[row] = ModelResult(
            path=f"/m/{version}", role="candidate", size_bytes=500_000,
            runtime=RuntimeInfo(runtime, version, {}, [], label=label),
            batches={1: _batch(p50[1], small, rng), 32: _batch(p50[32], speedup, rng)},
            concurrency=_sweep(p50, rng) if default else [],
            accuracy=AccuracyResult(accuracy, 1 - abs(0.970 - accuracy) * rng.uniform(1, 3),
                                    0.01, 300))
    search = SearchRecord(
        objective="p50_ms", batch_size=32, budget_s=120, elapsed_s=80,
        contenders=["int8@tflite", "optimized"],
        best={"int8@tflite": CHOSEN, "optimized": "optimized@tensorflow:intra_op_threads=1"},
        steps=[SearchStep("tflite_interpreters_per_pool",
                          ["int8@tflite:interpreters_per_pool=4",
                           "int8@tflite:interpreters_per_pool=8"],
                          {"int8@tflite": "interpreters_per_pool=4 won"})],
        stopped="every knob was tried")
    return BenchmarkResult(machine, settings, BASELINE, models, search)
