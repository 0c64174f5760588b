"""What the gate reads from the ServingBenchmark's metrics (metrics.json, schema_version 1;
read and checked by components.core.benchmark.schema.load_metrics).

The gate reads, per model: `role`, `error`, `size_bytes` and the other model-level
measurements, `batches[<batch size>]` (latency percentiles, throughput, `stable`,
`speedup_p50` / `speedup_p99` for candidates) and `accuracy` (`accuracy`,
`top1_agreement`). A served model's metrics, as recorded at its push, have the same
per-model shape.

A model may have several rows: a TFLite variant is measured as `NAME@tflite` and
`NAME@tensorflow`, each with `runtime` (`runtime`, `version`: NAME, `settings`,
`server_flags`, `servable`). Candidates are named by version; metrics without `runtime`
(older ones, or the tfserving backend) have one row per model, under its name.
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


def version_of(row_name: str, model: dict) -> str:
    return (model.get("runtime") or {}).get("version") or row_name


def rows_of(metrics: dict, version: str) -> dict[str, dict]:
    """Row name -> metrics of every row that measured `version`, in benchmark order."""
    return {name: model for name, model in metrics["models"].items()
            if version_of(name, model) == version}


def candidate_paths(metrics: dict) -> dict[str, str]:
    """Version name -> model path, for every model the benchmark measured."""
    return {version_of(name, model): model["path"] for name, model in metrics["models"].items()}
