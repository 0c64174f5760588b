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
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.core.errors import ServoptError, first_line

BASELINE = "trainer"
CANDIDATES = ("frozen", "optimized", "quantized")
MODEL_NAMES = (BASELINE, *CANDIDATES)
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
DECISION_FILE = "decision.json"
PUSH_FILE = "push.json"
# Cloud Storage FUSE mount points: Vertex AI mounts gs://BUCKET at /gcs/BUCKET, and KFP's
# own artifact paths use the same convention (kfp.dsl.Artifact.path).
FUSE_MOUNTS = {"gs://": "/gcs/"}
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


def local_path(uri: str) -> str:
    """A path this task can read for `uri`: a local path as is; gs://... through the Cloud
    Storage FUSE mount where there is one (Vertex AI); any other URL tf.io.gfile reads
    (gs://, s3://, hdfs://) copied into a temporary directory first."""
    if not uri or "://" not in uri:
        return uri
    for scheme, mount in FUSE_MOUNTS.items():
        if uri.startswith(scheme) and os.path.isdir(mount):
            return mount + uri[len(scheme):]
    return _download(uri)


def _download(uri: str) -> str:
    from components.core.tf_setup import tf

    gfile = tf.io.gfile
    source = uri.rstrip("/")
    try:
        if not gfile.exists(source):
            raise ServoptError(f"{uri}: no such file or directory; check the URI and that "
                               "this pipeline's service account can read it")
        target = Path(tempfile.mkdtemp(prefix="servopt-kfp-")) / source.rsplit("/", 1)[-1]
        if not gfile.isdir(source):
            gfile.copy(source, str(target))
            return str(target)
        for directory, _, files in gfile.walk(source):
            relative = directory[len(source):].lstrip("/")
            (target / relative).mkdir(parents=True, exist_ok=True)
            for name in files:
                gfile.copy(f"{directory.rstrip('/')}/{name}", str(target / relative / name))
    except tf.errors.OpError as err:
        raise ServoptError(f"{uri}: cannot read it ({first_line(err)})") from None
    return str(target)


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
    """The BenchmarkSettings for the pipeline's parameters: `settings` (keys of
    configs/benchmark.yaml) plus the batch sizes and label key given on their own."""
    from components.core.benchmark_settings import BenchmarkSettings
    from components.core.config import fill_dataclass

    settings = whole_numbers(dict(settings or {}))
    for key in OWN_PARAMETERS:
        if key in settings:
            raise ServoptError(f"benchmark_settings: '{key}' is a pipeline parameter of its "
                               f"own; pass it as {key}, not inside benchmark_settings")
    values = {**settings, "batch_sizes": whole_numbers(list(batch_sizes)),
              "label_key": (label_key or None) if examples else None}
    return fill_dataclass(BenchmarkSettings, values, "benchmark_settings parameter",
                          "benchmark")


def headline_metrics(metrics: dict) -> dict[str, float]:
    """The figures worth a glance in the KFP / Vertex UI, from metrics.json: per model its
    size, and per batch size p50, p99, throughput, stability and (candidates) speedup;
    accuracy and top-1 agreement with the baseline when examples were labelled."""
    figures: dict[str, float | None] = {}
    for name, model in metrics["models"].items():
        figures[f"{name}_size_mb"] = (model["size_bytes"] / 1e6
                                      if model.get("size_bytes") is not None else None)
        for size, batch in (model.get("batches") or {}).items():
            for key in ("p50_ms", "p99_ms", "throughput", "speedup_p50", "speedup_p99"):
                figures[f"{name}_{key}_batch{size}"] = batch.get(key)
            figures[f"{name}_stable_batch{size}"] = float(bool(batch.get("stable")))
        for key in ("accuracy", "top1_agreement"):
            figures[f"{name}_{key}"] = (model.get("accuracy") or {}).get(key)
    return {key: float(value) for key, value in figures.items()
            if value is not None and math.isfinite(value)}
