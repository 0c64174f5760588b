"""Quantizer executor: quantized weights into `quantized_model`, TFLite into `tflite_model`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.core.errors import StepSkipped
from components.core.grappler import all_nodes
from components.core.model_io import read_serving_graph, resolve_saved_model_dir
from components.core.steps import Step, reference_for
from components.core.tflite import export_tflite
from components.tfx_adapter import (
    MODEL_KEY,
    run_model_step,
    set_custom_properties,
    single,
    with_examples,
)
from components.tfx_params import optimize_config

TFLITE_DIR = "Format-TFLite"


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        config = with_examples(input_dict, optimize_config(
            exec_properties, quantized=True,
            quantize_min_elements=exec_properties.get("min_elements")))
        source_dir = resolve_saved_model_dir(single(input_dict, MODEL_KEY).uri)
        reference = reference_for(source_dir, config)  # run the source once for both outputs
        run_model_step(input_dict, output_dict["quantized_model"],
                       Step("quantize", exec_properties["mode"]), config, reference)
        tflite_mode = exec_properties.get("tflite")
        if tflite_mode and output_dict.get("tflite_model"):
            artifact = artifact_utils.get_single_instance(output_dict["tflite_model"])
            try:
                tflite_source = _tflite_source(source_dir, single(input_dict, MODEL_KEY))
                result = export_tflite(tflite_source, Path(artifact.uri) / TFLITE_DIR,
                                       reference, tflite_mode, config.quantized_tolerance)
            except StepSkipped as skipped:
                logging.warning("TFLite variant skipped: %s", skipped)
                set_custom_properties(artifact, {"produced": 0, "skipped_reason": str(skipped),
                                                 "source_model_uri": str(source_dir)})
                return
            check = result.verification
            set_custom_properties(artifact, {
                "produced": 1, "tflite_mode": tflite_mode,
                "source_model_uri": str(tflite_source),
                "size_bytes_total": result.size_bytes,
                "verification_passed": int(check.passed),
                "verification_max_abs_diff": check.max_abs_diff,
                "verification_top1_agreement": check.top1_agreement,
                "verification_num_examples": check.num_examples})


def _tflite_source(model_dir: Path, model: types.Artifact) -> Path:
    """The model TFLite converts from.

    Grappler's CPU fusions (`_FusedConv2D`, `_FusedMatMul`) are TF-internal ops TFLite
    cannot express, and TFLite fuses on its own; for a fused model, convert the model the
    GraphOptimizer started from (its `source_model_uri`), which computes the same function.
    """
    ops = {node.op for node in all_nodes(read_serving_graph(model_dir).graph_def)}
    upstream = model.get_string_custom_property("source_model_uri")
    if any(op.startswith("_") for op in ops) and upstream:
        return resolve_saved_model_dir(upstream)
    return model_dir
