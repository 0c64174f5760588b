"""Execution parameters the model-producing components share, and their mapping to the
library's OptimizeConfig. Unset parameters take the library defaults."""

from __future__ import annotations

import json
from typing import Any

from tfx.types.component_spec import ExecutionParameter

from components.core import producers
from components.core.config import QuantizerSettings, settings_from_dict
from components.core.steps import OptimizeConfig

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


def optimize_config(exec_properties: dict[str, Any],
                    quantizer: QuantizerSettings | None = None) -> OptimizeConfig:
    """OptimizeConfig from exec_properties, through the settings groups the KFP steps and
    the CLI use too; unset parameters take those groups' defaults."""
    given = {"num_examples": exec_properties.get("num_examples")}
    verification = settings_from_dict(
        "verification", {k: v for k, v in given.items() if v is not None}, "parameters")
    return producers.optimize_config(
        verification, quantizer, atol=exec_properties.get("atol"),
        rtol=exec_properties.get("rtol"),
        allowed_ops=json.loads(exec_properties.get("allowed_ops") or "[]"))
