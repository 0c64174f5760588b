"""TFLite inside the SavedModel, for TF Serving's TFLite runtime.

TF Serving started with `--prefer_tflite_model=true` serves `model.tflite` from the
SavedModel version directory (its TfLiteSession: builtin ops only, no Flex, signatures
read from the TFLite model) and serves `saved_model.pb` from the same directory without
the flag. So a TFLite variant is the fp32 SavedModel plus `model.tflite`, both verified.

Modes: `float32` (plain conversion), `float16` (fp16 weights), `dynamic_int8` (int8
weights, activations quantized at run time), `full_int8` (int8 weights and activations,
calibrated on the verification inputs: the eval split when Examples are given). Inputs and
outputs stay float32, so the same Predict requests work on both paths. A signature that
does not convert with builtin ops (e.g. tf.Example parsing) is left out with the
converter's reason; TF Serving then serves it only from saved_model.pb.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from components.core.tf_setup import quiet_stderr, tf

import numpy as np

from components.core.errors import ServoptError, StepSkipped
from components.core.model_io import ServingGraph, write_serving_graph
from components.core.requirements import (
    PREFER_TFLITE_FLAG,
    TFLITE_MODEL_FILE,
    TFLITE_RUNTIME,
    ServingRequirements,
)
from components.core.rewrite import CannotUnfuse, unfuse
from components.core.serving_session import first_line
from components.core.verify import Reference, Tolerance, VerificationResult, compare_outputs

TFLITE_MODES = ("float32", "float16", "dynamic_int8", "full_int8")
TFLITE_PRECISION = {"float32": "float32", "float16": "float16-weights",
                    "dynamic_int8": "int8-dynamic-range", "full_int8": "int8"}
CALIBRATION_BATCHES = 100  # representative samples (batch 1 each) for full_int8


@dataclass
class TFLiteConversion:
    flatbuffer: bytes
    mode: str
    signatures: list[str]
    skipped_signatures: dict[str, str] = field(default_factory=dict)  # name -> reason

    def requirements(self) -> ServingRequirements:
        skipped = "; ".join(f"'{k}' served from saved_model.pb only: {v}"
                            for k, v in self.skipped_signatures.items())
        return ServingRequirements(runtime=TFLITE_RUNTIME, precision=TFLITE_PRECISION[self.mode],
                                   server_flags=(PREFER_TFLITE_FLAG,), note=skipped)


def validate_mode(mode: str) -> str:
    if mode not in TFLITE_MODES:
        raise ServoptError(f"unknown TFLite mode '{mode}'; known modes: "
                           f"{', '.join(TFLITE_MODES)}")
    return mode


# --- conversion ------------------------------------------------------------------------

def _converter(model_dir: Path, signatures: list[str], mode: str,
               representative: Reference | None):
    converter = tf.lite.TFLiteConverter.from_saved_model(str(model_dir),
                                                         signature_keys=signatures)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "full_int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: _calibration_samples(representative,
                                                                        signatures)
    return converter


def _calibration_samples(reference: Reference, signatures: list[str]) -> Iterator:
    """(signature, inputs) samples of batch 1, drawn from the verification inputs."""
    for name in signatures:
        count = 0
        for feed in reference.inputs[name]:
            for i in range(len(next(iter(feed.values())))):
                if count == CALIBRATION_BATCHES:
                    break
                count += 1
                yield name, {k: v[i:i + 1] for k, v in feed.items()}


def _convert(model_dir: Path, signatures: list[str], mode: str,
             reference: Reference | None) -> bytes:
    with warnings.catch_warnings(), quiet_stderr(replay_on_error=False):  # MLIR dumps
        warnings.simplefilter("ignore")
        return _converter(model_dir, signatures, mode, reference).convert()


def convert_signatures(graph: ServingGraph, mode: str, reference: Reference
                       ) -> TFLiteConversion:
    """Converts every signature that converts with builtin ops; skips if none does."""
    validate_mode(mode)
    names = [n for n in graph.signatures if n in reference.inputs]
    with tempfile.TemporaryDirectory(prefix="servopt-tflite-") as scratch:
        source = Path(scratch) / "model"
        source.mkdir()
        try:  # Grappler's fused ops are TF-internal: the converter reads standard ops
            standard = unfuse(graph.graph_def)
        except CannotUnfuse as err:
            raise StepSkipped(f"{err} for TFLite") from None
        write_serving_graph(graph.with_graph(standard), source)
        try:
            return TFLiteConversion(_convert(source, names, mode, reference), mode, names)
        except Exception:  # the converter raises many types; find the signatures that fail
            pass
        converted, skipped = [], {}
        for name in names:
            try:
                _convert(source, [name], mode, reference)
                converted.append(name)
            except Exception as err:  # ConverterError, ValueError, RuntimeError, ...
                skipped[name] = _converter_reason(err)
        if not converted:
            reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
            raise StepSkipped(f"no signature converts to TFLite {mode} with builtin ops "
                              f"(TF Serving's TfLiteSession has no Flex ops): {reasons}")
        try:
            flatbuffer = _convert(source, converted, mode, reference)
        except Exception as err:
            raise StepSkipped(f"TFLite {mode} conversion failed: {_converter_reason(err)}"
                              ) from None
    return TFLiteConversion(flatbuffer, mode, converted, skipped)


def _converter_reason(err: Exception) -> str:
    """The converter's complaint in a line: the ops TFLite has no builtin kernel for."""
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op",
                                str(err))))
    if ops:
        return f"ops with no TFLite builtin kernel: {', '.join(ops)}"
    return first_line(err)[:300]


# --- running ---------------------------------------------------------------------------

class TFLiteRunner:
    """Runs the signatures of a .tflite model with tf.lite.Interpreter, a batch per call."""

    def __init__(self, path: Path, threads: int | None = None):
        with warnings.catch_warnings():  # tf.lite.Interpreter's move to ai_edge_litert
            warnings.simplefilter("ignore")
            self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
        self.signatures = list(self.interpreter.get_signature_list())

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        runner = self.interpreter.get_signature_runner(signature)
        return runner(**inputs)  # resizes the inputs to the batch given


def verify_tflite(path: Path, reference: Reference, tolerance: Tolerance,
                  signatures: list[str]) -> VerificationResult:
    runner = TFLiteRunner(path)
    produced = {name: [runner.run(name, feed) for feed in reference.inputs[name]]
                for name in signatures}
    return compare_outputs(reference, produced, tolerance, signatures)


def tflite_file(model_dir: Path) -> Path:
    return Path(model_dir) / TFLITE_MODEL_FILE
