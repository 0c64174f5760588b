"""Benchmark workers are as quiet as the parent: what they print (TensorFlow's and absl's
start-up logs, TFLite's delegate line, tracebacks) goes to a log file per worker, beside
the result; a failed worker's last lines are shown, TensorFlow's start-up noise left out.

The worker tests start real worker processes (each imports TensorFlow) and capture the
terminal at the file-descriptor level (capfd): C++ code writes to fd 2, not sys.stderr.
"""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from components.core.benchmark import worker_log
from components.core.benchmark.worker_log import (
    WORKERS_DIR,
    failure_tail,
    new_log,
    worker_output,
)
from components.core.errors import ServoptError

# What TensorFlow, absl and TFLite print at start-up (the lines `servopt demo` showed):
# glog-style lines (I0000 00:00:... port.cc:153] oneDNN ..., E0000 ... cuda_platform.cc:52]
# failed call to cuInit), absl's pre-init warning and TFLite's delegate line.
NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d"
                   r"|absl::InitializeLog|cuda_platform\.cc|cudart_stub\.cc|port\.cc:\d+\]"
                   r"|cpu_feature_guard|XNNPACK delegate|^INFO: |^WARNING: ", re.MULTILINE)
BANNER = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
          "STDERR\n"
          "I0000 00:00:1796578108.054843    8014 port.cc:153] oneDNN custom operations are "
          "on. You may see slightly different numerical results.\n"
          "E0000 00:00:1796578108.1  8014 cuda_platform.cc:52] failed call to cuInit: "
          "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
          "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")


def test_a_failed_workers_tail_leaves_out_the_start_up_noise_and_keeps_the_rest(tmp_path):
    log = tmp_path / "01-tensorflow-m.log"
    log.write_text(BANNER + "".join(f"line {n}\n" for n in range(30)) + BANNER)
    tail = failure_tail(log, "the benchmark worker for m", lines=3)
    assert tail == (f"servopt: the benchmark worker for m failed; the last lines of its log "
                    f"{log}:\n  | line 27\n  | line 28\n  | line 29\n")
    log.write_text(BANNER)
    assert failure_tail(log, "w") == ""  # nothing but noise: nothing to show
    assert failure_tail(tmp_path / "gone.log", "w") == ""


def test_each_worker_gets_its_own_log_in_the_directory_given_and_none_when_verbose(tmp_path):
    (tmp_path / WORKERS_DIR).mkdir()
    (tmp_path / WORKERS_DIR / "01-tflite-old.log").write_text("an earlier run\n")
    with worker_output(tmp_path / WORKERS_DIR) as output:
        assert output.directory == tmp_path / WORKERS_DIR and not output.verbose
        assert not (tmp_path / WORKERS_DIR / "01-tflite-old.log").exists()
        first = new_log("tensorflow", "/runs/Quantizer/quantized_model/7")
        second = new_log("tensorflow", "/runs/Quantizer/quantized_model/7")
        assert first.name == "01-tensorflow-quantized_model-7.log" and first.exists()
        assert second.name == "02-tensorflow-quantized_model-7.log"
        with worker_output(verbose=True):  # the directory stays; workers print instead
            assert worker_log.current_output().directory == tmp_path / WORKERS_DIR
            assert new_log("tflite", "m.tflite") is None
        assert new_log("tflite", "/a b/m.tflite").name == "03-tflite-a_b-m.tflite.log"
    outside = new_log("tflite", "m.tflite")  # no directory given: a temporary one
    assert outside.parent != tmp_path / WORKERS_DIR and outside.exists()


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if NOISE.search(line)]


@pytest.mark.e2e
def test_the_benchmark_prints_no_tensorflow_start_up_noise_and_logs_each_worker(
        two_signature_model, tmp_path, capfd):
    """The demo's benchmark stage (a SavedModel and a TFLite model, one worker each), its
    output captured as a terminal sees it."""
    from components.benchmark_cli import benchmark_command
    from tests.model_zoo import tflite_bytes

    tflite = tmp_path / "variant.tflite"
    tflite.write_bytes(tflite_bytes(two_signature_model, int8=False))
    capfd.readouterr()  # what building the models printed is not the benchmark's
    result = CliRunner().invoke(benchmark_command, [
        f"base={two_signature_model}", f"variant={tflite}", "--batch-sizes", "1",
        "--concurrency", "", "--search-budget", "0", "--warmup-requests", "2",
        "--window-seconds", "0", "--window-requests", "10", "--max-windows", "6",
        "--json", str(tmp_path / "metrics.json")])
    terminal = capfd.readouterr()
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert all(model["error"] is None for model in metrics["models"].values())
    printed = terminal.out + terminal.err + result.stdout + result.stderr
    assert _noise(printed) == [], printed
    logs = sorted(path.name for path in (tmp_path / WORKERS_DIR).iterdir())
    assert [name.split("-")[1] for name in logs] == ["tensorflow", "tflite"], logs


@pytest.mark.e2e
def test_a_worker_that_fails_shows_the_last_lines_of_its_log(two_signature_model, tmp_path,
                                                              capfd):
    from components.core.benchmark.engines import EngineSpec
    from components.core.benchmark.worker import ProcessRunner

    with worker_output(tmp_path):
        runner = ProcessRunner(EngineSpec("tensorflow", str(two_signature_model),
                                          "serving_default", 1, 1))
    try:
        runner.wait_ready()
        capfd.readouterr()
        with pytest.raises(ServoptError, match="AttributeError"):
            runner._call("no_such_method")  # an unexpected error in the worker
    finally:
        runner.close()
    err = capfd.readouterr().err
    assert err.startswith(f"servopt: the benchmark worker for {two_signature_model} failed; "
                          f"the last lines of its log {runner.log}:\n"), err
    assert "  | AttributeError: " in err and _noise(err) == []
    assert runner.log.parent == tmp_path and "Traceback" in runner.log.read_text()
