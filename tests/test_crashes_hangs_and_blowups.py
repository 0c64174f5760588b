"""Inputs that used to crash, hang or exhaust the machine (issue 19): each now works, or
ends in one line naming the file, the cause and the fix, with exit 2 and nothing written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
import pytest
import tfx
from click.testing import CliRunner

import components.core.safety.scan as scan_module
import components.core.serving_session as serving_session
from components.benchmark_cli import benchmark_command
from components.cli import main
from components.core.errors import ServoptError
from components.core.safety import scan_ops
from components.core.yaml_io import parse_yaml

TFX_TESTDATA = Path(tfx.__file__).parent / "components" / "testdata"
QUICK = ["--batch-sizes", "1", "--concurrency", "", "--warmup-requests", "2",
         "--window-seconds", "0", "--window-requests", "10", "--max-windows", "6",
         "--search-budget", "0"]


def servopt(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def refused(result) -> str:
    """The one line of a refusal (exit 2)."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


class _VersionedModel(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(self, x):
        return {"y": x * 2.0, "version": tf.constant("v1")}


class _BlockingModel(tf.Module):
    """Dequeues from a queue nothing fills: passes the scan (it only computes), blocks."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        queue = tf.raw_ops.FIFOQueueV2(component_types=[tf.float32], shapes=[[]])
        value = tf.raw_ops.QueueDequeueV2(handle=queue, component_types=[tf.float32])[0]
        return {"y": x + value}


def _save(module: tf.Module, out: Path) -> Path:
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    return out


# ----------------------------------------------------------------- models that work now

def test_the_real_tfx_taxi_estimator_export_freezes_and_optimizes(tmp_path):
    result = servopt("optimize", str(TFX_TESTDATA / "trainer" / "current"),
                     str(tmp_path / "out"), "--steps", "freeze,optimize", "--inputs",
                     str(TFX_TESTDATA / "csv_example_gen" / "Split-eval"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verification"]["passed"] and report["verification"]["num_examples"] > 0
    assert scan_ops(tmp_path / "out").safe  # its vocabularies still read from its assets


def test_a_scalar_string_output_is_verified(tmp_path):
    model = _save(_VersionedModel(), tmp_path / "m")
    result = servopt("optimize", str(model), str(tmp_path / "out"), "--steps", "freeze")
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------ YAML

def test_yaml_aliases_that_expand_without_bound_are_refused_without_expanding():
    text = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    started = time.monotonic()
    with pytest.raises(ServoptError, match="aliases expand to more than") as error:
        parse_yaml(text, "thresholds.yaml")
    assert time.monotonic() - started < 5 and "lol" not in str(error.value)


def test_a_yaml_integer_of_5000_digits_is_refused_in_one_line():
    with pytest.raises(ServoptError, match=r"thresholds.yaml: not valid YAML at line 1, column "
                                           r"13 \(an integer 5000 characters long"):
        parse_yaml("max_p99_ms: " + "9" * 5000, "thresholds.yaml")


# ------------------------------------------------------------------ verification inputs

@pytest.mark.parametrize("name, arrays, cause", [
    ("strings", {"features": np.array([["a"] * 16] * 4)},
     "input 'features' holds <U1 values, the signature takes (float32, shape [None, 16])"),
    ("wrong_shape", {"features": np.zeros((4, 3), "f4")},
     "input 'features' has shape [4, 3], the signature takes (float32, shape [None, 16])"),
    ("no_rows", {"features": np.zeros((0, 16), "f4")}, "input 'features' holds no rows"),
    ("nans", {"features": np.full((4, 16), np.nan, "f4")},
     "input 'features' holds NaN or infinite values"),
])
def test_npz_inputs_that_cannot_be_the_signatures_inputs_are_refused(
        two_signature_model, tmp_path, name, arrays, cause):
    inputs = tmp_path / f"{name}.npz"
    np.savez(inputs, **arrays)
    line = refused(servopt("optimize", str(two_signature_model), str(tmp_path / "out"),
                           "--steps", "freeze", "--inputs", str(inputs)))
    assert line.startswith(f"servopt: error: {inputs}: {cause}"), line
    assert not (tmp_path / "out").exists()


def test_inputs_from_a_device_or_a_fifo_are_refused_without_reading(two_signature_model,
                                                                     tmp_path):
    fifo = tmp_path / "inputs.npz"
    os.mkfifo(fifo)  # opening it would block until someone writes
    for path in ("/dev/zero", str(fifo)):
        line = refused(servopt("optimize", str(two_signature_model), str(tmp_path / "out"),
                               "--steps", "freeze", "--inputs", path))
        assert f"{path}: not a regular file or directory (a device or a FIFO)" in line


def test_a_batch_size_memory_cannot_hold_is_refused_before_anything_is_allocated(
        two_signature_model, tmp_path):
    result = CliRunner().invoke(benchmark_command, [
        f"base={two_signature_model}", *QUICK[2:], "--batch-sizes", "1000000000"])
    line = refused(result)
    assert "batch size 1000000000: its inputs need about" in line and "use batch sizes up " \
        "to" in line


def test_a_graph_too_big_to_load_is_refused_before_it_is_loaded(two_signature_model,
                                                                 tmp_path, monkeypatch):
    monkeypatch.setattr(scan_module, "MAX_NODES", 50)  # a 1e6-node model, scaled down
    line = refused(servopt("optimize", str(two_signature_model), str(tmp_path / "out"),
                           "--steps", "freeze"))
    assert "nodes (functions included), more than the 50 servopt loads" in line
    assert servopt("describe", str(two_signature_model)).exit_code == 0  # still described


# -------------------------------------------------------------------------------- hangs

def test_a_model_that_blocks_forever_is_stopped_with_a_message(tmp_path, monkeypatch):
    model = _save(_BlockingModel(), tmp_path / "m")
    assert scan_ops(model).safe
    monkeypatch.setattr(serving_session, "RUN_TIMEOUT_S", 2.0)
    started = time.monotonic()
    line = refused(servopt("optimize", str(model), str(tmp_path / "out"), "--steps",
                           "freeze"))
    assert "did not finish within 2 s (the model blocks" in line
    assert time.monotonic() - started < 120
    assert not (tmp_path / "out").exists()


_ORPHAN = """
import sys, time
from components.core.benchmark.worker import ProcessRunner
from components.core.keras_deferred import defer_keras
if __name__ == "__main__":  # TensorFlow here only: the spawned worker re-reads the above
    defer_keras()
    from components.core.benchmark.engines import EngineSpec
    runner = ProcessRunner(EngineSpec("tensorflow", sys.argv[1], "serving_default", 1, 1))
    runner.wait_ready()
    print(runner.process.pid, flush=True)
    runner.load({"x": __import__("numpy").zeros(1, "f4")})  # blocks in the model
"""


@pytest.mark.e2e  # a benchmark worker process
def test_a_benchmark_worker_stuck_in_a_model_dies_with_its_parent(tmp_path):
    model = _save(_BlockingModel(), tmp_path / "m")
    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN)
    parent = subprocess.Popen([sys.executable, str(script), str(model)],
                              stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[1])
    try:
        worker = int(parent.stdout.readline())
        time.sleep(2)  # the worker is in the model's run now
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(worker):
            time.sleep(0.5)
        assert not _alive(worker)
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ------------------------------------------------------------- outputs inside the source

def test_a_push_into_its_own_model_is_refused_up_front(two_signature_model, tmp_path):
    model = shutil.copytree(two_signature_model, tmp_path / "m")
    line = refused(servopt("push", str(model), str(model / "serving")))
    assert "is inside the model" in line and "push to a directory outside it" in line
    assert not (model / "serving").exists()


def test_an_optimize_output_inside_its_source_is_refused_up_front(example_vocab_model,
                                                                   tmp_path):
    model = shutil.copytree(example_vocab_model, tmp_path / "m")
    line = refused(servopt("optimize", str(model), str(model / "assets" / "out"),
                           "--steps", "freeze"))
    assert "is inside the source model" in line
    assert sorted(p.name for p in (model / "assets").iterdir()) == sorted(
        p.name for p in (example_vocab_model / "assets").iterdir())


def test_push_scans_the_model_and_publishes_it_only_when_allowed(tmp_path):
    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            tf.io.write_file(str(tmp_path / "pwned"), "pwned")
            return {"y": x}
    model = _save(Writer(), tmp_path / "writer")
    line = refused(servopt("push", str(model), str(tmp_path / "serving")))
    assert "refusing to run this model to push it" in line and "WriteFile" in line
    assert not (tmp_path / "serving").exists() or not list((tmp_path / "serving").iterdir())
    result = servopt("push", str(model), str(tmp_path / "serving"), "--allow-unsafe-ops",
                     "WriteFile")
    assert result.exit_code == 0, result.output
