"""The digits demo pipeline: the seed experiment as a TFX pipeline.

DigitsExampleGen -> DigitsTrainer -> Freezer -> GraphOptimizer -> Quantizer
                                  -> ServingBenchmark (Trainer's model + up to 8
                                     candidates: 3 models, the bf16 and TFLite variants)
                                  -> PusherGate -> <serving_dir>/<version>/

Settings: configs/ (see pipelines/digits/config.py), overlaid by an optional user file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tfx.orchestration import metadata, pipeline

from components.core.benchmark.config import BenchmarkConfig
from components.core.gate.thresholds import Thresholds
from components.freezer import Freezer
from components.graph_optimizer import GraphOptimizer
from components.pusher_gate import PusherGate, served_model_resolver
from components.quantizer import Quantizer
from components.quantizer.keys import VARIANT_OUTPUTS
from components.serving_benchmark import ServingBenchmark
from pipelines.digits.config import load_pipeline_config
from pipelines.digits.example_gen import DigitsExampleGen
from pipelines.digits.trainer import DigitsTrainer

PIPELINE_NAME = "digits"


def _deciding(settings: BenchmarkConfig, thresholds: Thresholds) -> BenchmarkConfig:
    """The benchmark measures until the gate's speedup thresholds are decided (see
    scheduler), unless its own settings name other lines."""
    lines = {key: value for key, value in thresholds.decision_lines().items()
             if getattr(settings, key) is None}
    return dataclasses.replace(settings, **lines)


def create_pipeline(pipeline_root: Path | str, metadata_path: Path | None,
                    serving_dir: Path | str, config_path: Path | None = None,
                    beam_pipeline_args: list[str] | None = None,
                    served_model_lookup: bool = True) -> pipeline.Pipeline:
    """The pipeline. `metadata_path` None leaves MLMD to the orchestrator (Vertex, KFP);
    `served_model_lookup` adds the resolver that finds the served model in MLMD."""
    config = load_pipeline_config(config_path)
    recipe = config.recipe
    verify = {"num_examples": recipe.verification.num_examples}

    example_gen = DigitsExampleGen()
    examples = example_gen.outputs["examples"]
    trainer = DigitsTrainer(examples=examples, epochs=config.trainer.epochs,
                            seed=config.trainer.seed,
                            dense_units=config.trainer.dense_units)
    freezer = Freezer(model=trainer.outputs["model"], examples=examples, **verify)
    optimizer = GraphOptimizer(model=freezer.outputs["frozen_model"],
                               passes=recipe.graph_optimizer.passes, examples=examples,
                               **verify)
    quantizer = Quantizer(model=optimizer.outputs["optimized_model"],
                          mode=recipe.quantizer.mode,
                          min_elements=recipe.quantizer.min_elements,
                          min_top1_agreement=recipe.quantizer.min_top1_agreement,
                          bfloat16=recipe.quantizer.bfloat16, tflite=recipe.quantizer.tflite,
                          examples=examples, **verify)
    served = served_model_resolver(str(serving_dir)) if served_model_lookup else None
    benchmark = ServingBenchmark(
        baseline_model=trainer.outputs["model"],
        candidates=[freezer.outputs["frozen_model"], optimizer.outputs["optimized_model"],
                    quantizer.outputs["quantized_model"],
                    *(quantizer.outputs[key] for key in VARIANT_OUTPUTS  # those asked for
                      if key in quantizer.outputs)],
        examples=examples, settings=_deciding(config.benchmark, config.thresholds),
        served_model=served.outputs["served_model"] if served else None)
    gate = PusherGate(benchmark=benchmark.outputs["benchmark"],
                      thresholds=config.thresholds, push_destination=str(serving_dir),
                      served_model=served.outputs["served_model"] if served else None,
                      examples=examples)
    nodes = [example_gen, trainer, freezer, optimizer, quantizer, *([served] if served else []),
             benchmark, gate]
    return pipeline.Pipeline(
        pipeline_name=PIPELINE_NAME,
        pipeline_root=str(pipeline_root),
        components=nodes,
        enable_cache=True,
        metadata_connection_config=(
            metadata.sqlite_metadata_connection_config(str(metadata_path))
            if metadata_path is not None else None),
        beam_pipeline_args=beam_pipeline_args or ["--direct_num_workers=1"],
    )
