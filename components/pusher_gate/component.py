"""PusherGate: pushes the best candidate to a TF Serving model directory only when the
latency, size and accuracy thresholds hold, and records why it pushed or blocked.

    served = served_model_resolver(serving_dir)
    gate = PusherGate(benchmark=benchmark.outputs['benchmark'],
                      thresholds='my_thresholds.yaml', push_destination=serving_dir,
                      served_model=served.outputs['served_model'],
                      model_blessing=evaluator.outputs['blessing'])   # optional
    gate.outputs['pushed_model']  # PushedModel: pushed, pushed_version, pushed_destination
    gate.outputs['blessing']      # ModelBlessing: blessed, current_model; decision.json
"""

from __future__ import annotations

import json
from pathlib import Path

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.artifacts import ServingBenchmarkResult
from components.core.gate import Thresholds
from components.pusher_gate import executor


class PusherGateSpec(ComponentSpec):
    PARAMETERS = {
        "thresholds": ExecutionParameter(type=str),  # JSON, shaped like thresholds.yaml
        "push_destination": ExecutionParameter(type=str),
        "keep_last": ExecutionParameter(type=int, optional=True),
        "allowed_ops": ExecutionParameter(type=str, optional=True),  # JSON list
        "fail_on_block": ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        "benchmark": ChannelParameter(type=ServingBenchmarkResult),
        "served_model": ChannelParameter(type=standard_artifacts.PushedModel, optional=True),
        "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing,
                                           optional=True),
        "infra_blessing": ChannelParameter(type=standard_artifacts.InfraBlessing,
                                           optional=True),
        "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class PusherGate(base_component.BaseComponent):
    SPEC_CLASS = PusherGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, benchmark: types.BaseChannel, push_destination: str,
                 thresholds: str | Path | dict | Thresholds | None = None,
                 served_model: types.BaseChannel | None = None,
                 model_blessing: types.BaseChannel | None = None,
                 infra_blessing: types.BaseChannel | None = None,
                 examples: types.BaseChannel | None = None,
                 keep_last: int | None = None, allowed_ops: list[str] | None = None,
                 fail_on_block: bool = False):
        """Args:
          benchmark: ServingBenchmark's output; its models are the candidates.
          push_destination: the TF Serving model base directory (versions go under it).
          thresholds: a YAML path, a dict shaped like configs/thresholds.yaml, or
            Thresholds; default: the packaged configs/thresholds.yaml.
          served_model: the model served now (see served_model_resolver), for the
            regression thresholds against it; absent on a first push.
          model_blessing / infra_blessing: Evaluator / InfraValidator verdicts; when given
            they must be blessed, as TFX's Pusher requires.
          examples: eval examples to write TF Serving warm-up requests from.
          keep_last: keep only the newest N versions in the destination.
          allowed_ops: op types the safety scan accepts although they touch files,
            Python or the network.
          fail_on_block: a blocked push fails the run (for CI); by default the run
            succeeds with pushed=0, as TFX's Pusher does.
        """
        if isinstance(thresholds, Thresholds):
            resolved = thresholds
        elif isinstance(thresholds, dict):
            resolved = Thresholds.from_dict(thresholds)
        else:
            resolved = Thresholds.from_yaml(thresholds)  # errors name the file, at definition
        super().__init__(spec=PusherGateSpec(
            benchmark=benchmark, served_model=served_model, model_blessing=model_blessing,
            infra_blessing=infra_blessing, examples=examples,
            thresholds=json.dumps(resolved.to_dict()),
            push_destination=str(push_destination), keep_last=keep_last,
            allowed_ops=json.dumps(sorted(allowed_ops or [])),
            fail_on_block=int(fail_on_block),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
