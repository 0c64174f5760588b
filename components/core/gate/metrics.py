"""Read the ServingBenchmark's metrics (metrics.json, schema_version 1) for the gate.

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

import json
from pathlib import Path

from components.core.errors import ServoptError

SCHEMA_VERSION = 1


def load_metrics(path: str | Path) -> dict:
    """metrics.json as a dict, checked to be a benchmark result this gate understands."""
    path = Path(path)
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        raise ServoptError(f"{path}: no such metrics file; pass the metrics.json the "
                           "ServingBenchmark wrote") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ServoptError(f"{path}: cannot read the metrics file ({err})") from None
    except json.JSONDecodeError as err:
        raise ServoptError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}); run the "
                           "benchmark again") from None
    validate_metrics(metrics, str(path))
    return metrics


def validate_metrics(metrics, source: str = "metrics") -> None:
    """The top-level shape the gate relies on; per-model gaps are reported per candidate."""
    if not isinstance(metrics, dict):
        raise ServoptError(f"{source}: expected a JSON object of benchmark results, got "
                           f"{type(metrics).__name__}")
    version = metrics.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ServoptError(f"{source}: schema_version {version!r} is not supported (this "
                           f"gate reads schema_version {SCHEMA_VERSION}); run the benchmark "
                           "of the same release")
    if not isinstance(metrics.get("models"), dict):
        raise ServoptError(f"{source}: no 'models' object; not a ServingBenchmark result")


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
