"""The digits demo pipeline: the seed experiment as a TFX pipeline.

DigitsExampleGen -> DigitsTrainer -> Freezer -> GraphOptimizer -> Quantizer

The recipe (passes, quantization, verification) comes from configs/optimization.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tfx.orchestration import metadata, pipeline

from components.core.config import (
    DEFAULT_RECIPE,
    OptimizationRecipe,
    fill_dataclass,
    read_yaml,
    section,
)
from components.freezer import Freezer
from components.graph_optimizer import GraphOptimizer
from components.quantizer import Quantizer
from pipelines.digits.example_gen import DigitsExampleGen
from pipelines.digits.trainer import DigitsTrainer

PIPELINE_NAME = "digits"


@dataclass
class TrainerSettings:
    epochs: int = 4
    seed: int = 0


def create_pipeline(pipeline_root: Path | str, metadata_path: Path | None,
                    config_path: Path = DEFAULT_RECIPE,
                    beam_pipeline_args: list[str] | None = None) -> pipeline.Pipeline:
    """The pipeline; `metadata_path` None leaves MLMD to the orchestrator (Vertex, KFP)."""
    recipe = OptimizationRecipe.from_yaml(config_path)
    trainer_settings = fill_dataclass(
        TrainerSettings, section(read_yaml(config_path), "trainer", config_path),
        config_path, "trainer")
    verify = {"num_examples": recipe.verification.num_examples}

    example_gen = DigitsExampleGen()
    trainer = DigitsTrainer(examples=example_gen.outputs["examples"],
                            epochs=trainer_settings.epochs, seed=trainer_settings.seed)
    eval_examples = example_gen.outputs["examples"]
    freezer = Freezer(model=trainer.outputs["model"], examples=eval_examples, **verify)
    optimizer = GraphOptimizer(model=freezer.outputs["frozen_model"],
                               passes=recipe.graph_optimizer.passes,
                               examples=eval_examples, **verify)
    quantizer = Quantizer(model=optimizer.outputs["optimized_model"],
                          mode=recipe.quantizer.mode,
                          min_elements=recipe.quantizer.min_elements,
                          min_top1_agreement=recipe.quantizer.min_top1_agreement,
                          tflite=recipe.quantizer.tflite,
                          examples=eval_examples, **verify)
    return pipeline.Pipeline(
        pipeline_name=PIPELINE_NAME,
        pipeline_root=str(pipeline_root),
        components=[example_gen, trainer, freezer, optimizer, quantizer],
        enable_cache=True,
        metadata_connection_config=(
            metadata.sqlite_metadata_connection_config(str(metadata_path))
            if metadata_path is not None else None),
        beam_pipeline_args=beam_pipeline_args or ["--direct_num_workers=1"],
    )
