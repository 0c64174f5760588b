"""Execution parameters the model-producing components share, and their mapping to the
library's OptimizeConfig. Unset parameters take the library defaults."""

from __future__ import annotations

import json
from typing import Any

from tfx.types.component_spec import ExecutionParameter

from components.core.steps import OptimizeConfig
from components.core.verify import Tolerance

VERIFICATION_PARAMETERS = {
    "num_examples": ExecutionParameter(type=int, optional=True),
    "atol": ExecutionParameter(type=float, optional=True),
    "rtol": ExecutionParameter(type=float, optional=True),
    "allowed_ops": ExecutionParameter(type=str, optional=True),  # JSON list of op types
}


def verification_parameters(num_examples: int | None, atol: float | None,
                            rtol: float | None, allowed_ops: list[str] | None = None
                            ) -> dict[str, Any]:
    """allowed_ops: unsafe op types (see the gate's safety scan) the source model may run
    when it is verified; a model with others is refused before it runs."""
    return {"num_examples": num_examples, "atol": atol, "rtol": rtol,
            "allowed_ops": json.dumps(sorted(allowed_ops)) if allowed_ops else None}


def optimize_config(exec_properties: dict[str, Any], quantized: bool = False,
                    **overrides: Any) -> OptimizeConfig:
    """OptimizeConfig from exec_properties; atol/rtol apply to the step's own tolerance."""
    defaults = OptimizeConfig()
    base = defaults.quantized_tolerance if quantized else defaults.float32_tolerance
    tolerance = Tolerance(
        atol=_or(exec_properties.get("atol"), base.atol),
        rtol=_or(exec_properties.get("rtol"), base.rtol),
        min_top1_agreement=_or(exec_properties.get("min_top1_agreement"),
                               base.min_top1_agreement))
    key = "quantized_tolerance" if quantized else "float32_tolerance"
    return OptimizeConfig(**{
        **defaults.__dict__,
        "num_examples": _or(exec_properties.get("num_examples"), defaults.num_examples),
        key: tolerance,
        "allowed_ops": tuple(json.loads(exec_properties.get("allowed_ops") or "[]")),
        **{k: v for k, v in overrides.items() if v is not None}})


def _or(value, default):
    return default if value is None else value
