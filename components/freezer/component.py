"""Freezer: folds variables into constants and keeps only what serving needs.

    freezer = Freezer(model=trainer.outputs['model'])
    freezer.outputs['frozen_model']  # a standard Model, Format-Serving/ like Trainer's
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec

from components.freezer import executor
from components.tfx_params import VERIFICATION_PARAMETERS, verification_parameters


class FreezerSpec(ComponentSpec):
    PARAMETERS = dict(VERIFICATION_PARAMETERS)
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {"frozen_model": ChannelParameter(type=standard_artifacts.Model)}


class Freezer(base_component.BaseComponent):
    SPEC_CLASS = FreezerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel | None = None,
                 num_examples: int | None = None, atol: float | None = None,
                 rtol: float | None = None, allowed_ops: list[str] | None = None):
        """Args:
          model: a Model channel (the Trainer's or another component's output).
          examples: optional Examples to verify on (eval split); else generated inputs.
          num_examples, atol, rtol: verification settings (configs/optimization.yaml).
          allowed_ops: unsafe op types the model may run while verified (default none).
        """
        super().__init__(spec=FreezerSpec(
            model=model, examples=examples,
            frozen_model=types.Channel(type=standard_artifacts.Model),
            **verification_parameters(num_examples, atol, rtol, allowed_ops)))
