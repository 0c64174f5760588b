"""Quantizer executor: one library step per output artifact, the source run only once."""

from __future__ import annotations

from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.core.errors import StepSkipped, VerificationError
from components.core.model_io import resolve_saved_model_dir
from components.core.steps import BFLOAT16_MODE, Step, reference_for
from components.core.uris import Staging
from components.tfx_adapter import (
    MODEL_KEY,
    Artifacts,
    Staged,
    run_model_step,
    set_custom_properties,
    single,
    with_examples,
)
from components.tfx_params import optimize_config


class Executor(Staged, base_executor.BaseExecutor):
    def run(self, input_dict: Artifacts, output_dict: Artifacts,
            exec_properties: dict[str, Any], stage: Staging) -> None:
        config = with_examples(input_dict, optimize_config(
            exec_properties, quantized=True,
            quantize_min_elements=exec_properties.get("min_elements")), stage)
        source_dir = resolve_saved_model_dir(stage.input(single(input_dict, MODEL_KEY).uri))
        reference = reference_for(source_dir, config)  # run the source once for all outputs
        run_model_step(input_dict, output_dict["quantized_model"],
                       Step("quantize", exec_properties["mode"]), config, stage, reference)
        variants = {"bfloat16_model": Step("quantize", BFLOAT16_MODE)
                    if exec_properties.get("bfloat16") else None,
                    "tflite_model": Step("tflite", exec_properties["tflite"])
                    if exec_properties.get("tflite") else None}
        for key, step in variants.items():
            if step is not None and output_dict.get(key):
                _run_variant(input_dict, output_dict[key], step, config, stage, reference)


def _run_variant(input_dict: Artifacts, outputs: list[types.Artifact], step: Step, config,
                 stage: Staging, reference) -> None:
    """A variant that does not apply, or leaves the tolerance, is recorded, not published."""
    artifact = artifact_utils.get_single_instance(outputs)
    try:
        run_model_step(input_dict, outputs, step, config, stage, reference,
                       require_applied=True)
    except (StepSkipped, VerificationError) as not_produced:
        reason = str(not_produced)
    else:
        set_custom_properties(artifact, {"produced": 1})
        return
    logging.warning("Quantizer: %s not produced: %s", step, reason)
    set_custom_properties(artifact, {"produced": 0, "skipped_reason": reason,
                                     "variant": str(step)})
