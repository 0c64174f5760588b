"""One run, several runtimes: each model is measured on the runtime TF Serving would use.

A SavedModel directory runs in a Session; a TFLite variant (model.tflite beside
saved_model.pb) is measured twice, on TfLiteSession's interpreters (what
--prefer_tflite_model=true serves) and on its saved_model.pb, as two rows of one version;
a bare .tflite file runs in the interpreter. Every row records its runtime, its settings
and the tensorflow_model_server flags that select it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from components.benchmark_cli import benchmark_command
from components.core.benchmark.config import BenchmarkConfig, available_cores
from components.core.benchmark.engines import TfLiteSessionEngine, resolve_model
from components.core.errors import ServoptError
from components.core.requirements import requirements_path
from tests.model_zoo import tflite_bytes, tflite_variant

QUICK = ["--search-budget", "0", "--warmup-requests", "3", "--window-seconds", "0.2",
         "--max-windows", "6", "--concurrency", "1"]


@pytest.fixture(scope="module")
def variant(seed_cnn_model, tmp_path_factory) -> Path:
    return tflite_variant(seed_cnn_model, tmp_path_factory.mktemp("variants") / "variant")


@pytest.fixture(scope="module")
def bare_tflite(seed_cnn_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bare") / "fp32.tflite"
    path.write_bytes(tflite_bytes(seed_cnn_model, int8=False))
    return path


@pytest.fixture(scope="module")
def metrics(seed_cnn_model, variant, bare_tflite, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("runtimes") / "out.json"
    settings = out.parent / "settings.yaml"  # the rows' runtimes are checked, not speedups
    settings.write_text("min_requests: 1\ndecision_budget_s: 0\n")
    result = CliRunner().invoke(benchmark_command, [
        f"base={seed_cnn_model}", str(variant), str(bare_tflite), "--batch-sizes", "1,100",
        *QUICK, "--config", str(settings), "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


@pytest.mark.e2e
def test_a_tflite_variant_is_measured_on_both_serving_paths_in_one_run(metrics):
    models = metrics["models"]
    assert list(models) == ["base", "variant@tflite", "variant@tensorflow", "fp32"]
    assert {name: m["runtime"]["runtime"] for name, m in models.items()} == {
        "base": "tensorflow", "variant@tflite": "tflite", "variant@tensorflow": "tensorflow",
        "fp32": "tflite"}
    assert models["variant@tflite"]["runtime"]["version"] == "variant"
    assert models["variant@tensorflow"]["runtime"]["version"] == "variant"
    assert all(m["error"] is None for m in models.values())


@pytest.mark.e2e
def test_each_row_records_the_tensorflow_model_server_flags_that_select_its_runtime(metrics):
    models, cores = metrics["models"], available_cores()  # TF Serving's default for both
    tflite = models["variant@tflite"]["runtime"]
    assert tflite["server_flags"] == ["--prefer_tflite_model=true",
                                      f"--num_tflite_pools={cores}",
                                      "--num_tflite_interpreters_per_pool=1"]
    assert tflite["settings"]["threads_per_interpreter"] == 1  # as TfLiteSession builds them
    assert models["variant@tensorflow"]["runtime"]["server_flags"] == [
        "--prefer_tflite_model=false", f"--tensorflow_intra_op_parallelism={cores}",
        f"--tensorflow_inter_op_parallelism={cores}"]
    assert models["base"]["runtime"]["server_flags"][0] == (
        f"--tensorflow_intra_op_parallelism={cores}")
    bare = models["fp32"]["runtime"]
    assert bare["servable"] is False and bare["server_flags"] == []  # TF Serving can't serve it


@pytest.mark.e2e
def test_every_candidate_row_has_a_speedup_at_every_batch_size(metrics):
    for name, model in metrics["models"].items():
        for size in ("1", "100"):
            speedup = model["batches"][size].get("speedup_p50")
            assert (speedup is None) == (name == "base"), (name, size)
            assert speedup is None or speedup > 0


@pytest.mark.e2e
def test_each_row_is_sized_and_counted_by_what_its_runtime_loads(metrics, variant):
    models = metrics["models"]
    assert models["variant@tflite"]["size_bytes"] == (variant / "model.tflite").stat().st_size
    requirements = requirements_path(variant).stat().st_size  # the copy's only extra file
    assert models["variant@tensorflow"]["size_bytes"] == (models["base"]["size_bytes"]
                                                          + requirements)
    assert models["variant@tflite"]["flops_per_example"] is None  # TF's profiler: graphs only
    assert models["variant@tensorflow"]["flops_per_example"] > 0


def test_the_interpreter_pool_splits_large_batches_as_tf_serving_does(bare_tflite):
    """--num_tflite_interpreters_per_pool=5: chunks of at most ceil(500 / 5) = 100."""
    images = np.random.default_rng(0).random((250, 28, 28, 1), dtype=np.float32)
    whole = TfLiteSessionEngine(bare_tflite, "serving_default", pools=2)
    split = TfLiteSessionEngine(bare_tflite, "serving_default", pools=2,
                                interpreters_per_pool=5)
    assert whole.max_execution_batch is None and split.max_execution_batch == 100
    [key] = whole.run({"image": images[:1]})
    np.testing.assert_allclose(split.run({"image": images})[key],
                               whole.run({"image": images})[key], rtol=1e-5, atol=1e-6)
    whole.close(), split.close()


def test_a_directory_with_model_tflite_resolves_to_both_runtimes(variant, bare_tflite):
    assert resolve_model(variant).runtimes() == ["tflite", "tensorflow"]
    assert resolve_model(bare_tflite).runtimes() == ["tflite"]


def test_the_old_global_tflite_backend_fails_with_a_hint():
    with pytest.raises(ServoptError, match="no tflite backend any more.*drop --backend"):
        BenchmarkConfig(backend="tflite").validate()


def test_a_candidate_session_row_identical_to_an_earlier_ones_is_measured_once(
        seed_cnn_model, variant, tmp_path):
    """A TFLite variant's saved_model.pb is its source's graph: two variants of one source
    (or a variant and its source) load the same files in a Session. The baseline is always
    measured, even when a candidate is its copy."""
    import shutil

    from components.core.benchmark.config import ModelSpec
    from components.core.benchmark.runtimes import plan_rows

    twin = shutil.copytree(variant, tmp_path / "twin")
    (twin / "model.tflite").write_bytes(b"another model.tflite: not what a Session loads")
    copy = shutil.copytree(seed_cnn_model, tmp_path / "copy")
    models = [ModelSpec("base", seed_cnn_model), ModelSpec("copy", copy),
              ModelSpec("variant", variant), ModelSpec("twin", twin)]
    rows = {row.name: row for row in plan_rows(
        models, {m.name: resolve_model(m.path) for m in models})}
    assert {name: row.twin for name, row in rows.items()} == {
        "base": None, "copy": None, "variant@tflite": None, "variant@tensorflow": "copy",
        "twin@tflite": None, "twin@tensorflow": "copy"}
