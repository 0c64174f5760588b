"""GraphOptimizer executor: the input Model, optimized by the named passes."""

from __future__ import annotations

import json
from typing import Any

from tfx.dsl.components.base import base_executor

from components.core.choices import validate_passes
from components.core.errors import ServoptError
from components.core.identity import GRAPH_OPTIMIZER, ModelIdentity
from components.core.steps import Step
from components.core.uris import Staging
from components.tfx_adapter import Artifacts, Staged, component_id, run_model_step
from components.tfx_params import optimize_config


class Executor(Staged, base_executor.BaseExecutor):
    def run(self, input_dict: Artifacts, output_dict: Artifacts,
            exec_properties: dict[str, Any], stage: Staging) -> None:
        try:
            passes = validate_passes(json.loads(exec_properties["passes"]))
        except (json.JSONDecodeError, TypeError):
            raise ServoptError(f"passes must be a JSON list of pass names, got "
                               f"{exec_properties['passes']!r}") from None
        run_model_step(input_dict, output_dict["optimized_model"],
                       Step("optimize", "+".join(passes)), optimize_config(exec_properties),
                       stage, ModelIdentity(component_id(self, GRAPH_OPTIMIZER)))
