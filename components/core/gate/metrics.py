"""What the gate reads from the ServingBenchmark's metrics (metrics.json, schema_version 1;
read and checked by components.core.benchmark.schema.load_metrics).

The gate reads, per model: `role`, `error`, `size_bytes` and the other model-level
measurements, `batches[<batch size>]` (latency percentiles, throughput, `stable`,
`speedup_p50` / `speedup_p99` for candidates) and `accuracy` (`accuracy`,
`top1_agreement`). A served model's metrics, as recorded at its push, have the same
per-model shape.
"""

from __future__ import annotations


def batch_entry(model: dict, batch_size: int) -> dict | None:
    """The measurements at `batch_size` (keys are strings in JSON; ints are accepted too)."""
    batches = model.get("batches") or {}
    entry = batches.get(str(batch_size), batches.get(batch_size))
    return entry if isinstance(entry, dict) else None


def measured_batch_sizes(model: dict) -> list[str]:
    return sorted((str(b) for b in (model.get("batches") or {})), key=_numeric_first)


def accuracy_value(model: dict, key: str) -> float | None:
    accuracy = model.get("accuracy")
    return accuracy.get(key) if isinstance(accuracy, dict) else None


def _numeric_first(text: str):
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def candidate_paths(metrics: dict) -> dict[str, str]:
    """Every model the benchmark measured (the baseline too) -> the path it measured."""
    return {name: entry["path"] for name, entry in metrics["models"].items()}
