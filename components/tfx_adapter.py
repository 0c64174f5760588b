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
from tfx.types import artifact_utils

from components.core.model_io import SERVING_MODEL_DIR
from components.core.steps import OptimizationReport, OptimizeConfig, Step, optimize_model
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
    after = report.after
    verification = report.verification
    properties: dict[str, Any] = {
        "source_model_uri": source_uri,
        "size_bytes_graph": after.size_bytes.graph,
        "size_bytes_variables": after.size_bytes.variables,
        "size_bytes_total": after.size_bytes.total,
        "source_size_bytes_total": report.before.size_bytes.total,
        "node_count": after.node_count,
        "source_node_count": report.before.node_count,
        "variable_count": after.variable_count,
        "const_count": after.const_count,
        "identity_count": after.identity_count,
        "op_counts": json.dumps(after.op_counts),
        "steps": json.dumps([{"step": r.step, "status": r.status, "reason": r.reason,
                              "details": r.details} for r in report.steps]),
        "steps_applied": ",".join(r.step for r in report.steps if r.status == "applied"),
        "steps_skipped": ",".join(r.step for r in report.steps if r.status == "skipped"),
        "verification_passed": int(verification.passed),
        "verification_max_abs_diff": verification.max_abs_diff,
        "verification_num_examples": verification.num_examples,
        "verification_tolerance": verification.tolerance,
    }
    if verification.top1_agreement is not None:
        properties["verification_top1_agreement"] = verification.top1_agreement
    needs = report.requirements
    properties |= {"serving_runtime": needs.runtime, "compute_precision": needs.precision,
                   "serving_flags": " ".join(needs.server_flags),
                   "required_cpu_features": ",".join(needs.cpu_features)}
    tflite = report.steps[-1].tflite_verification if report.steps else None
    if tflite is not None:
        properties |= {"tflite_verification_passed": int(tflite.passed),
                       "tflite_verification_max_abs_diff": tflite.max_abs_diff,
                       "tflite_verification_top1_agreement": tflite.top1_agreement,
                       "tflite_size_bytes": report.steps[-1].details["tflite_size_bytes"],
                       "tflite_lacks_signatures": json.dumps(needs.lacks_signatures)}
    set_custom_properties(artifact, properties)


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
                   stage: Staging, reference: Reference | None = None,
                   require_applied: bool = False) -> OptimizationReport:
    """Runs one library step from the input Model artifact into the output Model artifact."""
    source = single(input_dict, MODEL_KEY)
    output = artifact_utils.get_single_instance(outputs)
    report = optimize_model(stage.input(source.uri),
                            Path(stage.output(output.uri)) / SERVING_MODEL_DIR, [step],
                            with_examples(input_dict, config, stage), reference,
                            require_applied)
    record_report(output, report, stage.uri_of(report.source))
    for record in report.steps:
        logging.info("%s: %s %s", record.step, record.status, record.reason or "")
    logging.info("verification: %s", json.dumps(report.verification.to_dict()
                                                  | {"outputs": None}))
    return report
