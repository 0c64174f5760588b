"""TFLite variants for edge targets, verified against the source like every other model.

TF Serving cannot serve TFLite, so this is a side output: the converter's dynamic-range
int8 (weights int8, activations float at run time) or float16 variant of one signature.
Models TFLite cannot express (e.g. tf.Example parsing, lookup tables) are skipped with the
converter's reason rather than converted with TF ops pulled in behind the user's back.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from components.core.errors import StepSkipped
from components.core.serving_session import first_line
from components.core.tf_setup import tf
from components.core.verify import Reference, Tolerance, VerificationResult, compare_outputs

TFLITE_FILE = "model.tflite"
SIGNATURE = "serving_default"


@dataclass
class TFLiteResult:
    path: str
    mode: str
    size_bytes: int
    verification: VerificationResult

    def to_dict(self) -> dict:
        return asdict(self)


def convert_to_tflite(model_dir: Path, mode: str = "int8") -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(model_dir),
                                                         signature_keys=[SIGNATURE])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        return converter.convert()
    except Exception as err:  # the converter raises many types (ConverterError, ValueError)
        raise StepSkipped(f"TFLite cannot convert this model: {first_line(err)}") from None


class TFLiteRunner:
    """Runs one signature of a .tflite model with tf.lite.Interpreter."""

    def __init__(self, path: Path, threads: int | None = None):
        with warnings.catch_warnings():  # tf.lite.Interpreter's move to ai_edge_litert
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = []
        for i in range(len(next(iter(inputs.values())))):  # TFLite signatures: fixed batch 1
            outputs.append(self.runner(**{k: v[i:i + 1] for k, v in inputs.items()}))
        return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def export_tflite(model_dir: Path, out_dir: Path, reference: Reference, mode: str,
                  tolerance: Tolerance) -> TFLiteResult:
    """Converts `model_dir`, verifies it against `reference`, writes out_dir/model.tflite."""
    if SIGNATURE not in reference.inputs:
        raise StepSkipped(f"the model has no '{SIGNATURE}' signature to convert")
    flatbuffer = convert_to_tflite(model_dir, mode)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{TFLITE_FILE}.partial"
    staging.write_bytes(flatbuffer)
    runner = TFLiteRunner(staging)
    produced = [runner.run(feed) for feed in reference.inputs[SIGNATURE]]
    verification = compare_outputs(reference, {SIGNATURE: produced}, tolerance, [SIGNATURE])
    if not verification.passed:
        staging.unlink()
        raise StepSkipped(f"the TFLite {mode} variant leaves the tolerance: "
                          f"{verification.failures[0]}")
    staging.rename(out_dir / TFLITE_FILE)
    return TFLiteResult(str(out_dir / TFLITE_FILE), mode, len(flatbuffer), verification)
