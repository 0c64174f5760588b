"""ServingBenchmark executor: artifacts -> run_benchmark -> metrics.json, report.html."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from components.core.benchmark import ModelSpec, run_benchmark
from components.core.benchmark.config import BenchmarkConfig
from components.core.benchmark.outputs import metrics_checkpoint, write_results
from components.core.benchmark.schema import headline_figures
from components.core.benchmark.worker_log import WORKERS_DIR, worker_output
from components.core.identity import ModelIdentity, was_produced
from components.core.uris import Staging
from components.serving_benchmark.keys import CANDIDATE_KEYS
from components.tfx_adapter import (
    Artifacts,
    Staged,
    artifact_properties,
    input_producer,
    optional_single,
    serving_uri,
    set_custom_properties,
    single,
)

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


def model_name(artifact: types.Artifact, producer: str | None, key: str) -> str:
    """The name a model gets in the metrics: the identity its producer recorded on the
    artifact (`Quantizer-tflite-full_int8`), else the component that produced it as the pipeline
    node's inputs record it (a Trainer's model), else the input key."""
    identity = ModelIdentity.from_properties(artifact_properties(artifact))
    return identity.name if identity else producer or key


def served_version(pushed: types.Artifact | None) -> str | None:
    """The version directory a PushedModel was pushed to (its `pushed_destination`), if it
    was pushed; None otherwise."""
    if pushed is None or not pushed.has_custom_property("pushed_destination"):
        return None
    if pushed.has_custom_property("pushed") and not pushed.get_int_custom_property("pushed"):
        return None
    return pushed.get_string_custom_property("pushed_destination") or None


class Executor(Staged, base_beam_executor.BaseBeamExecutor):
    def run(self, input_dict: Artifacts, output_dict: Artifacts,
            exec_properties: dict[str, Any], stage: Staging) -> None:
        output = artifact_utils.get_single_instance(output_dict["benchmark"])
        settings = BenchmarkConfig.from_dict(json.loads(exec_properties["settings"]),
                                             "the settings parameter")
        examples = optional_single(input_dict, "examples")
        baseline = single(input_dict, "baseline_model")
        inputs = [("baseline_model", baseline)] + [
            (key, a) for key in CANDIDATE_KEYS for a in input_dict.get(key, [])
            if was_produced(artifact_properties(a))]
        models = [ModelSpec(model_name(a, input_producer(self, key), key),
                            Path(stage.input(serving_uri(a)))) for key, a in inputs]
        config = settings.for_run(Path(stage.input(examples.uri)) if examples else None,
                                  self._beam_pipeline_args or ())
        served = served_version(optional_single(input_dict, "served_model"))
        out_dir = Path(stage.output(output.uri))
        # metrics.json as rows complete (local paths until the end rewrites them)
        with worker_output(out_dir / WORKERS_DIR):  # the workers' logs, in the artifact
            result = run_benchmark(
                models, config, progress=lambda line: logging.info("%s", line),
                served=Path(stage.input(served)) if served else None,
                checkpoint=metrics_checkpoint(out_dir / METRICS_FILE))
        for model in result.models.values():  # the gate reads the models from their URIs
            model.path = stage.uri_of(model.path)
        failure = write_results(result, out_dir / METRICS_FILE, out_dir / REPORT_FILE)
        if failure:
            logging.warning("ServingBenchmark: the report failed: %s", failure)
        set_custom_properties(output, {"baseline": result.baseline,
                                       "models": ",".join(result.models),
                                       **headline_figures(result)})
        for name, error in result.failed().items():
            logging.warning("ServingBenchmark: %s failed: %s", name, error)
