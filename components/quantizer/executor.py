"""Quantizer executor: one library step per output artifact, the source run only once."""

from __future__ import annotations

import json
from typing import Any

from tfx.dsl.components.base import base_executor

from components.core.config import QuantizerSettings
from components.core.errors import ServoptError
from components.core.identity import QUANTIZED_OUTPUT, QUANTIZER
from components.core.model_paths import resolve_saved_model_dir
from components.core.producers import output_identity, quantizer_steps
from components.core.steps import reference_for
from components.core.uris import Staging
from components.tfx_adapter import (
    MODEL_KEY,
    Artifacts,
    Staged,
    component_id,
    run_model_step,
    single,
    with_examples,
)
from components.tfx_params import optimize_config


def quantizer_settings(exec_properties: dict[str, Any]) -> QuantizerSettings:
    given = {key: exec_properties.get(key) for key in
             ("mode", "min_elements", "min_top1_agreement")}
    return QuantizerSettings(**{k: v for k, v in given.items() if v is not None},
                             bfloat16=bool(exec_properties.get("bfloat16")),
                             tflite=_tflite_modes(exec_properties.get("tflite")))


def _tflite_modes(value: str | None) -> list[str]:
    """The `tflite` execution property: a JSON list of modes (the component writes it);
    absent or empty: none."""
    if not value:
        return []
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise ServoptError(f"Quantizer's tflite parameter must be a JSON list of TFLite "
                           f"modes, e.g. [\"full_int8\"], got {value!r}") from None


class Executor(Staged, base_executor.BaseExecutor):
    def run(self, input_dict: Artifacts, output_dict: Artifacts,
            exec_properties: dict[str, Any], stage: Staging) -> None:
        settings = quantizer_settings(exec_properties)
        config = with_examples(input_dict, optimize_config(exec_properties, settings), stage)
        source_dir = resolve_saved_model_dir(stage.input(single(input_dict, MODEL_KEY).uri))
        reference = reference_for(source_dir, config)  # run the source once for all outputs
        component = component_id(self, QUANTIZER)
        for key, step in quantizer_steps(settings).items():
            if output_dict.get(key):
                # The weight-quantized model fails the run if it leaves the tolerance; a
                # variant is recorded as not produced (components.core.producers.produce).
                run_model_step(input_dict, output_dict[key], step, config, stage,
                               output_identity(component, key), reference,
                               variant=key != QUANTIZED_OUTPUT)
