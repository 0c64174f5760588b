"""The choices the model steps offer, by name, with their defaults: optimization passes,
weight-quantization modes, TFLite modes, and the decisions a quantized classifier keeps.

TensorFlow-free on purpose: the settings (config), the CLI and the pipeline orchestrators
(`servopt kfp run-local`'s parent process, KFP compilation) read them without importing
TensorFlow, which costs a process about 0.6 GB and seconds. The step modules implement
exactly these names (optimize.PASSES, quantize, tflite; tests hold them to it).
"""

from __future__ import annotations

from collections.abc import Iterable

from components.core.errors import ServoptError

# Graph optimizer passes, in the order they run (optimize.PASSES says what each does).
PASS_NAMES = ("strip_unused_nodes", "remove_identity", "fold_constants", "fold_batch_norms",
              "merge_duplicate_nodes", "fuse_ops")
DEFAULT_PASSES = PASS_NAMES
# Weight quantization: the stored type of large float32 weights (quantize).
WEIGHT_MODES = ("int8", "float16")
DEFAULT_MIN_ELEMENTS = 1024  # small tensors (biases, BN vectors) are not worth a Cast
# TFLite conversions (tflite).
TFLITE_MODES = ("float32", "float16", "dynamic_int8", "full_int8")
# A quantized classifier must keep this share of its source's top-1 decisions (verify).
MIN_TOP1_AGREEMENT = 0.99


def validate_passes(names: Iterable[str], known: Iterable[str] = PASS_NAMES) -> list[str]:
    """`names` as a list; ServoptError naming the `known` passes (optimize: its registry)
    when one is unknown or none is given."""
    passes, known = list(names), list(known)
    unknown = [p for p in passes if p not in known]
    if unknown:
        raise ServoptError(f"unknown optimization pass {', '.join(map(repr, unknown))}; "
                           f"known passes: {', '.join(known)}")
    if not passes:
        raise ServoptError(f"no optimization passes given; known passes: {', '.join(known)}")
    return passes


def validate_tflite_mode(mode: str) -> str:
    if mode not in TFLITE_MODES:
        raise ServoptError(f"unknown TFLite mode '{mode}'; known modes: "
                           f"{', '.join(TFLITE_MODES)}")
    return mode
