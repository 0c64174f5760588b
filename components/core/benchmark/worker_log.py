"""Where a benchmark worker's output goes: into a log file of its own, not the terminal.

A worker process prints TensorFlow's C++ start-up logs (the CUDA probe, the oneDNN banner,
absl's "All log messages before absl::InitializeLog()" once per logging thread), TFLite's
"Created TensorFlow Lite XNNPACK delegate" at each interpreter, and the traceback of an
unexpected error. C++ code writes to file descriptors 1 and 2, not to sys.stdout, so the
worker points both at its log (`redirect_output`, os.dup2) first thing, before it imports
TensorFlow. The log is kept (in `worker_output`'s directory: beside the benchmark's result,
or a temporary directory removed when the process ends); when a worker fails, its last
lines are shown (`failure_tail`); `worker_output(verbose=True)` leaves the workers'
output on the terminal instead.

Nothing here imports TensorFlow: the worker runs it before TensorFlow is loaded.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

WORKERS_DIR = "benchmark-workers"  # beside a result: one <n>-<runtime>-<model>.log per worker
TAIL_LINES = 20


@dataclass(frozen=True)
class WorkerOutput:
    directory: Path | None = None  # None: a temporary directory, removed at exit
    verbose: bool = False  # True: workers write to this process's terminal, no log


_current = WorkerOutput()
_temporary: Path | None = None


@contextlib.contextmanager
def worker_output(directory: Path | str | None = None, verbose: bool | None = None
                  ) -> Iterator[WorkerOutput]:
    """Workers started inside the block log into `directory` (created; the logs of an
    earlier run there are removed) and/or, with `verbose`, write to the terminal. What is
    not given (None) stays as the enclosing block set it."""
    global _current
    previous = _current
    if directory is not None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.log"):
            old.unlink()
    _current = WorkerOutput(previous.directory if directory is None else directory,
                            previous.verbose if verbose is None else verbose)
    try:
        yield _current
    finally:
        _current = previous


def current_output() -> WorkerOutput:
    return _current


def new_log(runtime: str, model_path: str) -> Path | None:
    """A new, empty log file for one worker; None when workers write to the terminal."""
    if _current.verbose:
        return None
    directory = _current.directory or _temporary_directory()
    model = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(Path(model_path).parts[-2:]))
    for number in itertools.count(len(list(directory.glob("*.log"))) + 1):  # in order
        path = directory / f"{number:02d}-{runtime}-{model[-60:]}.log"
        try:
            path.open("x").close()
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


def _temporary_directory() -> Path:
    global _temporary
    if _temporary is None:
        _temporary = Path(tempfile.mkdtemp(prefix="servopt-workers-"))
        atexit.register(shutil.rmtree, _temporary, True)
    return _temporary


def redirect_output(log: Path) -> None:
    """In the worker: file descriptors 1 and 2 (sys.stdout, sys.stderr and whatever C++
    code writes) appended to `log`."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def failure_tail(log: Path, what: str, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a failed worker's log, TensorFlow's start-up noise left
    out, as a block to print; empty when nothing else is there."""
    from components.core.tf_setup import without_noise  # the parent has TensorFlow loaded

    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    kept = without_noise(text).splitlines()[-lines:]
    if not kept:
        return ""
    return "".join([f"servopt: {what} failed; the last lines of its log {log}:\n",
                    *(f"  | {line}\n" for line in kept)])
