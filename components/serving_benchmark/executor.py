"""ServingBenchmark executor: artifacts -> run_benchmark -> metrics.json, report.html."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from components.core.benchmark import ModelSpec, run_benchmark, write_report
from components.core.benchmark_settings import BenchmarkSettings
from components.quantizer.keys import VARIANT_OUTPUTS
from components.serving_benchmark.keys import CANDIDATE_KEYS
from components.tfx_adapter import optional_single, serving_dir, set_custom_properties, single

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


def model_name(artifact: types.Artifact) -> str:
    """The producing component's id: '.../pipeline_root/Freezer/frozen_model/7' -> Freezer;
    a variant output gets its kind: '.../Quantizer/tflite_model/7' -> Quantizer-tflite."""
    component = artifact.producer_component or Path(artifact.uri).parent.parent.name
    variant = VARIANT_OUTPUTS.get(Path(artifact.uri).parent.name)
    return f"{component}-{variant}" if variant else component


def was_produced(artifact: types.Artifact) -> bool:
    """False for a variant the Quantizer recorded as not produced (`produced=0`)."""
    return not (artifact.has_custom_property("produced")
                and artifact.get_int_custom_property("produced") == 0)


def headline_properties(metrics: dict) -> dict[str, Any]:
    """Per model: p50/p99 at each batch size, speedup, size, accuracy, agreement."""
    properties: dict[str, Any] = {"baseline": metrics["baseline"],
                                  "models": ",".join(metrics["models"])}
    for name, model in metrics["models"].items():
        properties[f"{name}_size_bytes"] = model["size_bytes"]
        properties[f"{name}_error"] = model["error"]
        for size, batch in model["batches"].items():
            for key in ("p50_ms", "p99_ms", "throughput", "speedup_p50", "speedup_p99"):
                properties[f"{name}_{key}_batch{size}"] = batch.get(key)
            properties[f"{name}_stable_batch{size}"] = int(bool(batch.get("stable")))
        for key in ("accuracy", "top1_agreement", "max_abs_diff"):
            properties[f"{name}_{key}"] = (model["accuracy"] or {}).get(key)
    return properties


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        output = artifact_utils.get_single_instance(output_dict["benchmark"])
        settings = BenchmarkSettings(**json.loads(exec_properties["settings"]))
        examples = optional_single(input_dict, "examples")
        baseline = single(input_dict, "baseline_model")
        candidates = [a for key in CANDIDATE_KEYS for a in input_dict.get(key, [])
                      if was_produced(a)]
        models = [ModelSpec(model_name(a), serving_dir(a)) for a in [baseline, *candidates]]
        config = settings.config(Path(examples.uri) if examples else None,
                                 tuple(self._beam_pipeline_args or ()))
        result = run_benchmark(models, config, progress=lambda line: logging.info("%s", line))
        metrics = result.to_dict()
        out_dir = Path(output.uri)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        write_report(result, out_dir / REPORT_FILE)
        set_custom_properties(output, headline_properties(metrics))
        for name, error in result.failed().items():
            logging.warning("ServingBenchmark: %s failed: %s", name, error)
