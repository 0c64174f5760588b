"""`servopt benchmark` end to end on the seed CNN, with real TensorFlow in worker processes.

One run measures the Trainer's model (baseline), its frozen+optimized version and two
models that cannot be measured, on labelled digits; the tests below read its metrics.json,
its report and its exit status. Small windows keep it quick; the repeatability test
(slow) uses the default windows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
import pytest
from click.testing import CliRunner

from components.benchmark_cli import benchmark_command
from components.core.benchmark.config import BenchmarkConfig, ModelSpec
from components.core.benchmark.flops import flops_per_example
from components.core.benchmark.run import run_benchmark
from components.core.serving_session import ServingSession
from components.core.steps import optimize_model, parse_steps
from pipelines.digits.model import digits_28x28

QUICK = ["--search-budget", "0", "--warmup-requests", "5", "--window-seconds", "0",
         "--window-requests", "20", "--max-windows", "6"]
NUM_EXAMPLES = 300
BATCH_KEYS = {"p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms",
              "throughput", "stable", "windows", "requests", "achieved_flops_per_s"}


@pytest.fixture(scope="module")
def optimized_model(seed_cnn_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("benchmark") / "optimized"
    optimize_model(seed_cnn_model, out, parse_steps("freeze,optimize"))
    return out


@pytest.fixture(scope="module")
def broken_models(seed_cnn_model, tmp_path_factory) -> tuple[Path, Path]:
    """A model whose saved_model.pb is corrupted, and one whose variables are gone."""
    root = tmp_path_factory.mktemp("broken")
    corrupted = root / "corrupted"
    shutil.copytree(seed_cnn_model, corrupted)
    (corrupted / "saved_model.pb").write_bytes(b"\x08\x96\x01 this is not a SavedModel")
    no_variables = root / "no_variables"
    shutil.copytree(seed_cnn_model, no_variables)
    shutil.rmtree(no_variables / "variables")
    return corrupted, no_variables


@pytest.fixture(scope="module")
def digits_examples(tmp_path_factory) -> Path:
    """Labelled digits as a TFX Examples artifact (gzipped eval split)."""
    root = tmp_path_factory.mktemp("digits")
    split = root / "Split-eval"
    split.mkdir()
    images, labels = digits_28x28()
    with tf.io.TFRecordWriter(str(split / "data_tfrecord-00000-of-00001.gz"),
                              options="GZIP") as writer:
        for image, label in zip(images[:NUM_EXAMPLES], labels[:NUM_EXAMPLES], strict=True):
            feature = {
                "image": tf.train.Feature(float_list=tf.train.FloatList(value=image.ravel())),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                         .SerializeToString())
    return root


@pytest.fixture(scope="module")
def benchmark_run(seed_cnn_model, optimized_model, broken_models, digits_examples,
                  tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    corrupted, no_variables = broken_models
    settings = out / "settings.yaml"  # what no flag sets, from a benchmark YAML
    settings.write_text("decision_budget_s: 5\nmax_windows: 9\n")  # the flag wins: 6
    result = CliRunner().invoke(benchmark_command, [
        f"base={seed_cnn_model}", f"opt={optimized_model}", str(corrupted), str(no_variables),
        "--config", str(settings),
        "--batch-sizes", "1,100", "--concurrency", "1,2", *QUICK,
        "--examples", str(digits_examples), "--label-key", "label",
        "--json", str(out / "metrics.json"), "--report", str(out / "report.html")],
        env={"COLUMNS": "80"})  # its output redirected, as into a CI log
    return result, json.loads((out / "metrics.json").read_text()), out / "report.html"


@pytest.mark.e2e
def test_metrics_hold_latency_percentiles_throughput_and_stability_per_batch_size(
        benchmark_run):
    _, metrics, _ = benchmark_run
    assert metrics["schema_version"] == 1 and metrics["baseline"] == "base"
    for name in ("base", "opt"):
        batches = metrics["models"][name]["batches"]
        assert set(batches) == {"1", "100"}
        for batch in batches.values():
            assert batch.keys() >= BATCH_KEYS
            assert 0 < batch["min_ms"] <= batch["p50_ms"] <= batch["p90_ms"] <= batch["p99_ms"]
            assert batch["p99_ms"] <= batch["max_ms"]
            assert batch["throughput"] > 0 and isinstance(batch["stable"], bool)
            # At least 6 rounds (the fewest a 95% speedup interval needs, and max_windows);
            # more where a speedup's interval straddles the gate's 0.95 line (the packaged
            # thresholds the CLI decides on), within decision_budget_s
            assert batch["windows"] >= 6 and batch["requests"] == 20 * batch["windows"]
    assert (metrics["models"]["base"]["batches"]["100"]["throughput"]
            > metrics["models"]["base"]["batches"]["1"]["throughput"])


@pytest.mark.e2e
def test_the_candidate_has_a_speedup_per_batch_size_and_the_baseline_none(benchmark_run):
    _, metrics, _ = benchmark_run
    for size in ("1", "100"):
        candidate = metrics["models"]["opt"]["batches"][size]
        assert candidate["speedup_p50"] > 0 and candidate["speedup_p99"] > 0
        assert "speedup_p50" not in metrics["models"]["base"]["batches"][size]
    print("speedup p50 at batch 1 / 100:",
          [metrics["models"]["opt"]["batches"][s]["speedup_p50"] for s in ("1", "100")])


@pytest.mark.e2e
def test_the_settings_and_the_machine_are_recorded(benchmark_run):
    _, metrics, _ = benchmark_run
    machine = metrics["machine"]
    expected = {
        "backend": "session", "batch_sizes": [1, 100], "concurrency": [1, 2],
        "warmup_requests": 5, "window_requests": 20, "window_seconds": None,
        "max_windows": 6, "stability_percent": 10.0, "intra_op_threads": machine["cores"],
        "inter_op_threads": machine["cores"], "signature": "serving_default",
        "tflite_pools": machine["cores"], "tflite_interpreters_per_pool": 1,
        "decision_budget_s": 5.0}  # --config's, under the flags
    assert {key: metrics["settings"][key] for key in expected} == expected
    assert machine["cores"] >= 1 and machine["tensorflow_version"] == tf.__version__
    assert machine["cpu_model"] and machine["python_version"].startswith("3.11")


@pytest.mark.e2e
def test_load_time_first_request_memory_size_and_flops_are_measured(benchmark_run):
    _, metrics, _ = benchmark_run
    base, opt = metrics["models"]["base"], metrics["models"]["opt"]
    for model in (base, opt):
        assert model["load_time_s"] > 0 and model["first_request_ms"] > 0
        assert model["peak_memory_bytes"] > 50e6  # a worker with TensorFlow loaded
        batch = model["batches"]["100"]
        assert batch["achieved_flops_per_s"] == pytest.approx(
            model["flops_per_example"] * batch["throughput"])
    assert opt["size_bytes"] < base["size_bytes"]  # Keras exports store weights twice
    levels = [(p["batch_size"], p["concurrency"]) for p in base["concurrency"]]
    assert levels == [(1, 1), (1, 2), (100, 1), (100, 2)]
    assert all(p["throughput"] > 0 and p["p99_ms"] >= p["p50_ms"] for p in base["concurrency"])


@pytest.mark.e2e
def test_accuracy_is_measured_on_the_labelled_examples(benchmark_run, seed_cnn_model,
                                                       digits_examples):
    """Checked against an independent count: the model run directly on the same digits."""
    _, metrics, _ = benchmark_run
    images, labels = digits_28x28()
    with ServingSession(seed_cnn_model) as session:
        scores = session.run("serving_default", {"image": images[:NUM_EXAMPLES]})
    expected = np.mean(np.argmax(next(iter(scores.values())), axis=1) == labels[:NUM_EXAMPLES])
    base, opt = metrics["models"]["base"]["accuracy"], metrics["models"]["opt"]["accuracy"]
    assert base["num_examples"] == opt["num_examples"] == NUM_EXAMPLES
    assert base["accuracy"] == pytest.approx(expected, abs=0.01)
    assert base["top1_agreement"] is None and base["max_abs_diff"] is None
    assert opt["top1_agreement"] >= 0.99 and opt["max_abs_diff"] < 1e-3


@pytest.mark.e2e
def test_models_that_cannot_load_have_an_error_and_the_others_are_measured(benchmark_run):
    result, metrics, _ = benchmark_run
    corrupted, no_variables = metrics["models"]["corrupted"], metrics["models"]["no_variables"]
    assert "saved_model.pb: not a valid SavedModel" in corrupted["error"]
    assert "cannot load this model" in no_variables["error"]
    for model in (corrupted, no_variables):
        assert model["batches"] == {} and model["accuracy"] is None
        assert model["role"] == "candidate" and model["size_bytes"] > 0
    assert metrics["models"]["opt"]["error"] is None
    assert result.exit_code == 0, result.output  # only candidates failed: a warning each
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2 and "'corrupted' could not be measured" in warnings[0]


@pytest.mark.e2e
def test_the_printed_tables_fit_80_columns_and_keep_every_number(benchmark_run):
    from tests.test_cli_output import assert_readable

    result, metrics, _ = benchmark_run
    assert result.exit_code == 0, result.output
    numbers = [f"{b['p50_ms']:.2f}" for m in metrics["models"].values()
               for b in m["batches"].values()]
    numbers += [f"{b['speedup_p50']:.2f}x" for m in metrics["models"].values()
                for b in m["batches"].values() if b.get("speedup_p50")]
    assert numbers
    assert_readable(result.stdout, 80, numbers, log=True)


@pytest.mark.e2e
def test_the_report_is_one_self_contained_html_page(benchmark_run):
    _, _, report = benchmark_run
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    # one figure per question: which pair is fastest, latency against throughput, accuracy
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert tf.__version__ in page and "Batch size 100" in page
    assert "no_variables" in page and "cannot load this model" in page


@pytest.mark.e2e
def test_a_baseline_that_cannot_load_fails_the_command_with_one_line(broken_models, tmp_path):
    corrupted, _ = broken_models
    result = CliRunner().invoke(benchmark_command, [str(corrupted), "--batch-sizes", "1",
                                                    "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the baseline 'corrupted' could not be measured" in lines[0]
    assert json.loads((tmp_path / "m.json").read_text())["models"]["corrupted"]["error"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--batch-sizes", "1,0"], "batch size 0 is not valid"),
    (["--batch-sizes", "-5"], "batch size -5 is not valid"),
    (["--examples", "EXAMPLES", "--label-key", "digit"], "no label feature 'digit'"),
    (["--label-key", "label"], "needs examples"),
    (["--report", "no/such/dir/report.html"], "the directory for --report does not exist"),
])
def test_bad_input_fails_before_anything_starts_with_one_line(seed_cnn_model, digits_examples,
                                                               extra, message):
    args = [str(a).replace("EXAMPLES", str(digits_examples)) for a in extra]
    result = CliRunner().invoke(benchmark_command, [str(seed_cnn_model), *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_flops_are_counted_alike_for_the_source_and_its_fused_optimized_graph(
        seed_cnn_model, optimized_model):
    """Multiply-adds of the seed CNN's convolutions and dense layers, counted by hand."""
    convs = 28 * 28 * 32 * 9 * 1 + 14 * 14 * 64 * 9 * 32 + 7 * 7 * 128 * 9 * 64
    dense = 1152 * 512 + 512 * 512 + 512 * 10
    by_hand = 2 * (convs + dense)
    source = flops_per_example(seed_cnn_model, "serving_default")
    optimized = flops_per_example(optimized_model, "serving_default")
    assert source == pytest.approx(by_hand, rel=0.03)  # + batch norm, bias, softmax
    assert optimized == pytest.approx(source, rel=0.02)  # _FusedConv2D counted like Conv2D


@pytest.mark.e2e
def test_tflite_models_are_measured_in_the_tflite_interpreter(seed_cnn_model, digits_examples,
                                                             tmp_path):
    """As the Quantizer converts them (signature_defs_metadata: TF Serving serves the
    SavedModel's keys, so the eval examples' `image` feature feeds them)."""
    from tests.model_zoo import tflite_bytes

    (tmp_path / "fp32.tflite").write_bytes(tflite_bytes(seed_cnn_model, int8=False))
    (tmp_path / "int8").mkdir()  # dynamic-range int8 weights
    (tmp_path / "int8" / "model.tflite").write_bytes(tflite_bytes(seed_cnn_model))
    config = BenchmarkConfig(batch_sizes=(1, 16), concurrency=(1, 2),
                             warmup_requests=5, window_requests=20, window_seconds=None,
                             max_windows=6, examples=digits_examples, label_key="label")
    result = run_benchmark([ModelSpec("fp32", tmp_path / "fp32.tflite"),
                            ModelSpec("int8", tmp_path / "int8")], config)
    assert result.failed() == {}
    fp32, int8 = result.models["fp32"], result.models["int8"]
    assert int8.size_bytes < fp32.size_bytes / 3
    assert int8.batches[16].speedup_p50 > 0 and fp32.flops_per_example is None
    assert [p.concurrency for p in int8.concurrency] == [1, 2, 1, 2]  # an interpreter each
    assert fp32.accuracy.accuracy > 0.5 and int8.accuracy.top1_agreement > 0.9
    assert fp32.runtime.runtime == int8.runtime.runtime == "tflite"  # no --backend needed


@pytest.mark.slow
@pytest.mark.e2e
def test_two_consecutive_runs_give_speedups_within_10_percent(seed_cnn_model, optimized_model):
    config = BenchmarkConfig(batch_sizes=(1, 100), concurrency=())
    models = [ModelSpec("base", seed_cnn_model), ModelSpec("opt", optimized_model)]
    first, second = (run_benchmark(models, config) for _ in range(2))
    for size in (1, 100):
        a = first.models["opt"].batches[size].speedup_p50
        b = second.models["opt"].batches[size].speedup_p50
        print(f"batch {size}: speedup p50 {a:.3f} then {b:.3f}")
        assert abs(a - b) / a <= 0.10
