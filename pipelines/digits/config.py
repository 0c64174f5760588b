"""The demo pipeline's configuration: the packaged defaults (components/configs/, the same
files as the repository's configs/), overlaid by an optional user file with any of the
sections below (nested keys merge one by one, so a file
holding only `thresholds: {value: {max_p99_ms: 0.001}}` changes just that threshold).

    graph_optimizer, quantizer, verification   configs/optimization.yaml
    trainer                                    configs/optimization.yaml
    benchmark                                  configs/benchmark.yaml
    thresholds                                 configs/thresholds.yaml
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.core.benchmark.config import BenchmarkConfig
from components.core.config import (
    DEFAULT_RECIPE,
    OptimizationRecipe,
    deep_merge,
    default_config,
    fill_dataclass,
    read_yaml,
    section,
)
from components.core.errors import ServoptError
from components.core.gate import Thresholds

# The demo's TF Serving runs with --prefer_tflite_model=true (the flag its decision prints),
# so a TFLite variant is judged, and pushed, on its TFLite figures; and its clients send
# image tensors to serving_default, never tf.Examples to serving_examples (which a version
# served from model.tflite does not serve, see gate.parity), so the TFLite variants are
# candidates. The library and configs/thresholds.yaml keep TF Serving's default (false)
# and require every signature of the Trainer's model; a user file may set either back.
#
# Its clients are online: DEMO_TRAFFIC, 9 requests in 10 carry one image, 1 in 10 a batch of
# 100 (a page of thumbnails), 2 clients at once (the demo's 2 cores), with p99 SLOs of
# 50 ms and 500 ms, ranked by the request-weighted mean p50 (what a typical request
# waits). The benchmark measures both batch sizes, the configuration search and the gate
# judge every (version, configuration) pair on this mix.
DEMO_TRAFFIC: dict[str, Any] = {
    "requests": [{"batch_size": 1, "share": 0.9, "slo_p99_ms": 50},
                 {"batch_size": 100, "share": 0.1, "slo_p99_ms": 500}],
    "clients": 2, "objective": "weighted_p50_ms"}
DEMO_OVERLAY: dict[str, Any] = {"thresholds": {"server": {"prefer_tflite_model": True},
                                               "required_signatures": ["serving_default"],
                                               "traffic": DEMO_TRAFFIC}}
SECTIONS = ("graph_optimizer", "quantizer", "verification", "trainer", "benchmark",
            "thresholds")


@dataclass
class TrainerSettings:
    epochs: int = 4
    seed: int = 0
    dense_units: int = 512  # the seed's width; wider makes a slower model


@dataclass
class PipelineConfig:
    recipe: OptimizationRecipe
    trainer: TrainerSettings
    benchmark: BenchmarkConfig
    thresholds: Thresholds


def load_pipeline_config(path: str | Path | None = None) -> PipelineConfig:
    defaults: dict[str, Any] = {**read_yaml(DEFAULT_RECIPE),
                                "benchmark": read_yaml(default_config("benchmark.yaml")),
                                "thresholds": read_yaml(default_config("thresholds.yaml"))}
    source: str | Path = DEFAULT_RECIPE
    merged = deep_merge(defaults, DEMO_OVERLAY)
    if path is not None:
        source = path
        user = read_yaml(path)
        unknown = sorted(set(user) - set(SECTIONS))
        if unknown:
            raise ServoptError(f"{path}: unknown section '{unknown[0]}'; known sections: "
                               f"{', '.join(SECTIONS)}")
        merged = deep_merge(merged, user)
        given = user.get("thresholds") or {}
        if isinstance(given, dict) and "primary_batch_size" in given and \
                "traffic" not in given:  # an old file: its one batch size is the profile
            merged["thresholds"].pop("traffic", None)
    config = PipelineConfig(
        recipe=OptimizationRecipe.from_dict(merged, source),
        trainer=fill_dataclass(TrainerSettings, section(merged, "trainer", source), source,
                               "trainer"),
        benchmark=BenchmarkConfig.from_dict(section(merged, "benchmark", source), source),
        thresholds=Thresholds.from_dict(section(merged, "thresholds", source),
                                        source=str(source)))
    config.thresholds.check_batch_sizes(config.benchmark.batch_sizes, str(source))
    return config
