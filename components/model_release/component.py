"""ModelRelease: one release operation on the TF Serving model config of a destination
that PusherGate pushes to with `release: mode: labels` (docs/release.md).

    release = ModelRelease(push_destination=serving_dir, operation="promote",
                           thresholds="my_thresholds.yaml",
                           examples=example_gen.outputs["examples"])  # for the check
    release.outputs["release"]  # PushedModel: release_* custom properties, release.json

operation: `label` (step 2 of a labels push, once TF Serving has loaded the version),
`promote` (after the gate's paired check of canary vs stable, unless check_promotion is
False), `rollback`, `rollback_canary`. The output carries no `pushed` property, so the
served-model resolver (which follows pushes) does not take it for a push.
"""

from __future__ import annotations

import json
from pathlib import Path

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.core.errors import ServoptError
from components.core.gate import Thresholds
from components.model_release import executor

OPERATIONS = ("label", "promote", "rollback", "rollback_canary")


class ModelReleaseSpec(ComponentSpec):
    PARAMETERS = {
        "push_destination": ExecutionParameter(type=str),
        "operation": ExecutionParameter(type=str),
        "thresholds": ExecutionParameter(type=str),  # JSON, shaped like thresholds.yaml
        "check_promotion": ExecutionParameter(type=int, optional=True),
        "allowed_ops": ExecutionParameter(type=str, optional=True),  # JSON list
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {
        "release": ChannelParameter(type=standard_artifacts.PushedModel),
    }


class ModelRelease(base_component.BaseComponent):
    SPEC_CLASS = ModelReleaseSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, push_destination: str, operation: str,
                 thresholds: str | Path | dict | Thresholds | None = None,
                 examples: types.BaseChannel | None = None, check_promotion: bool = True,
                 allowed_ops: list[str] | None = None):
        if operation not in OPERATIONS:
            raise ServoptError(f"ModelRelease operation {operation!r}: use one of "
                               f"{', '.join(OPERATIONS)}")
        if isinstance(thresholds, Thresholds):
            resolved = thresholds
        elif isinstance(thresholds, dict):
            resolved = Thresholds.from_dict(thresholds)
        else:
            resolved = Thresholds.from_yaml(thresholds)
        super().__init__(spec=ModelReleaseSpec(
            push_destination=str(push_destination), operation=operation,
            thresholds=json.dumps(resolved.to_dict()), examples=examples,
            check_promotion=int(check_promotion),
            allowed_ops=json.dumps(sorted(allowed_ops or [])),
            release=types.Channel(type=standard_artifacts.PushedModel)))
