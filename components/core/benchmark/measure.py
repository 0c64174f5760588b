"""Timing one loaded model: warm-up, measurement windows and concurrent clients.

`LocalRunner` measures an Engine in the process it lives in. A worker process hosts
one (see worker), and the TF Serving backend drives one whose engine is a client.
Latency is the wall time of one request, from the call to the returned outputs.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from components.core.benchmark.engines import Engine, Feeds
from components.core.benchmark.load import CpuMeter
from components.core.benchmark.memory import process_memory
from components.core.errors import ServoptError


@dataclass
class LoadInfo:
    load_time_s: float | None  # None where the model was loaded elsewhere (remote server)
    first_request_ms: float  # the first request after loading: lazy initialisation shows


@dataclass
class WindowSample:
    """One measurement window: every request's latency and the window's wall time."""

    latencies_ms: list[float]
    duration_s: float
    examples: int
    other_cpu: float | None = None  # share of the machine other processes used (see load)


@dataclass
class ConcurrencySample:
    concurrency: int
    batch_size: int
    latencies_ms: list[float]
    duration_s: float  # from all clients starting together to the last one finishing
    examples: int


def batch_size_of(feeds: Feeds) -> int:
    return len(next(iter(feeds.values())))


class LocalRunner:
    """One model, loaded in this process, measured on fixed input batches."""

    def __init__(self, load: Callable[[], Engine]):
        self._load = load
        self.engine: Engine | None = None
        self._inputs: dict[int, list[Feeds]] = {}
        self._next: dict[int, int] = {}

    def load(self, first_feeds: Feeds) -> LoadInfo:
        start = time.perf_counter()
        self.engine = self._load()
        load_time = time.perf_counter() - start
        load_time = getattr(self.engine, "load_time_s", load_time)
        start = time.perf_counter()
        self.engine.run(first_feeds)
        return LoadInfo(load_time, (time.perf_counter() - start) * 1e3)

    def set_inputs(self, batch_size: int, pool: Sequence[Feeds]) -> None:
        if not pool or any(batch_size_of(f) != batch_size for f in pool):
            raise ServoptError(f"input batches do not all hold {batch_size} examples")
        self._inputs[batch_size] = list(pool)
        self._next[batch_size] = 0

    def _feeds(self, batch_size: int) -> Feeds:
        pool = self._inputs[batch_size]
        index = self._next[batch_size]
        self._next[batch_size] = (index + 1) % len(pool)
        return pool[index]

    def _engine(self) -> Engine:
        if self.engine is None:
            raise ServoptError("the model is not loaded")
        return self.engine

    def warmup(self, batch_size: int, requests: int) -> None:
        engine = self._engine()
        for _ in range(requests):
            engine.run(self._feeds(batch_size))

    def window(self, batch_size: int, requests: int, seconds: float | None = None
               ) -> WindowSample:
        """`requests` timed requests, or fewer if `seconds` pass first (at least one): a
        slow model's window is a time span, a fast one's ends at `requests`."""
        engine = self._engine()
        latencies: list[float] = []
        clock = time.perf_counter
        meter = CpuMeter.start()
        start = clock()
        deadline = start + seconds if seconds else None
        while not latencies or (len(latencies) < requests
                                and (deadline is None or clock() < deadline)):
            feeds = self._feeds(batch_size)
            before = clock()
            engine.run(feeds)
            latencies.append((clock() - before) * 1e3)
        duration = clock() - start
        return WindowSample(latencies, duration, batch_size * len(latencies),
                            meter.other_share())

    def concurrent(self, batch_size: int, clients: int, requests_per_client: int,
                   seconds: float | None = None) -> ConcurrencySample:
        """`clients` threads issue requests at once, each `requests_per_client` (or fewer
        if `seconds` pass first); one warm-up request per client is not counted."""
        engine = self._engine()
        pool = self._inputs[batch_size]
        per_client: list[list[float]] = [[] for _ in range(clients)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(clients + 1)
        finished: list[float] = []
        clock = time.perf_counter

        def client(index: int) -> None:
            try:
                engine.run(pool[index % len(pool)])  # warm-up, not counted
                barrier.wait()
                start = clock()
                deadline = start + seconds if seconds else None
                count = 0
                while count == 0 or (count < requests_per_client
                                     and (deadline is None or clock() < deadline)):
                    feeds = pool[(index + count) % len(pool)]
                    before = clock()
                    engine.run(feeds)
                    per_client[index].append((clock() - before) * 1e3)
                    count += 1
                finished.append(clock())
            except threading.BrokenBarrierError:
                pass
            except BaseException as err:  # re-raised in the calling thread
                errors.append(err)
                barrier.abort()

        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(clients)]
        for thread in threads:
            thread.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        start = clock()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        latencies = [value for values in per_client for value in values]
        return ConcurrencySample(clients, batch_size, latencies, max(finished) - start,
                                 batch_size * len(latencies))

    def peak_memory_bytes(self) -> int | None:
        """The high-water mark of resident memory: the engine's server if it has one,
        else this process. VmHWM, not ru_maxrss: a spawned worker is forked from its
        parent before it execs Python, and Linux keeps ru_maxrss across exec, so every
        worker reported its parent's resident set (1527 MB for every row of a demo run);
        VmHWM belongs to the address space exec makes. ru_maxrss (KiB) where /proc
        cannot be read."""
        measure = getattr(self.engine, "peak_memory_bytes", None)
        if measure is not None:
            return measure()
        peak = process_memory(os.getpid()).peak_rss_bytes
        return peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
