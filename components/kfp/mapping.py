"""What the KFP components need besides the library: parameter and artifact mapping.

No `kfp` import here: the component bodies (components.kfp.steps) import these functions
inside their containers, and the tests call them directly.

- Models are named as in the TFX pipeline: `trainer` (the baseline: the model the
  pipeline was given), then each candidate by the identity its producing step recorded in
  the artifact's metadata (components.core.producers: `Freezer`, `GraphOptimizer`,
  `Quantizer`, `Quantizer-bfloat16`, `Quantizer-tflite-<mode>`); a variant recorded as not
  produced is passed over. The benchmark, the gate and the push use the same names.
- The producing steps call the same library functions as the TFX executors
  (components.core.producers), with the same settings groups (components.core.config:
  `graph_optimizer`, `quantizer`, `verification`, passed as dict parameters).
- Every task sees artifacts at its own local paths (KFP downloads or mounts them per task),
  so a task never uses a path another task wrote down: the gate and the push receive the
  model artifacts themselves and map names to *their* paths with `model_paths`.
- KFP passes list and dict parameters through protobuf Struct, where every number is a
  float (100 arrives as 100.0): `whole_numbers` turns integral floats back into ints.
  A parameter default cannot hold null: in dict parameters (thresholds and settings) an
  empty string stands for null (`quantizer: {tflite: ""}`: no TFLite variant, as `[]`;
  `thresholds: {vs_baseline: {min_speedup_p50: ""}}`: not checked).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from components.core.errors import ServoptError
from components.core.uris import local_path  # noqa: F401  (the steps read URIs with it)

BASELINE = "trainer"
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


def parameter_value(value: Any) -> Any:
    """A dict or list as a KFP parameter value: every null written as '' (KFP parameter
    defaults cannot hold null, and dropping the key would bring its default back where
    null turns a threshold or setting off)."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return {k: parameter_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [parameter_value(v) for v in value]
    return value


def from_parameter(value: Any) -> Any:
    """A KFP dict or list parameter back as written: '' as null, whole numbers as ints."""
    if isinstance(value, str) and value == "":
        return None
    if isinstance(value, dict):
        return {k: from_parameter(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [from_parameter(v) for v in value]
    return whole_numbers(value)


def thresholds_from_parameter(value: dict | None):
    from components.core.gate import Thresholds

    return Thresholds.from_dict(from_parameter(value), source="thresholds parameter")


def settings_parameter(settings) -> dict:
    """A settings group (components.core.config) as a KFP dict parameter: nulls as ''."""
    return parameter_value(asdict(settings))


def settings_from_parameter(name: str, value: dict | None):
    """The settings group `name` from its KFP dict parameter, validated."""
    from components.core.config import settings_from_dict

    return settings_from_dict(name, from_parameter(dict(value or {})), f"{name} parameter")


def model_paths(model_uri: str, artifacts: Sequence[Any]) -> dict[str, str]:
    """Name -> local model path: the baseline first, then every produced candidate
    artifact (KFP `Input[Model]`: `.path`, `.metadata`) by the identity its producer
    recorded. This task's own paths: a path another task recorded is never used."""
    from components.core.identity import ModelIdentity, was_produced

    paths = {BASELINE: local_path(model_uri)}
    for artifact in artifacts:
        if not was_produced(artifact.metadata):
            continue
        identity = ModelIdentity.from_properties(artifact.metadata)
        if identity is None:
            raise ServoptError(f"{artifact.path}: the model artifact records no producer "
                               "(servopt_component); it was not made by a servopt step")
        paths[identity.name] = artifact.path
    return paths


def produce_outputs(component: str, source: str, eval_examples_uri: str,
                    outputs: Mapping[str, Any], verification: dict,
                    steps: Mapping[str, Any], quantizer=None) -> None:
    """Runs the library steps of one producing component (output name -> Step) from
    `source` into its KFP output artifacts, as the TFX executors do: the source run once
    for all outputs, each output's identity and measurements in its metadata, a variant
    that could not be produced recorded with its reason."""
    from components.core.identity import VARIANT_OUTPUTS
    from components.core.model_paths import resolve_saved_model_dir
    from components.core.producers import (
        optimize_config,
        output_identity,
        produce,
        report_properties,
    )
    from components.core.steps import reference_for

    examples = local_path(eval_examples_uri)
    config = optimize_config(settings_from_parameter("verification", verification), quantizer,
                             examples=Path(examples) if examples else None)
    source_dir = resolve_saved_model_dir(local_path(source))
    reference = reference_for(source_dir, config) if len(steps) > 1 else None
    for name, artifact in outputs.items():
        identity = output_identity(component, name)
        step = steps.get(name)
        if step is None:  # a variant the settings do not ask for
            artifact.metadata.update({**identity.properties(), "produced": 0,
                                      "skipped_reason": "not asked for by the settings"})
            continue
        produced = produce(source_dir, artifact.path, step, config, reference,
                           variant=name in VARIANT_OUTPUTS)
        artifact.metadata.update(produced.properties(identity, step))
        if produced.report is None:
            print(f"{identity.name}: {step} not produced: {produced.skipped_reason}",
                  flush=True)
            continue
        artifact.metadata.update(report_properties(produced.report, source))
        print(f"{identity.name}: {step}: verified on "
              f"{produced.report.verification.num_examples} inputs", flush=True)


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

    settings = from_parameter(dict(settings or {}))
    for key in OWN_PARAMETERS:
        if key in settings:
            raise ServoptError(f"benchmark_settings: '{key}' is a pipeline parameter of its "
                               f"own; pass it as {key}, not inside benchmark_settings")
    values = {**settings, "batch_sizes": whole_numbers(list(batch_sizes)),
              "label_key": (label_key or None) if examples else None}
    return BenchmarkConfig.from_dict(values, "benchmark_settings parameter")


def headline_metrics(result) -> dict[str, float]:
    """The benchmark's headline figures (components.core.benchmark.schema.headline_figures)
    that KFP's Metrics can show: the finite numbers."""
    from components.core.benchmark.schema import headline_figures

    return {key: float(value) for key, value in headline_figures(result).items()
            if isinstance(value, int | float) and math.isfinite(value)}
