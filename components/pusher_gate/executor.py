"""PusherGate executor: benchmark metrics + thresholds -> decision -> (maybe) a push."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.core.gate import (
    GateDecision,
    Thresholds,
    candidate_paths,
    evaluate_gate,
    load_metrics,
    log_lines,
    push_model,
)
from components.core.gate.release import (
    check_release,
    config_path,
    release_pushed,
    server_command,
)
from components.core.gate.release_mlmd import artifact_properties
from components.core.uris import Staging
from components.tfx_adapter import Artifacts, Staged, optional_single, set_custom_properties, single

METRICS_FILE = "metrics.json"
DECISION_FILE = "decision.json"


def _blessed(artifacts: dict[str, list[types.Artifact]], key: str) -> bool | None:
    artifact = optional_single(artifacts, key)
    if artifact is None:
        return None
    return artifact.has_custom_property("blessed") and bool(
        artifact.get_int_custom_property("blessed"))


def _served_metrics(artifacts: dict[str, list[types.Artifact]]) -> dict | None:
    served = optional_single(artifacts, "served_model")
    if served is None or not served.has_custom_property("pushed_metrics"):
        return None
    return json.loads(served.get_string_custom_property("pushed_metrics"))


class Executor(Staged, base_executor.BaseExecutor):
    def run(self, input_dict: Artifacts, output_dict: Artifacts,
            exec_properties: dict[str, Any], stage: Staging) -> None:
        benchmark = single(input_dict, "benchmark")
        pushed = artifact_utils.get_single_instance(output_dict["pushed_model"])
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        destination = exec_properties["push_destination"]

        metrics = load_metrics(Path(stage.input(benchmark.uri)) / METRICS_FILE)
        allowed_ops = json.loads(exec_properties.get("allowed_ops") or "[]")
        uris = candidate_paths(metrics)  # by version (a TFLite variant has two rows): URIs
        thresholds = Thresholds.from_dict(json.loads(exec_properties["thresholds"]))
        decision = evaluate_gate(
            metrics, thresholds,
            {name: stage.input(uri) for name, uri in uris.items()},
            served=_served_metrics(input_dict),
            model_blessed=_blessed(input_dict, "model_blessing"),
            infra_blessed=_blessed(input_dict, "infra_blessing"),
            allowed_ops=allowed_ops)
        decision = _with_uris(decision, uris).with_destination(destination)
        if decision.blessed and thresholds.release.mode == "labels":  # served from the config
            decision = dataclasses.replace(decision, server_command=server_command(
                decision.server_command, config_path(destination, thresholds.release),
                thresholds.release))
        for line in log_lines(decision):
            logging.info("PusherGate: %s", line)
        blessing_dir = Path(stage.output(blessing.uri))
        (blessing_dir / DECISION_FILE).write_text(json.dumps(decision.to_dict(), indent=2))
        (blessing_dir / ("BLESSED" if decision.blessed else "NOT_BLESSED")).touch()
        set_custom_properties(blessing, {
            "blessed": int(decision.blessed), "decision": decision.reason,
            "current_model": decision.chosen_path, "chosen_candidate": decision.chosen})

        if not decision.blessed:
            set_custom_properties(pushed, {"pushed": 0, "pushed_base_directory": destination,
                                           "decision": decision.reason})
            if exec_properties.get("fail_on_block"):
                decision.raise_if_blocked()
            return
        kept = _nothing_new(decision, optional_single(input_dict, "served_model"))
        if kept is not None:
            reason, recorded = kept
            logging.info("PusherGate: nothing new to push: %s", reason)
            set_custom_properties(pushed, {"pushed": 0, "pushed_base_directory": destination,
                                           **recorded, "decision": reason})
            return
        examples = optional_single(input_dict, "examples")
        release = thresholds.release
        if release.mode == "labels":
            check_release(destination, release)  # a config TF Serving refuses: no push
        keep_last = exec_properties.get("keep_last")
        result = push_model(stage.input(decision.chosen_path), destination,
                            keep_last=None if release.mode == "labels" else keep_last,
                            warmup_examples=stage.input(examples.uri) if examples else None,
                            serving_runtime=decision.runtime, allowed_ops=allowed_ops,
                            configuration=decision.configuration,
                            server_command=decision.server_command)
        logging.info("PusherGate: pushed %s as version %d to %s", decision.chosen,
                     result.version, result.path)
        released = {}
        if release.mode == "labels":
            outcome = release_pushed(destination, result.version, release,
                                     keep_last=keep_last)
            released = artifact_properties(outcome)
            if outcome.pending:
                logging.info("PusherGate: next step: %s", outcome.pending)
        logging.info("PusherGate: serve it with: %s", decision.serving_command())
        set_custom_properties(pushed, {**released,
            "pushed": 1, "pushed_version": str(result.version),
            "pushed_destination": result.path, "pushed_base_directory": destination,
            "pushed_model_name": decision.chosen, "pushed_model_uri": decision.chosen_path,
            "pushed_metrics": json.dumps(metrics.models[decision.row].to_dict()),
            "pushed_configuration": decision.label or "",
            "warmup_requests": result.warmup_requests, "decision": decision.reason})


def _nothing_new(decision: GateDecision, served: types.Artifact | None
                 ) -> tuple[str, dict[str, str]] | None:
    """Why nothing new is pushed although the gate blessed a pair, with what to record
    beside the reason: the pair is the served version in the same configuration, or it is
    not faster than the served version with confidence (decision.served_stays). None: push."""
    if served is not None and served.has_custom_property("pushed_model_uri") and (
            served.get_string_custom_property("pushed_model_uri") == decision.chosen_path
            ) and _served_configuration(served) == (decision.label or "default"):
        version = served.get_string_custom_property("pushed_version")
        return (f"'{decision.chosen}' is already served as version {version}, in the "
                f"configuration chosen ({decision.label or 'default'})",
                {"served_version": version})
    if decision.served_stays:
        return f"'{decision.chosen}' passed, but {decision.served_stays}", {}
    return None


def _served_configuration(served: types.Artifact) -> str:
    """The configuration label the served version was pushed with (older pushes: the
    default configuration, the only one then)."""
    if served.has_custom_property("pushed_configuration"):
        return served.get_string_custom_property("pushed_configuration") or "default"
    return "default"


def _with_uris(decision: GateDecision, uris: dict[str, str]) -> GateDecision:
    """The decision naming models by their URIs, not by this step's local copies."""
    return dataclasses.replace(
        decision, chosen_path=uris.get(decision.chosen) if decision.chosen else None,
        candidates=[dataclasses.replace(c, path=uris.get(c.model, c.path))
                    for c in decision.candidates])
