"""GraphOptimizer: named Grappler passes, re-exported as a servable SavedModel.

    optimizer = GraphOptimizer(model=freezer.outputs['frozen_model'],
                               passes=['remove_identity', 'fold_constants', 'fuse_ops'])
    optimizer.outputs['optimized_model']
"""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.core.choices import DEFAULT_PASSES, validate_passes
from components.graph_optimizer import executor
from components.tfx_params import VERIFICATION_PARAMETERS, verification_parameters


class GraphOptimizerSpec(ComponentSpec):
    PARAMETERS = {
        "passes": ExecutionParameter(type=str),  # JSON list of pass names
        **VERIFICATION_PARAMETERS,
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {"optimized_model": ChannelParameter(type=standard_artifacts.Model)}


class GraphOptimizer(base_component.BaseComponent):
    SPEC_CLASS = GraphOptimizerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, passes: list[str] | None = None,
                 examples: types.BaseChannel | None = None,
                 num_examples: int | None = None, atol: float | None = None,
                 rtol: float | None = None, allowed_ops: list[str] | None = None):
        """Args:
          model: a Model channel; a model that still has variables is frozen first.
          passes: pass names in order (default: all, see components.core.optimize.PASSES).
          examples, num_examples, atol, rtol: verification (configs/optimization.yaml).
          allowed_ops: unsafe op types the model may run while verified (default none).
        """
        chosen = validate_passes(passes if passes is not None else DEFAULT_PASSES)
        super().__init__(spec=GraphOptimizerSpec(
            model=model, examples=examples, passes=json.dumps(chosen),
            optimized_model=types.Channel(type=standard_artifacts.Model),
            **verification_parameters(num_examples, atol, rtol, allowed_ops)))
