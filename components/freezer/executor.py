"""Freezer executor: the input Model's SavedModel, frozen, into the output Model."""

from __future__ import annotations

from typing import Any

from tfx import types
from tfx.dsl.components.base import base_executor

from components.core.steps import Step
from components.tfx_adapter import run_model_step
from components.tfx_params import optimize_config


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        run_model_step(input_dict, output_dict["frozen_model"], Step("freeze"),
                       optimize_config(exec_properties))
