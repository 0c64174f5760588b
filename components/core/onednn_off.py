"""Running SavedModels with oneDNN off: one child process, started once and reused.

TF reads `TF_ENABLE_ONEDNN_OPTS` once, at its start (tensorflow/core/util/port.cc
IsMklEnabled), so outputs with oneDNN off come from a child process started with it set
to 0 (see verify). Starting one imports TensorFlow (without Keras: keras_deferred), paid for
every variant when each had a child of its own (a pipeline verifies seven models). Here
one child serves every model this process verifies: each request is a line on its stdin
naming the model, the pickled inputs and the file to write the outputs to, and each answer
a line on its stdout. The child's own output (TensorFlow's logs) goes to a log file, never
to the terminal; a child that dies (a model that crashes TensorFlow) fails its request
with the last line of that log, and the next request starts a fresh one.

Only models the caller has already checked run here (the safety scan comes first), as in
the parent.
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from components.core.keras_deferred import defer_keras
from components.core.requirements import ONEDNN_ENV

ANSWER = "servopt-onednn-off:"  # the prefix of the child's answers (other lines: ignored)


class OneDnnOffChild:
    """The child process and its log; `run` sends one model at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    def run(self, model_dir: Path, inputs: Any) -> Any:
        """The outputs of `run_signatures(model_dir, inputs)` with oneDNN off; RuntimeError
        with the child's last line when it fails."""
        with self._lock, tempfile.TemporaryDirectory(prefix="servopt-onednn-off-") as scratch:
            feeds, outputs = Path(scratch) / "inputs.pkl", Path(scratch) / "outputs.pkl"
            feeds.write_bytes(pickle.dumps(inputs))
            process = self._started()
            request = {"model": str(model_dir), "inputs": str(feeds), "outputs": str(outputs)}
            try:
                process.stdin.write(json.dumps(request) + "\n")
                process.stdin.flush()
                answer = self._answer(process)
            except (BrokenPipeError, OSError):
                answer = None
            if answer is None:  # the child died: its log says why
                why = self._last_log_line() or "the oneDNN-off child process died"
                self._stop()
                raise RuntimeError(why)
            if answer != "ok":
                raise RuntimeError(answer)
            return pickle.loads(outputs.read_bytes())  # written by our child, just now

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _started(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            self._stop()
            self._log = tempfile.TemporaryFile(  # noqa: SIM115 - lives as long as the child
                prefix="servopt-onednn-off-", suffix=".log")
            self._process = subprocess.Popen(
                [sys.executable, "-m", "components.core.onednn_off"],
                env={**os.environ, ONEDNN_ENV: "0"}, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        return self._process

    @staticmethod
    def _answer(process: subprocess.Popen) -> str | None:
        for line in process.stdout:
            if line.startswith(ANSWER):
                return line[len(ANSWER):].strip()
        return None  # end of output: the child is gone

    def _last_log_line(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = [line for line in self._log.read().decode(errors="replace").splitlines()
                 if line.strip()]
        return lines[-1].strip() if lines else ""

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            try:
                process.stdin.close()
                process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


_CHILD = OneDnnOffChild()
atexit.register(_CHILD.close)


def run_without_onednn(model_dir: Path, inputs: Any) -> Any:
    """`serving_session.run_signatures` with oneDNN off, in this process's shared child."""
    return _CHILD.run(model_dir, inputs)


def _serve() -> None:
    """The child: one request per stdin line until stdin closes."""
    from components.core.errors import first_line
    from components.core.serving_session import run_signatures

    for line in sys.stdin:
        request = json.loads(line)
        try:
            produced = run_signatures(Path(request["model"]),
                                      pickle.loads(Path(request["inputs"]).read_bytes()))
            Path(request["outputs"]).write_bytes(pickle.dumps(produced))
            answer = "ok"
        except Exception as err:  # noqa: BLE001 - the parent reports it, the child goes on
            answer = f"{type(err).__name__}: {first_line(err)}"
        sys.stdout.write(f"{ANSWER} {' '.join(answer.split())}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    defer_keras()  # the child only runs SavedModels with the TF1 loader (keras_deferred)
    _serve()
