"""Verify a produced model against its source on the same inputs.

Both models run the way TF Serving runs them (see serving_session). Inputs are the
user's examples or representative ones generated from the source's signatures (see
inputs). Every output of every signature is compared: max absolute and relative
difference, and top-1 agreement for classifier-shaped outputs (float, [batch, classes]).

TF Serving's servers may run oneDNN or not (see `onednn`), and a graph can run under one
and fail under the other. Where this process runs oneDNN, a candidate is also run in a
child process with it off (`TF_ENABLE_ONEDNN_OPTS=0`), unless it needs oneDNN (recorded in
its serving requirements); the result records which settings were checked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from components.core.choices import MIN_TOP1_AGREEMENT
from components.core.errors import ServoptError
from components.core.examples import batches_for_signature, load_npz, npz_mismatch
from components.core.inputs import (
    GENERATED_INPUTS,
    example_feature_specs,
    generate_inputs,
    vocabulary_tokens,
)
from components.core.model_io import read_saved_model, serving_meta_graph
from components.core.onednn_off import run_without_onednn
from components.core.requirements import ONEDNN_ENV
from components.core.serving_session import ServingSession, run_signatures


@dataclass(frozen=True)
class Tolerance:
    """When a candidate's outputs count as the source's.

    Every output: |candidate - source| <= atol + rtol * max|source| elementwise (rtol is
    relative to the output's scale, so values near zero are not held to a tighter bound).
    Classifier outputs ([batch, classes] floats) with `min_top1_agreement` set may instead
    keep the decision: top-1 agreement >= min_top1_agreement. Either way a flip between two
    classes the source itself scored as a near tie does not fail a model whose outputs
    barely moved.
    """

    atol: float = 1e-5
    rtol: float = 1e-5
    min_top1_agreement: float | None = None

    def describe(self) -> str:
        text = f"|diff| <= {self.atol:g} + {self.rtol:g}*max|source|"
        if self.min_top1_agreement is not None:
            text += f" or, for classifiers, top-1 agreement >= {self.min_top1_agreement:.0%}"
        return text


FLOAT32_TOLERANCE = Tolerance(atol=1e-5, rtol=1e-5)
# TFLite's float kernels sum in another order than TF's: the same function, not the same bits.
TFLITE_FLOAT32_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4)
# Quantized weights move every output a little; what must not move is the decision.
QUANTIZED_TOLERANCE = Tolerance(atol=0.01, rtol=0.01, min_top1_agreement=MIN_TOP1_AGREEMENT)


@dataclass
class OutputComparison:
    signature: str
    output: str
    max_abs_diff: float
    max_rel_diff: float
    top1_agreement: float | None
    within_tolerance: bool


@dataclass
class VerificationResult:
    num_examples: int
    max_abs_diff: float
    top1_agreement: float | None
    tolerance: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    outputs: list[OutputComparison] = field(default_factory=list)
    onednn_checked: list[str] = field(default_factory=list)  # e.g. ["on", "off"]

    def to_dict(self) -> dict:
        return asdict(self)


# The inputs of one verification batch hold at most this many bytes: a CNN's activations
# grow with its input, and a step verifies the source and the candidate (and a oneDNN-off
# child) on the same batches. 4 MiB is 6 images of 224x224x3 floats a batch (ResNet50,
# MobileNetV2); the digits demo's 28x28 images stay at 32.
VERIFY_BATCH_BYTES = 4 << 20
STRING_BYTES = 64  # a string input's element, for that estimate


def example_bytes(signature) -> int:
    """Bytes of one example's inputs to `signature` (a SignatureDef): unknown dimensions
    count 1, strings STRING_BYTES an element."""
    from components.core.tf_setup import tf

    total = 0
    for info in signature.inputs.values():
        shape = info.tensor_shape
        count = 1 if shape.unknown_rank else int(np.prod([max(d.size, 1)
                                                          for d in shape.dim[1:]]))
        dtype = tf.as_dtype(info.dtype)
        total += count * (STRING_BYTES if dtype == tf.string else max(dtype.size, 1))
    return total


def verification_batch_size(signatures: dict, most: int) -> int:
    """`most`, or fewer so a batch of the largest example holds VERIFY_BATCH_BYTES."""
    largest = max((example_bytes(sig) for sig in signatures.values()), default=1)
    return max(1, min(most, VERIFY_BATCH_BYTES // max(largest, 1)))


def is_classifier_output(values: np.ndarray) -> bool:
    return values.ndim == 2 and values.shape[1] >= 2 and np.issubdtype(values.dtype, np.floating)


class Reference:
    """The source model's outputs on a fixed set of inputs, to compare candidates with."""

    def __init__(self, source_dir: Path, num_examples: int, batch_size: int = 32,
                 seed: int = 0, examples: Path | None = None, keep_session: bool = False):
        """Inputs come from `examples` (TFRecords of tf.Example, or .npz) for each signature
        they fit, and are generated from the signature otherwise. With `keep_session`, the
        source's Session stays open for `take_source_session` (freezing reads variables
        from it: a large model is then loaded once, not twice)."""
        meta_graph = serving_meta_graph(read_saved_model(source_dir), source_dir)
        rng = np.random.default_rng(seed)
        tokens = vocabulary_tokens(source_dir)
        specs = example_feature_specs(meta_graph.graph_def)
        source = ServingSession(source_dir)
        batch_size = verification_batch_size(source.signatures, batch_size)
        batches = max(1, -(-num_examples // batch_size))
        try:
            self.inputs = {}
            fitted = []
            for name, sig in source.signatures.items():
                real = (batches_for_signature(sig, examples, num_examples, batch_size)
                        if examples is not None else None)
                if real:
                    fitted.append(name)
                self.inputs[name] = real or [
                    generate_inputs(sig, specs, batch_size, rng, tokens)
                    for _ in range(batches)]
            if examples is not None and not fitted:  # not silently on generated inputs
                raise npz_mismatch(Path(examples), load_npz(Path(examples)),
                                   source.signatures)
            self.generated = set(self.inputs) - set(fitted)  # signatures on generated inputs
            self.outputs = {}
            for name, feeds in self.inputs.items():
                try:
                    self.outputs[name] = [source.run(name, feed) for feed in feeds]
                except ServoptError as err:
                    if name not in self.generated:
                        raise
                    raise ServoptError(f"{err}; {GENERATED_INPUTS}") from None
        except BaseException:
            source.close()  # kept only for a reference that exists
            raise
        finally:
            if not keep_session:
                source.close()
        self._source_session = source if keep_session else None
        self.num_examples = max(sum(len(next(iter(f.values()))) for f in feeds)
                                for feeds in self.inputs.values())

    def take_source_session(self, model_dir: Path) -> ServingSession | None:
        """The source's open Session if `model_dir` is the source; the caller closes it."""
        session = self._source_session
        if session is None or Path(model_dir) != session.model_dir:
            return None
        self._source_session = None
        return session

    def close_source_session(self) -> None:
        if self._source_session is not None:
            self._source_session.close()
            self._source_session = None

    def compare(self, candidate_dir: Path, tolerance: Tolerance,
                needs_onednn: bool = False) -> VerificationResult:
        """Runs the SavedModel at `candidate_dir` on the reference inputs and compares;
        where this process runs oneDNN, also with oneDNN off, unless `needs_onednn`."""
        from components.core.onednn import onednn_enabled

        result = compare_outputs(self, run_signatures(candidate_dir, self.inputs), tolerance)
        here = "on" if onednn_enabled() else "off"
        result.onednn_checked = [here]
        if here == "on" and not needs_onednn:
            result.onednn_checked.append("off")
            off_label = f"with oneDNN off ({ONEDNN_ENV}=0)"
            try:
                off = compare_outputs(self, run_without_onednn(candidate_dir, self.inputs),
                                      tolerance)
            except RuntimeError as err:
                result.failures.append(f"{off_label} the model fails: {err}")
                result.passed = False
                return result
            result.failures += [f"{off_label}: {f}" for f in off.failures]
            result.passed = result.passed and off.passed
            result.max_abs_diff = max(result.max_abs_diff, off.max_abs_diff)
        return result


def compare_outputs(reference: Reference, produced: dict[str, list[dict[str, np.ndarray]]],
                    tolerance: Tolerance, signatures: list[str] | None = None
                    ) -> VerificationResult:
    """Compares a candidate's outputs (signature -> one dict per reference batch) on
    `signatures` (default: every signature of the reference)."""
    expected_signatures = set(reference.inputs if signatures is None else signatures)
    failures = [f"signature '{name}' is missing"
                for name in sorted(expected_signatures - set(produced))]
    comparisons: list[OutputComparison] = []
    for name, batches in produced.items():
        expected = reference.outputs[name]
        for key in sorted(expected[0]):
            comparison = _compare_output(name, key, [o[key] for o in expected],
                                         [p.get(key) for p in batches], tolerance)
            comparisons.append(comparison)
            if not comparison.within_tolerance:
                failures.append(_failure_text(comparison, tolerance))
    agreements = [c.top1_agreement for c in comparisons if c.top1_agreement is not None]
    return VerificationResult(
        num_examples=reference.num_examples,
        max_abs_diff=max((c.max_abs_diff for c in comparisons), default=0.0),
        top1_agreement=min(agreements) if agreements else None,
        tolerance=tolerance.describe(),
        passed=not failures,
        failures=failures,
        outputs=comparisons)


def _compare_output(signature: str, key: str, expected: list[np.ndarray],
                    actual: list[np.ndarray | None], tolerance: Tolerance) -> OutputComparison:
    expected = [np.asarray(e) for e in expected]  # a scalar string output comes as bytes
    actual = [None if a is None else np.asarray(a) for a in actual]
    if any(a is None for a in actual) or any(
            a.shape != e.shape for a, e in zip(actual, expected, strict=True)):
        return OutputComparison(signature, key, float("inf"), float("inf"), None, False)
    if not np.issubdtype(expected[0].dtype, np.number):  # strings, e.g. predicted labels
        same = all(np.array_equal(a, e) for a, e in zip(actual, expected, strict=True))
        return OutputComparison(signature, key, 0.0 if same else float("inf"),
                                0.0 if same else float("inf"), None, same)
    ref = np.concatenate([e.reshape(e.shape[0], -1) if e.ndim else e.reshape(1, 1)
                          for e in expected]).astype(np.float64)
    got = np.concatenate([a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
                          for a in actual]).astype(np.float64)
    diff = np.abs(got - ref)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    within = max_abs <= tolerance.atol + tolerance.rtol * scale
    top1 = None
    if is_classifier_output(expected[0]):
        top1 = float(np.mean(np.argmax(got, axis=1) == np.argmax(ref, axis=1)))
        if tolerance.min_top1_agreement is not None:
            within = within or top1 >= tolerance.min_top1_agreement
    return OutputComparison(signature, key, max_abs, max_rel, top1, within)


def _failure_text(c: OutputComparison, tolerance: Tolerance) -> str:
    text = f"{c.signature}/{c.output}: max abs diff {c.max_abs_diff:.3g}"
    if c.top1_agreement is not None:
        text += f", top-1 agreement {c.top1_agreement:.2%}"
    return f"{text} (tolerance {tolerance.describe()})"
