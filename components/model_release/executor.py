"""ModelRelease executor: maps the artifacts onto components.core.gate.release."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.core.gate import Thresholds
from components.core.gate import release as rel
from components.core.gate.release_mlmd import artifact_properties
from components.core.uris import Staging
from components.tfx_adapter import Artifacts, Staged, optional_single, set_custom_properties

RELEASE_FILE = "release.json"


class Executor(Staged, base_executor.BaseExecutor):
    def run(self, input_dict: Artifacts, output_dict: Artifacts,
            exec_properties: dict[str, Any], stage: Staging) -> None:
        out = artifact_utils.get_single_instance(output_dict["release"])
        destination = exec_properties["push_destination"]
        operation = exec_properties["operation"]
        thresholds = Thresholds.from_dict(json.loads(exec_properties["thresholds"]))
        config = thresholds.release
        if operation == "label":
            result = rel.label(destination, config)
        elif operation == "promote":
            check = None
            if exec_properties.get("check_promotion", 1) and config.check_promotion:
                from components.core.gate.release_check import promotion_check

                examples = optional_single(input_dict, "examples")
                check = promotion_check(
                    destination, thresholds,
                    examples=stage.input(examples.uri) if examples else None,
                    allowed_ops=json.loads(exec_properties.get("allowed_ops") or "[]"),
                    progress=lambda line: logging.info("ModelRelease: %s", line))
            result = rel.promote(destination, config, check=check)
        else:
            result = rel.rollback(destination, config,
                                  canary_only=operation == "rollback_canary")
        logging.info("ModelRelease: %s: %s -> %s", operation, result.labels_before,
                     result.labels_after)
        (Path(stage.output(out.uri)) / RELEASE_FILE).write_text(
            json.dumps(result.to_dict(), indent=2))
        set_custom_properties(out, {**artifact_properties(result),
                                    "pushed_base_directory": destination})
