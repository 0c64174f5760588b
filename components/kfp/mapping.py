"""What the KFP components need besides the library: parameter and artifact mapping.

No `kfp` import here: the component bodies (components.kfp.steps) import these functions
inside their containers, and the tests call them directly.

- Models are named explicitly, in this order: `trainer` (the baseline: the model the
  pipeline was given), then the candidates `frozen`, `optimized`, `quantized`. The
  benchmark, the gate and the push use the same names.
- Every task sees artifacts at its own local paths (KFP downloads or mounts them per task),
  so a task never uses a path another task wrote down: the gate and the push receive the
  model artifacts themselves and map names to *their* paths with `model_paths`.
- KFP passes list and dict parameters through protobuf Struct, where every number is a
  float (100 arrives as 100.0): `whole_numbers` turns integral floats back into ints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from components.core.errors import ServoptError
from components.core.uris import local_path  # noqa: F401  (the steps read URIs with it)

BASELINE = "trainer"
CANDIDATES = ("frozen", "optimized", "quantized")
MODEL_NAMES = (BASELINE, *CANDIDATES)
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
DECISION_FILE = "decision.json"
PUSH_FILE = "push.json"
# Settings the pipeline takes as parameters of their own, not inside benchmark_settings.
OWN_PARAMETERS = ("batch_sizes", "label_key")


def whole_numbers(value: Any) -> Any:
    """Integral floats inside lists and dicts (what KFP makes of ints) back to ints."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [whole_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    return value


def without_nulls(value: Any) -> Any:
    """A dict with every None removed (KFP parameter defaults cannot hold null; an absent
    threshold or setting means the same as null)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def model_paths(model_uri: str, candidates: Mapping[str, str]) -> dict[str, str]:
    """Name -> local model path: the baseline first, then the candidate artifacts."""
    unknown = sorted(set(candidates) - set(CANDIDATES))
    if unknown:
        raise ServoptError(f"unknown candidate name(s) {unknown}; the pipeline's models are "
                           f"{', '.join(MODEL_NAMES)}")
    return {BASELINE: local_path(model_uri),
            **{name: candidates[name] for name in CANDIDATES if name in candidates}}


def chosen_path(paths: Mapping[str, str], chosen: str) -> str:
    if chosen not in paths:
        raise ServoptError(f"the gate chose '{chosen}', which is not one of the models "
                           f"given to the push ({', '.join(paths)})")
    return paths[chosen]


def benchmark_settings(batch_sizes: list, settings: dict | None, label_key: str,
                       examples: str):
    """The BenchmarkConfig for the pipeline's parameters: `settings` (keys of
    configs/benchmark.yaml) plus the batch sizes and label key given on their own."""
    from components.core.benchmark.config import BenchmarkConfig

    settings = whole_numbers(dict(settings or {}))
    for key in OWN_PARAMETERS:
        if key in settings:
            raise ServoptError(f"benchmark_settings: '{key}' is a pipeline parameter of its "
                               f"own; pass it as {key}, not inside benchmark_settings")
    values = {**settings, "batch_sizes": whole_numbers(list(batch_sizes)),
              "label_key": (label_key or None) if examples else None}
    return BenchmarkConfig.from_dict(values, "benchmark_settings parameter")


def headline_metrics(metrics: dict) -> dict[str, float]:
    """The benchmark's headline figures (components.core.benchmark.schema.headline_figures)
    that KFP's Metrics can show: the finite numbers."""
    from components.core.benchmark.schema import headline_figures

    return {key: float(value) for key, value in headline_figures(metrics).items()
            if isinstance(value, int | float) and math.isfinite(value)}
