"""One worker process per model, so models never share a heap, thread pools or caches.

Processes are started with the "spawn" method (TensorFlow is not fork-safe) and every
worker gets identical settings. The parent drives a worker through `ProcessRunner`,
which has the same methods as `LocalRunner`: each call is sent over a pipe, run in the
worker, and its result (or its error, as a one-line message) sent back.

A worker ends with its parent, however the parent ends (`_die_with`), and every run of a
model in it has a time limit (serving_session.RUN_TIMEOUT_S).

A worker prints into a log file of its own, never to the terminal (worker_log: its file
descriptors 1 and 2 point at the log before it imports TensorFlow, so this module and the
arguments a worker is started with import nothing heavy); when the worker process fails
(dies, does not answer, cannot start, or meets an unexpected error) its log's last lines
are shown. A model error the worker reports (ServoptError) is its one-line message.

A script that starts a benchmark must guard its entry point with
`if __name__ == "__main__":`, as for any "spawn" multiprocessing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from components.core.benchmark.worker_log import failure_tail, new_log, redirect_output
from components.core.errors import ServoptError
from components.core.keras_deferred import defer_keras

if TYPE_CHECKING:  # they import TensorFlow: a worker imports them after its redirection
    from components.core.benchmark.engines import EngineSpec, Feeds
    from components.core.benchmark.measure import ConcurrencySample, LoadInfo, WindowSample

READY = "ready"
# The last resort for a model that never returns where no Session deadline applies (a
# TFLite WHILE that never ends): a call that has not answered by then ends the worker.
CALL_TIMEOUT_S = 3600.0
_STOP = "stop"
_FAILED = "failed"  # the worker cannot start, or an unexpected error (its traceback is logged)


def _die_with(parent: int, poll_s: float = 1.0) -> None:
    """Ends this process as soon as `parent` is no longer its parent (it died, even by
    SIGKILL, and the worker was re-parented): a worker stuck in a model's run never
    reads its pipe, so it must notice by itself. The Session releases the GIL while it
    runs, so this thread runs whatever the model does."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)
    threading.Thread(target=watch, name="servopt-parent-watch", daemon=True).start()


def _worker_main(spec_pickle: bytes, conn: Connection, parent: int | None = None,
                 log: str | None = None) -> None:
    """The worker's loop: point its output at `log`, import TensorFlow, then serve calls
    until told to stop. The EngineSpec comes pickled: unpickling it imports TensorFlow."""
    if log is not None:
        redirect_output(Path(log))
    if parent is not None:
        _die_with(parent)
    defer_keras()  # a worker runs models as TF Serving does: 6 s and 180 MB less a start
    try:
        spec = pickle.loads(spec_pickle)
        from components.core.benchmark.engines import make_engine
        from components.core.benchmark.measure import LocalRunner
        from components.core.serving_session import first_line

        runner = LocalRunner(lambda: make_engine(spec))
        conn.send((READY, None))
    except BaseException as err:  # the worker cannot even start: report why
        traceback.print_exc()
        conn.send((_FAILED, f"the worker process failed to start: {err!r}"))
        return
    while True:
        try:
            method, args = conn.recv()
        except EOFError:  # the parent is gone
            break
        if method == _STOP:
            break
        try:
            conn.send(("ok", getattr(runner, method)(*args)))
        except ServoptError as err:
            conn.send(("error", str(err)))
        except Exception as err:
            line = f"{type(err).__name__}: {first_line(err)}"
            traceback.print_exc()
            sys.stderr.flush()
            conn.send((_FAILED, f"{spec.model_path}: {line}",))
    runner.close()
    conn.close()


class ProcessRunner:
    """A LocalRunner in its own spawned process. Methods raise ServoptError with the
    worker's message when the call fails there, or when the worker dies."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.log = new_log(spec.runtime, spec.model_path)  # None: verbose, the terminal
        self._tail_shown = False
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main, args=(pickle.dumps(spec), child, os.getpid(),
                                       None if self.log is None else str(self.log)),
            name=f"servopt-benchmark-{spec.model_path}", daemon=True)
        self.process.start()
        child.close()
        self._ready = False

    def wait_ready(self) -> None:
        """Blocks until the worker has imported TensorFlow (started in parallel)."""
        if not self._ready:
            self._receive()
            self._ready = True

    def _receive(self):
        try:
            if not self._conn.poll(CALL_TIMEOUT_S):
                self.process.kill()
                self.process.join(timeout=5)
                self._show_tail()
                raise ServoptError(f"{self.spec.model_path}: the benchmark worker did not "
                                   f"answer within {CALL_TIMEOUT_S:g} s (the model blocks or "
                                   "loops); it was stopped")
            status, value = self._conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            self.process.join(timeout=5)
            self._show_tail()
            raise ServoptError(f"{self.spec.model_path}: the benchmark worker process died "
                               f"(exit code {self.process.exitcode}); the model crashed "
                               "TensorFlow or ran out of memory") from None
        if status == _FAILED:
            self._show_tail()
        if status in ("error", _FAILED):
            raise ServoptError(value)
        return value

    def _show_tail(self) -> None:
        """The last lines of the failed worker's log, on stderr, once."""
        if self.log is not None and not self._tail_shown:
            self._tail_shown = True
            sys.stderr.write(failure_tail(self.log, f"the benchmark worker for "
                                                    f"{self.spec.model_path}"))
            sys.stderr.flush()

    def _call(self, method: str, *args):
        self.wait_ready()
        self._conn.send((method, args))
        return self._receive()

    def load(self, first_feeds: Feeds) -> LoadInfo:
        return self._call("load", first_feeds)

    def set_inputs(self, batch_size: int, pool: Sequence[Feeds]) -> None:
        return self._call("set_inputs", batch_size, list(pool))

    def warmup(self, batch_size: int, requests: int) -> None:
        return self._call("warmup", batch_size, requests)

    def window(self, batch_size: int, requests: int, seconds: float | None = None
               ) -> WindowSample:
        return self._call("window", batch_size, requests, seconds)

    def concurrent(self, batch_size: int, clients: int, requests_per_client: int,
                   seconds: float | None = None) -> ConcurrencySample:
        return self._call("concurrent", batch_size, clients, requests_per_client, seconds)

    def peak_memory_bytes(self) -> int | None:
        return self._call("peak_memory_bytes")

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def close(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conn.send((_STOP, ()))
            self.process.join(timeout=30)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(timeout=5)
        self._conn.close()
