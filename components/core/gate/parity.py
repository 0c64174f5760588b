"""Signature parity: the pushed version must serve the signatures its clients call.

With `--prefer_tflite_model=true` TF Serving loads a version holding `model.tflite` from
that file alone (tensorflow/serving servables/tensorflow/saved_model_bundle_factory.cc,
`LoadTfLiteModel`; saved_model.pb is not loaded) and serves only the signatures its
`signature_defs_metadata` declares (tflite_session.cc, see core/tflite_session). A TFLite
variant that could not convert a signature of its source (e.g. tf.Example parsing) is
then not a drop-in replacement: clients of that signature get "signature not found".

The signatures clients need are `required_signatures` in the thresholds, default every
signature of the baseline (the Trainer's model, benchmarked in the same run; where its
files cannot be read here, the candidate's own saved_model.pb, which keeps its source's
signatures). The check compares them with what the runtime that serves the candidate
exposes, resolved as TF Serving resolves it.
"""

from __future__ import annotations

from pathlib import Path

from components.core.benchmark.schema import BenchmarkResult
from components.core.errors import ServoptError
from components.core.gate.decision import REQUIREMENT, Check
from components.core.model_io import read_saved_model, serving_meta_graph, serving_signatures
from components.core.model_paths import resolve_saved_model_dir
from components.core.requirements import (
    TFLITE_MODEL_FILE,
    TFLITE_RUNTIME,
    read_requirements,
)
from components.core.tflite_session import TfLiteSession

THRESHOLD = "signatures"


def saved_model_signatures(path: str | Path) -> list[str]:
    return sorted(_saved_model_signature_defs(path))


def baseline_signatures(metrics: BenchmarkResult) -> list[str] | None:
    """The baseline's signatures, from its SavedModel; None where it cannot be read."""
    baseline = metrics.models.get(metrics.baseline or "")
    if baseline is None:
        return None
    try:
        return saved_model_signatures(baseline.path)
    except ServoptError:
        return None


def _saved_model_signature_defs(path: str | Path) -> dict:
    model_dir = resolve_saved_model_dir(path)
    return serving_signatures(serving_meta_graph(read_saved_model(model_dir), model_dir))


def served_signatures(model_dir: str | Path, runtime: str | None) -> dict:
    """What TF Serving serves from the version on `runtime`: model.tflite's signatures as
    TfLiteSession resolves them (refused without signature_defs_metadata: then TF Serving
    serves only a generated signature, not the model's API), or saved_model.pb's."""
    if runtime != TFLITE_RUNTIME:
        return _saved_model_signature_defs(model_dir)
    path = Path(model_dir)
    path = path if path.suffix == ".tflite" else resolve_saved_model_dir(path) / (
        TFLITE_MODEL_FILE)
    with TfLiteSession(path) as session:
        if session.generated:
            [generated] = session.signatures.values()
            raise ServoptError(
                f"{path} has no signature_defs_metadata (made before servopt wrote it), so "
                "TF Serving serves only a generated 'serving_default' with inputs "
                f"{sorted(generated.inputs)} and outputs {sorted(generated.outputs)}; "
                "create the TFLite variant again")
        return dict(session.signatures)


def _key_mismatches(served: dict, source: dict) -> list[str]:
    """Signatures served under other input/output keys than the SavedModel's."""
    return [f"'{name}' has inputs {sorted(sig.inputs)} and outputs {sorted(sig.outputs)}, "
            f"saved_model.pb {sorted(source[name].inputs)} and {sorted(source[name].outputs)}"
            for name, sig in sorted(served.items()) if name in source and (
                set(sig.inputs) != set(source[name].inputs)
                or set(sig.outputs) != set(source[name].outputs))]


def signature_parity_check(name: str, model_dir: str | Path, runtime: str | None,
                           required: tuple[str, ...] | None,
                           baseline: list[str] | None) -> tuple[Check, list[str]]:
    """The check, and the signatures the candidate serves on `runtime` ([] if unknown)."""
    where = "model.tflite" if runtime == TFLITE_RUNTIME else "saved_model.pb"
    try:
        signature_defs = served_signatures(model_dir, runtime)
        served = sorted(signature_defs)
        if required is None:
            source = "the baseline's" if baseline is not None else "its source's"
            needed = baseline if baseline is not None else saved_model_signatures(model_dir)
        else:
            source, needed = "required_signatures", list(required)
        mismatched = (_key_mismatches(signature_defs, _saved_model_signature_defs(model_dir))
                      if runtime == TFLITE_RUNTIME else [])
    except ServoptError as err:
        return Check(THRESHOLD, name, None, list(required or []), False,
                     f"cannot tell which signatures TF Serving serves from its {where}: "
                     f"{err}", kind=REQUIREMENT), []
    if mismatched:
        return Check(THRESHOLD, name, served, needed, False,
                     f"its {where} serves signatures under other keys than its "
                     f"saved_model.pb: {'; '.join(mismatched)}; create the TFLite variant "
                     "again", kind=REQUIREMENT), served
    missing = [s for s in needed if s not in served]
    if not missing:
        return Check(THRESHOLD, name, served, needed, True,
                     f"serves {source} signatures {needed} from its {where}",
                     kind=REQUIREMENT), served
    why = _lacking_reasons(model_dir, missing) if runtime == TFLITE_RUNTIME else ""
    fix = ("TF Serving does not fall back to saved_model.pb for them; if clients call "
           f"only {served}, list them in required_signatures, or serve it without "
           "--prefer_tflite_model" if runtime == TFLITE_RUNTIME else
           f"if clients call only {served}, list them in required_signatures")
    return Check(THRESHOLD, name, served, needed, False,
                 f"its {where} serves {served} and lacks {source} signature(s) {missing}"
                 f"{why}; {fix}", kind=REQUIREMENT), served


def _lacking_reasons(model_dir: str | Path, missing: list[str]) -> str:
    try:
        recorded = read_requirements(resolve_saved_model_dir(model_dir)).lacks_signatures
    except ServoptError:
        return ""
    reasons = [f"'{s}': {recorded[s]}" for s in missing if s in recorded]
    return f" ({'; '.join(reasons)})" if reasons else ""
