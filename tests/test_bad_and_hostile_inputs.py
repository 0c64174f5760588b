"""What a new user's mistakes and an attacker's models get: one line naming the cause and
what to do, exit 2, nothing written, nothing of an untrusted model run; and where only a
part is bad (one benchmark candidate), the rest still done."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
import pytest
from click.testing import CliRunner

from components.benchmark_cli import benchmark_command
from components.cli import main
from components.core.errors import ServoptError, first_line
from components.core.gate import Thresholds
from components.core.yaml_io import parse_yaml
from pipelines.digits.config import load_pipeline_config

QUICK = ["--batch-sizes", "1", "--concurrency", "", "--warmup-requests", "2",
         "--window-seconds", "0", "--window-requests", "10", "--max-windows", "6",
         "--search-budget", "0"]


class _FileWritingModel(tf.Module):
    """Writes to a host file whenever it runs."""

    def __init__(self, target: Path):
        self.target = str(target)
        self.scale = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="features")])
    def serve(self, features):
        tf.io.write_file(self.target, "pwned")
        return {"y": features * self.scale}


@pytest.fixture
def file_writing_model(tmp_path) -> tuple[Path, Path]:
    target = tmp_path / "pwned.txt"
    module = _FileWritingModel(target)
    tf.saved_model.save(module, str(tmp_path / "writer"),
                        signatures={"serving_default": module.serve})
    return tmp_path / "writer", target


def servopt(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ------------------------------------------------------------- untrusted models

def test_optimize_refuses_to_run_a_model_with_unsafe_ops_and_says_how_to_allow_them(
        file_writing_model, tmp_path):
    model, target = file_writing_model
    result = servopt("optimize", str(model), str(tmp_path / "out"), "--steps", "freeze")
    assert result.exit_code == 2
    line = one_line(result)
    assert "refusing to run this model to optimize and verify it" in line
    assert "WriteFile (reads or writes files)" in line and "--allow-unsafe-ops WriteFile" in line
    assert not target.exists()  # verification never ran it
    assert not (tmp_path / "out").exists()


def test_optimize_runs_a_model_with_unsafe_ops_when_the_user_allows_them(file_writing_model,
                                                                          tmp_path):
    model, target = file_writing_model
    result = servopt("optimize", str(model), str(tmp_path / "out"), "--steps", "freeze",
                     "--allow-unsafe-ops", "WriteFile")
    assert result.exit_code == 0, result.output
    assert target.read_text() == "pwned"  # it did run, as the user allowed


@pytest.fixture(scope="module")
def benchmark_with_bad_candidates(two_signature_model, tmp_path_factory):
    """The baseline, a candidate that writes files and a directory with no model."""
    root = tmp_path_factory.mktemp("bad_candidates")
    target = root / "pwned.txt"
    module = _FileWritingModel(target)
    tf.saved_model.save(module, str(root / "writer"),
                        signatures={"serving_default": module.serve})
    (root / "random_dir").mkdir()
    (root / "random_dir" / "notes.txt").write_text("not a model")
    (root / "secret").write_bytes(b"root:x:0:0:SECRET-BYTES\n")
    linked = shutil.copytree(two_signature_model, root / "linked")
    (linked / "model.tflite").symlink_to(root / "secret")  # a TFLite variant's file, or not
    result = CliRunner().invoke(benchmark_command, [
        f"base={two_signature_model}", f"writer={root / 'writer'}",
        f"random={root / 'random_dir'}", f"linked={linked}", *QUICK,
        "--json", str(root / "metrics.json")])
    metrics = json.loads((root / "metrics.json").read_text())
    return result, metrics, target


@pytest.mark.e2e  # a benchmark run: a TensorFlow worker process per model
def test_an_unusable_candidate_is_reported_and_the_baseline_still_measured(
        benchmark_with_bad_candidates):
    result, metrics, _ = benchmark_with_bad_candidates
    assert result.exit_code == 0, result.output
    assert metrics["models"]["base"]["error"] is None
    assert metrics["models"]["base"]["batches"]["1"]["p50_ms"] > 0
    random = metrics["models"]["random"]
    assert "no SavedModel found" in random["error"] and random["batches"] == {}
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert any("'random' could not be measured" in w for w in warnings)


@pytest.mark.e2e  # reads the benchmark run above
def test_the_benchmark_never_runs_a_candidate_with_unsafe_ops(benchmark_with_bad_candidates):
    result, metrics, target = benchmark_with_bad_candidates
    writer = metrics["models"]["writer"]
    assert "refusing to run this model to benchmark it" in writer["error"]
    assert "WriteFile" in writer["error"] and writer["batches"] == {}
    assert not target.exists()


def test_the_benchmark_never_reads_a_model_tflite_that_links_outside_the_model(
        benchmark_with_bad_candidates):
    result, metrics, _ = benchmark_with_bad_candidates
    linked = [m for name, m in metrics["models"].items() if name.startswith("linked")]
    assert linked and all("model.tflite: is a symlink to" in m["error"] for m in linked)
    assert "SECRET-BYTES" not in json.dumps(metrics) and "SECRET-BYTES" not in result.output


# ------------------------------------------------------------------ error messages

def test_a_tensorflow_runtime_error_keeps_its_cause_on_one_line():
    error = tf.errors.NotFoundError(None, None, (
        "Graph execution error:\n\nDetected at node 'ReadFile' defined at (most recent call "
        "last):\n  File \"serve.py\", line 3, in serve\n    tf.io.read_file(path)\n"
        "Node: 'ReadFile'\n/models/vocab.txt; No such file or directory\n\t "
        "[[{{node ReadFile}}]]"))
    assert first_line(error) == ("Graph execution error: /models/vocab.txt; No such file or "
                                 "directory [[{{node ReadFile}}]]")


def test_a_model_that_cannot_load_is_reported_with_the_loaders_cause(two_signature_model,
                                                                      tmp_path):
    model = tmp_path / "truncated"
    shutil.copytree(two_signature_model, model)
    [data] = (model / "variables").glob("variables.data-*")
    data.write_bytes(data.read_bytes()[:1000])
    result = servopt("optimize", str(model), str(tmp_path / "out"))
    assert result.exit_code == 2
    line = one_line(result)
    header, _, cause = line.partition("cannot load this model: Graph execution error:")
    assert header and cause.strip(), line  # what went wrong is there, not just a header
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------- verification inputs

def test_verification_inputs_that_fit_no_signature_are_refused_naming_the_arrays(
        two_signature_model, tmp_path):
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, pixels=np.zeros((4, 16), "f4"), label=np.zeros(4, "i8"))
    result = servopt("optimize", str(two_signature_model), str(tmp_path / "out"),
                     "--steps", "freeze", "--inputs", str(inputs))
    assert result.exit_code == 2
    line = one_line(result)
    assert f"{inputs}: lacks input arrays: signature 'regress' needs ['features']; " \
           "signature 'serving_default' needs ['features']; no signature takes " \
           "['label', 'pixels']" in line
    assert not (tmp_path / "out").exists()


def test_verification_inputs_that_fit_are_used(two_signature_model, tmp_path):
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, features=np.random.default_rng(0).random((40, 16)).astype("f4"))
    result = servopt("optimize", str(two_signature_model), str(tmp_path / "out"),
                     "--steps", "freeze", "--inputs", str(inputs), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verification"]["num_examples"] == 40


# ------------------------------------------------------------------ configuration

def test_a_yaml_file_with_a_duplicated_key_is_refused_naming_both_lines(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text("thresholds:\n  value: {max_p99_ms: 50}\n"
                      "benchmark:\n  batch_sizes: [1, 100]\n"
                      "thresholds:\n  value: {max_p99_ms: 5}\n")
    with pytest.raises(ServoptError, match=r"pipeline.yaml: not valid YAML at line 5, column 1 "
                                           r"\(duplicate key 'thresholds', first at line 1"):
        load_pipeline_config(config)
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("value:\n  max_p99_ms: 50\n  max_p99_ms: 5\n")
    with pytest.raises(ServoptError, match=r"duplicate key 'max_p99_ms', first at line 2"):
        Thresholds.from_yaml(thresholds)


def test_yaml_merge_keys_may_still_be_overridden():
    text = "strict: &strict {max_p99_ms: 50, max_size_mb: 10}\nvalue:\n  <<: *strict\n" \
           "  max_p99_ms: 80\n"
    assert parse_yaml(text, "t.yaml")["value"] == {"max_p99_ms": 80, "max_size_mb": 10}


def test_a_primary_batch_size_the_benchmark_does_not_measure_fails_before_the_demo_runs(
        tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text("benchmark:\n  batch_sizes: [1, 32]\nthresholds:\n  "
                      "primary_batch_size: 100\n")
    result = servopt("demo", "--workdir", str(tmp_path / "demo"), "--config", str(config))
    assert result.exit_code == 2
    line = one_line(result)
    assert "primary_batch_size 100 is not among the benchmark's batch sizes [1, 32]" in line
    assert not (tmp_path / "demo").exists()


def test_staging_left_by_a_killed_optimize_is_removed_by_the_next_one(two_signature_model,
                                                                      tmp_path):
    finished = subprocess.Popen(["true"])
    finished.wait()  # a pid of this host that no longer runs, as a killed run leaves
    leftover = tmp_path / f".out.staging-{'a' * 32}.{finished.pid}.{socket.gethostname()}"
    running = tmp_path / f".out.staging-{'b' * 32}.{os.getpid()}.{socket.gethostname()}"
    for directory in (leftover, running):
        (directory / "variables").mkdir(parents=True)
    result = servopt("optimize", str(two_signature_model), str(tmp_path / "out"),
                     "--steps", "freeze")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "out"]
