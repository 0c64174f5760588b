"""Execution parameters the model-producing components share, and their mapping to the
library's OptimizeConfig. Unset parameters take the library defaults."""

from __future__ import annotations

from typing import Any

from tfx.types.component_spec import ExecutionParameter

from components.core.steps import OptimizeConfig
from components.core.verify import Tolerance

VERIFICATION_PARAMETERS = {
    "num_examples": ExecutionParameter(type=int, optional=True),
    "atol": ExecutionParameter(type=float, optional=True),
    "rtol": ExecutionParameter(type=float, optional=True),
}


def verification_parameters(num_examples: int | None, atol: float | None,
                            rtol: float | None) -> dict[str, Any]:
    return {"num_examples": num_examples, "atol": atol, "rtol": rtol}


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
        **{k: v for k, v in overrides.items() if v is not None}})


def _or(value, default):
    return default if value is None else value
