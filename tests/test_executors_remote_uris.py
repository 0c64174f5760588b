"""The five TFX executors on artifact URIs that are not local paths.

On Vertex AI, TFX hands executors gs:// URIs. Here TensorFlow's in-memory filesystem
(`ram://`, registered in every TensorFlow build) stands in for Cloud Storage: every input
and output artifact of Freezer -> GraphOptimizer -> Quantizer -> ServingBenchmark ->
PusherGate lives under ram://, the push destination too. Nothing is mocked: the
executors are TFX's executor classes, called as TFX's launcher calls them.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from components.core.tf_setup import tf

import pytest
from tfx.types import standard_artifacts

from components.artifacts import ServingBenchmarkResult
from components.core.benchmark.config import BenchmarkConfig
from components.core.uris import upload
from components.freezer import executor as freezer_executor
from components.graph_optimizer import executor as optimizer_executor
from components.pusher_gate import executor as gate_executor
from components.quantizer import executor as quantizer_executor
from components.serving_benchmark import executor as benchmark_executor
from pipelines.digits.example_gen import write_examples

pytestmark = pytest.mark.e2e  # the five executors in a row, the benchmark's workers too

ROOT = "ram://pipeline_root"
QUICK = BenchmarkConfig(batch_sizes=(8,), concurrency=(), warmup_requests=2,
                        window_seconds=None, window_requests=10, max_windows=6,
                        min_requests=1, decision_budget_s=10, label_key="label",
                        search_budget_s=0)
gfile = tf.io.gfile


def artifact(cls, uri: str):
    instance = cls()
    instance.uri = uri
    return instance


@pytest.fixture(scope="module")
def pipeline_run(seed_cnn_model, tmp_path_factory):
    """Every executor once, on ram:// artifacts, in pipeline order; a private temporary
    directory shows whether staging copies are removed."""
    local = tmp_path_factory.mktemp("remote")
    scratch = local / "tmp"
    scratch.mkdir()
    saved, tempfile.tempdir = tempfile.tempdir, str(scratch)
    try:
        upload(seed_cnn_model, f"{ROOT}/Trainer/model/1/Format-Serving")
        write_examples(local / "examples")
        upload(local / "examples", f"{ROOT}/ExampleGen/examples/2")
        trainer = artifact(standard_artifacts.Model, f"{ROOT}/Trainer/model/1")
        examples = artifact(standard_artifacts.Examples, f"{ROOT}/ExampleGen/examples/2")
        frozen = artifact(standard_artifacts.Model, f"{ROOT}/Freezer/frozen_model/3")
        optimized = artifact(standard_artifacts.Model,
                             f"{ROOT}/GraphOptimizer/optimized_model/4")
        quantized = artifact(standard_artifacts.Model, f"{ROOT}/Quantizer/quantized_model/5")
        tflite = artifact(standard_artifacts.Model, f"{ROOT}/Quantizer/tflite_dynamic_int8_model/6")
        bench = artifact(ServingBenchmarkResult, f"{ROOT}/ServingBenchmark/benchmark/7")
        blessing = artifact(standard_artifacts.ModelBlessing, f"{ROOT}/PusherGate/blessing/8")
        pushed = artifact(standard_artifacts.PushedModel, f"{ROOT}/PusherGate/pushed_model/9")

        freezer_executor.Executor().Do({"model": [trainer], "examples": [examples]},
                                       {"frozen_model": [frozen]}, {"num_examples": 64})
        optimizer_executor.Executor().Do(
            {"model": [frozen]}, {"optimized_model": [optimized]},
            {"passes": json.dumps(["remove_identity", "fold_constants", "fuse_ops"]),
             "num_examples": 64})
        quantizer_executor.Executor().Do(
            {"model": [optimized], "examples": [examples]},
            {"quantized_model": [quantized], "tflite_dynamic_int8_model": [tflite]},
            {"mode": "int8", "tflite": json.dumps(["dynamic_int8"]), "num_examples": 64})
        benchmark_executor.Executor().Do(
            {"baseline_model": [trainer], "candidate_1": [frozen], "candidate_2": [optimized],
             "candidate_3": [quantized], "examples": [examples]},
            {"benchmark": [bench]}, {"settings": json.dumps(QUICK.to_dict())})
        gate_executor.Executor().Do(
            {"benchmark": [bench], "examples": [examples]},
            {"pushed_model": [pushed], "blessing": [blessing]},
            {"thresholds": json.dumps({"primary_batch_size": 8}),
             "push_destination": "ram://serving/digits"})
    finally:
        tempfile.tempdir = saved
    return dataclasses.make_dataclass("Run", ["frozen", "optimized", "quantized", "tflite",
                                              "bench", "blessing", "pushed", "scratch"])(
        frozen, optimized, quantized, tflite, bench, blessing, pushed, scratch)


def test_every_model_output_is_written_to_its_uri(pipeline_run):
    for model in (pipeline_run.frozen, pipeline_run.optimized, pipeline_run.quantized):
        assert gfile.exists(f"{model.uri}/Format-Serving/saved_model.pb")
        assert model.get_int_custom_property("verification_passed") == 1
    assert pipeline_run.tflite.get_int_custom_property("produced") == 1
    assert gfile.exists(f"{pipeline_run.tflite.uri}/Format-Serving/model.tflite")
    assert pipeline_run.frozen.get_int_custom_property("variable_count") == 0


def test_recorded_sources_are_uris_not_staging_copies(pipeline_run):
    assert pipeline_run.frozen.get_string_custom_property("source_model_uri") == (
        f"{ROOT}/Trainer/model/1/Format-Serving")
    for variant in (pipeline_run.quantized, pipeline_run.tflite):
        assert variant.get_string_custom_property("source_model_uri") == (
            f"{ROOT}/GraphOptimizer/optimized_model/4/Format-Serving")


def test_the_benchmark_writes_its_metrics_with_the_models_uris(pipeline_run):
    with gfile.GFile(f"{pipeline_run.bench.uri}/metrics.json") as f:
        metrics = json.load(f)
    assert gfile.exists(f"{pipeline_run.bench.uri}/report.html")
    assert {m["path"] for m in metrics["models"].values()} == {
        f"{ROOT}/{p}/Format-Serving" for p in ("Trainer/model/1", "Freezer/frozen_model/3",
                                               "GraphOptimizer/optimized_model/4",
                                               "Quantizer/quantized_model/5")}
    assert all(m["error"] is None for m in metrics["models"].values())
    assert metrics["models"]["Quantizer"]["accuracy"]["top1_agreement"] >= 0.99
    assert pipeline_run.bench.get_float_custom_property("Quantizer_p50_ms_batch8") > 0


def test_the_gate_pushes_a_new_version_to_the_remote_destination(pipeline_run):
    blessing, pushed = pipeline_run.blessing, pipeline_run.pushed
    assert blessing.get_int_custom_property("blessed") == 1
    with gfile.GFile(f"{blessing.uri}/decision.json") as f:
        decision = json.load(f)
    assert gfile.exists(f"{blessing.uri}/BLESSED")
    assert decision["chosen_path"].startswith(f"{ROOT}/")
    assert all(c["path"].startswith(f"{ROOT}/") for c in decision["candidates"])
    assert pushed.get_string_custom_property("pushed_model_uri") == decision["chosen_path"]
    version = pushed.get_string_custom_property("pushed_version")
    assert pushed.get_string_custom_property("pushed_destination") == (
        f"ram://serving/digits/{version}")
    assert gfile.exists(f"ram://serving/digits/{version}/saved_model.pb")
    assert gfile.exists(
        f"ram://serving/digits/{version}/assets.extra/tf_serving_warmup_requests")


def test_nothing_lands_on_local_disk_and_staging_copies_are_removed(pipeline_run):
    assert not Path("ram:").exists()  # Path("ram://x") would have written ./ram:/x
    left = [p.name for p in pipeline_run.scratch.iterdir() if p.name.startswith("servopt-")]
    assert left == []  # (other libraries' own temporary files are theirs to remove)
