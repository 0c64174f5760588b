"""What the model-producing TFX executors share: artifacts in, library call, properties out.

Model artifacts follow the Trainer's layout (`<uri>/Format-Serving/saved_model.pb`), so
TFX's own Pusher, InfraValidator and BulkInferrer accept what these components emit.
Everything measured goes into custom properties, where ML Metadata keeps it. Artifact URIs
may be on any filesystem TensorFlow reads (gs:// on Vertex AI): executors reach them
through a `Staging` (components.core.uris), and record URIs, never staging paths.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.core.identity import ModelIdentity
from components.core.model_paths import SERVING_MODEL_DIR
from components.core.producers import Produced, produce, report_properties
from components.core.steps import OptimizationReport, OptimizeConfig, Step
from components.core.uris import Staging
from components.core.verify import Reference

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
Artifacts = dict[str, list[types.Artifact]]


class Staged:
    """Mixin for a TFX executor (before its base class): `Do` logs as TFX's executors do
    and hands `run` a Staging for the artifacts' URIs, uploaded when `run` succeeds."""

    def Do(self, input_dict: Artifacts, output_dict: Artifacts,
           exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        with Staging() as stage:
            self.run(input_dict, output_dict, exec_properties, stage)

    def run(self, input_dict: Artifacts, output_dict: Artifacts,
            exec_properties: dict[str, Any], stage: Staging) -> None:
        raise NotImplementedError


def single(artifacts: dict[str, list[types.Artifact]], key: str) -> types.Artifact:
    return artifact_utils.get_single_instance(artifacts[key])


def optional_single(artifacts: dict[str, list[types.Artifact]], key: str
                    ) -> types.Artifact | None:
    return artifacts[key][0] if artifacts.get(key) else None


def serving_uri(artifact: types.Artifact) -> str:
    """Where a Model artifact holds its SavedModel (as Trainer writes it)."""
    return f"{artifact.uri.rstrip('/')}/{SERVING_MODEL_DIR}"


def record_report(artifact: types.Artifact, report: OptimizationReport,
                  source_uri: str) -> None:
    """Writes what was measured onto the output Model artifact's custom properties."""
    set_custom_properties(artifact, report_properties(report, source_uri))


def component_id(executor: base_executor.BaseExecutor, default: str) -> str:
    """The producing component's id, as the orchestrator's pipeline node names it
    (LocalDagRunner, BeamDagRunner, KubeflowDagRunner); `default` (the component's class
    name, its default id) where the runner gives executors no node (Vertex's entrypoint)."""
    context = getattr(executor, "_context", None)
    node = getattr(context, "pipeline_node", None)
    return node.node_info.id if node is not None and node.node_info.id else default


def input_producer(executor: base_executor.BaseExecutor, key: str) -> str | None:
    """The component that produced input `key`, from the pipeline node's input spec (the
    orchestrator's record), or None where the runner gives executors no node."""
    context = getattr(executor, "_context", None)
    node = getattr(context, "pipeline_node", None)
    if node is None or key not in node.inputs.inputs:
        return None
    channels = node.inputs.inputs[key].channels
    return channels[0].producer_node_query.id or None if channels else None


def artifact_properties(artifact: types.Artifact) -> dict[str, Any]:
    """An artifact's custom properties as plain values (what the library reads)."""
    return {key: artifact.get_custom_property(key)
            for key in artifact.mlmd_artifact.custom_properties}


def set_custom_properties(artifact: types.Artifact, properties: dict[str, Any]) -> None:
    for key, value in properties.items():
        if value is None:
            continue
        if isinstance(value, bool | int):
            artifact.set_int_custom_property(key, int(value))
        elif isinstance(value, float):
            artifact.set_float_custom_property(key, value)
        else:
            artifact.set_string_custom_property(key, str(value))


def with_examples(input_dict: dict[str, list[types.Artifact]], config: OptimizeConfig,
                  stage: Staging) -> OptimizeConfig:
    """Verification inputs from the optional `examples` channel (its eval split)."""
    examples = optional_single(input_dict, EXAMPLES_KEY)
    if examples is None:
        return config
    return dataclasses.replace(config, examples=Path(stage.input(examples.uri)))


def run_model_step(input_dict: dict[str, list[types.Artifact]],
                   outputs: list[types.Artifact], step: Step, config: OptimizeConfig,
                   stage: Staging, identity: ModelIdentity, reference: Reference | None = None,
                   variant: bool = False) -> Produced:
    """Runs one library step from the input Model artifact into the output Model artifact,
    which records the model's identity and what was measured (or, for a `variant` that was
    not produced, why)."""
    source = single(input_dict, MODEL_KEY)
    output = artifact_utils.get_single_instance(outputs)
    produced = produce(stage.input(source.uri),
                       Path(stage.output(output.uri)) / SERVING_MODEL_DIR, step,
                       with_examples(input_dict, config, stage), reference, variant)
    set_custom_properties(output, produced.properties(identity, step))
    if produced.report is None:
        logging.warning("%s: %s not produced: %s", identity.component, step,
                        produced.skipped_reason)
        return produced
    report = produced.report
    record_report(output, report, stage.uri_of(report.source))
    for record in report.steps:
        logging.info("%s: %s %s", record.step, record.status, record.reason or "")
    logging.info("verification: %s", json.dumps(report.verification.to_dict()
                                                  | {"outputs": None}))
    return produced
