"""What every model-producing adapter shares (the TFX executors, the KFP steps): the
settings groups turned into an OptimizeConfig, the Quantizer's steps, and the record a
produced model carries on its artifact (its identity: components.core.identity, and what
was measured).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from components.core.config import QuantizerSettings, VerificationSettings
from components.core.errors import StepSkipped, VerificationError
from components.core.identity import (
    BFLOAT16_OUTPUT,
    PRODUCED_PROPERTY,
    QUANTIZED_OUTPUT,
    TFLITE_OUTPUTS,
    VARIANT_OUTPUTS,
    ModelIdentity,
)
from components.core.steps import (
    BFLOAT16_MODE,
    OptimizationReport,
    OptimizeConfig,
    Step,
    optimize_model,
)
from components.core.verify import Reference, Tolerance


def optimize_config(verification: VerificationSettings | None = None,
                    quantizer: QuantizerSettings | None = None, *,
                    examples: Path | None = None, atol: float | None = None,
                    rtol: float | None = None, allowed_ops=()) -> OptimizeConfig:
    """The library's OptimizeConfig for the settings groups. With `quantizer`, atol, rtol
    and its min_top1_agreement set the quantized tolerance, else atol and rtol set the
    float32 one."""
    verification = verification or VerificationSettings()
    defaults = OptimizeConfig()
    key = "quantized_tolerance" if quantizer else "float32_tolerance"
    base: Tolerance = getattr(defaults, key)
    tolerance = Tolerance(
        atol=base.atol if atol is None else atol, rtol=base.rtol if rtol is None else rtol,
        min_top1_agreement=(quantizer.min_top1_agreement if quantizer
                            else base.min_top1_agreement))
    return replace(defaults, num_examples=verification.num_examples, examples=examples,
                   allowed_ops=tuple(allowed_ops), **{key: tolerance},
                   **({"quantize_min_elements": quantizer.min_elements} if quantizer else {}))


def quantizer_steps(settings: QuantizerSettings) -> dict[str, Step]:
    """Output name -> the library step that makes it, for the outputs `settings` asks for
    (in QUANTIZER_OUTPUTS' order): one per TFLite mode listed."""
    steps = {QUANTIZED_OUTPUT: Step("quantize", settings.mode)}
    if settings.bfloat16:
        steps[BFLOAT16_OUTPUT] = Step("quantize", BFLOAT16_MODE)
    for mode, output in TFLITE_OUTPUTS.items():
        if mode in settings.tflite:
            steps[output] = Step("tflite", mode)
    return steps


def output_identity(component: str, output: str) -> ModelIdentity:
    return ModelIdentity(component, VARIANT_OUTPUTS.get(output))


@dataclass
class Produced:
    """One output of a producing step: its report, or why it was not produced."""

    report: OptimizationReport | None
    skipped_reason: str | None = None

    def properties(self, identity: ModelIdentity, step: Step) -> dict[str, Any]:
        if self.report is not None:
            return {**identity.properties(), PRODUCED_PROPERTY: 1}
        return {**identity.properties(), PRODUCED_PROPERTY: 0,
                "skipped_reason": self.skipped_reason, "variant": str(step)}


def produce(source, out, step: Step, config: OptimizeConfig,
            reference: Reference | None = None, variant: bool = False) -> Produced:
    """Runs `step` from `source` into `out`. A variant (`variant`) that does not apply or
    leaves the tolerance is recorded as not produced, nothing is published; any other
    output that leaves the tolerance fails."""
    if not variant:
        return Produced(optimize_model(source, out, [step], config, reference))
    try:
        return Produced(optimize_model(source, out, [step], config, reference,
                                       require_applied=True))
    except (StepSkipped, VerificationError) as not_produced:
        return Produced(None, str(not_produced))


def report_properties(report: OptimizationReport, source_uri: str) -> dict[str, Any]:
    """What was measured of a produced model, as artifact properties (TFX custom
    properties, KFP metadata)."""
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
    return {key: value for key, value in properties.items() if value is not None}
