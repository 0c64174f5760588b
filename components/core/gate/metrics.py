"""What the gate reads from the ServingBenchmark: the typed `BenchmarkResult` of
components.core.benchmark.schema (metrics.json read by `load_metrics`, the one reader;
a dict in metrics.json's form is parsed by the same schema). One source per figure: the
gate reads every figure the benchmark recorded and computes none of them again.

Per model (`ModelResult`): `role`, `error`, `size_bytes` and the other model-level
measurements, `at(batch size)` (latency percentiles, throughput, `stable`,
`speedup_p50` / `speedup_p99` for candidates) and `accuracy` (`accuracy`,
`top1_agreement`). A served model's metrics, as recorded at its push, are one
`ModelResult`.

A model may have several rows: a TFLite variant is measured as `NAME@tflite` and
`NAME@tensorflow`, each with its `runtime` (`version`: NAME). Candidates are named by
version (`BenchmarkResult.version_of`); rows without `runtime` (the tfserving backend)
are one per model, under its name.
"""

from __future__ import annotations

from components.core.benchmark.schema import BenchmarkResult, ModelResult
from components.core.errors import ServoptError


def typed_metrics(metrics: BenchmarkResult | dict) -> BenchmarkResult:
    """The benchmark's result; a dict (metrics.json's form) is parsed by the schema."""
    if isinstance(metrics, BenchmarkResult):
        return metrics
    if isinstance(metrics, dict):
        return BenchmarkResult.from_dict(metrics)
    raise ServoptError(f"metrics: expected the benchmark's result, got "
                       f"{type(metrics).__name__}")


def typed_model(model: ModelResult | dict | None, source: str) -> ModelResult | None:
    """One model's result (the served model's, as recorded at its push), or None."""
    if model is None or isinstance(model, ModelResult):
        return model
    if isinstance(model, dict):
        return ModelResult.from_dict(model, source)
    raise ServoptError(f"{source}: expected one model's metrics, got {type(model).__name__}")


def candidate_paths(metrics: BenchmarkResult) -> dict[str, str]:
    """Version name -> model path, for every model the benchmark measured."""
    return metrics.paths()


def measured_batch_sizes(model: ModelResult) -> list[int]:
    return sorted(model.batches)
