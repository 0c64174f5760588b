"""Freezer executor: the input Model's SavedModel, frozen, into the output Model."""

from __future__ import annotations

from typing import Any

from tfx.dsl.components.base import base_executor

from components.core.identity import FREEZER, ModelIdentity
from components.core.steps import Step
from components.core.uris import Staging
from components.tfx_adapter import Artifacts, Staged, component_id, run_model_step
from components.tfx_params import optimize_config


class Executor(Staged, base_executor.BaseExecutor):
    def run(self, input_dict: Artifacts, output_dict: Artifacts,
            exec_properties: dict[str, Any], stage: Staging) -> None:
        run_model_step(input_dict, output_dict["frozen_model"], Step("freeze"),
                       optimize_config(exec_properties), stage,
                       ModelIdentity(component_id(self, FREEZER)))
