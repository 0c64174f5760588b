"""ServingBenchmark: latency percentiles, throughput, load time, size and accuracy of the
Trainer's model and every candidate, side by side in one run, the way TF Serving runs them.

    benchmark = ServingBenchmark(
        baseline_model=trainer.outputs['model'],
        candidates=[freezer.outputs['frozen_model'], optimizer.outputs['optimized_model'],
                    quantizer.outputs['quantized_model']],
        examples=example_gen.outputs['examples'], label_key='label')
    benchmark.outputs['benchmark']  # metrics.json + report.html; headline custom properties
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.artifacts import ServingBenchmarkResult
from components.core.benchmark.config import BenchmarkConfig
from components.core.errors import ServoptError
from components.serving_benchmark import executor
from components.serving_benchmark.keys import CANDIDATE_KEYS, MAX_CANDIDATES


class ServingBenchmarkSpec(ComponentSpec):
    PARAMETERS = {"settings": ExecutionParameter(type=str)}  # BenchmarkConfig.to_dict(), JSON
    INPUTS = {
        "baseline_model": ChannelParameter(type=standard_artifacts.Model),
        **{key: ChannelParameter(type=standard_artifacts.Model, optional=True)
           for key in CANDIDATE_KEYS},
        "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
        # The version served now (pusher_gate.served_model_resolver): measured in the same
        # rounds as the candidates, so the gate's vs_served comparison is paired.
        "served_model": ChannelParameter(type=standard_artifacts.PushedModel, optional=True),
    }
    OUTPUTS = {"benchmark": ChannelParameter(type=ServingBenchmarkResult)}


class ServingBenchmark(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = ServingBenchmarkSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, baseline_model: types.BaseChannel,
                 candidates: list[types.BaseChannel],
                 examples: types.BaseChannel | None = None, label_key: str | None = None,
                 settings: BenchmarkConfig | str | Path | None = None,
                 served_model: types.BaseChannel | None = None):
        """Args:
          baseline_model: the Trainer's Model; every candidate is compared with it.
          candidates: Model channels to measure (Freezer, GraphOptimizer, Quantizer, ...).
          examples: labelled eval Examples: accuracy, top-1 agreement, realistic inputs.
          label_key: the label feature in `examples` (overrides the settings').
          settings: BenchmarkConfig or a YAML path (keys of configs/benchmark.yaml);
            default: the packaged configs/benchmark.yaml.
          served_model: the PushedModel served now at the push destination
            (pusher_gate.served_model_resolver): measured as the row `served` in the same
            rounds as the candidates, for the gate's paired vs_served checks.
        """
        if not isinstance(settings, BenchmarkConfig):
            settings = BenchmarkConfig.from_yaml(settings)
        if label_key is not None:
            settings = dataclasses.replace(settings, label_key=label_key)
        settings.for_run().validate()  # bad settings fail at pipeline definition
        if not 1 <= len(candidates) <= MAX_CANDIDATES:
            raise ServoptError(f"ServingBenchmark takes 1 to {MAX_CANDIDATES} candidates, "
                               f"got {len(candidates)}")
        super().__init__(spec=ServingBenchmarkSpec(
            baseline_model=baseline_model,
            **dict(zip(CANDIDATE_KEYS, candidates, strict=False)),
            examples=examples, served_model=served_model,
            settings=json.dumps(settings.to_dict()),
            benchmark=types.Channel(type=ServingBenchmarkResult)))
