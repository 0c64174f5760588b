"""Timing loops of one loaded model: windows by count or by time span, concurrent clients,
load and first request. The engine here sleeps instead of running a model: what is under
test is the timing code (sleeping releases the GIL, as Session.run does)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from components.core.benchmark.measure import LocalRunner
from components.core.errors import ServoptError


class SleepingEngine:
    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, []

    def run(self, feeds):
        self.calls.append(int(feeds["x"][0]))
        time.sleep(self.seconds)
        return {"y": feeds["x"]}

    def close(self):
        pass


def _runner(seconds: float) -> tuple[LocalRunner, SleepingEngine]:
    engine = SleepingEngine(seconds)
    runner = LocalRunner(lambda: engine)
    runner.load({"x": np.zeros(4)})
    runner.set_inputs(4, [{"x": np.full(4, i)} for i in range(3)])
    return runner, engine


def test_a_window_is_a_number_of_requests_cycling_through_the_input_pool():
    runner, engine = _runner(0.001)
    runner.warmup(4, 2)
    sample = runner.window(4, requests=5)
    assert len(sample.latencies_ms) == 5 and sample.examples == 20
    assert engine.calls == [0, 0, 1, 2, 0, 1, 2, 0]  # first request, warm-up 0 1, window
    assert all(latency >= 1.0 for latency in sample.latencies_ms)
    assert sample.duration_s >= sum(sample.latencies_ms) / 1e3


def test_a_window_can_be_a_time_span():
    runner, _ = _runner(0.005)
    sample = runner.window(4, requests=1000, seconds=0.05)
    assert sample.duration_s >= 0.05
    assert 1 <= len(sample.latencies_ms) <= 11  # about 10 requests of 5 ms fit


def test_a_time_window_ends_early_once_it_holds_its_requests():
    runner, _ = _runner(0.001)
    sample = runner.window(4, requests=5, seconds=30.0)
    assert len(sample.latencies_ms) == 5 and sample.duration_s < 5.0
    both = runner.concurrent(4, clients=2, requests_per_client=3, seconds=30.0)
    assert len(both.latencies_ms) == 6 and both.duration_s < 5.0


def test_concurrent_clients_overlap_their_requests():
    runner, _ = _runner(0.02)
    single = runner.concurrent(4, clients=1, requests_per_client=5)
    double = runner.concurrent(4, clients=2, requests_per_client=5)
    assert len(double.latencies_ms) == 10 and double.examples == 40
    assert double.examples / double.duration_s > 1.5 * single.examples / single.duration_s


def test_load_reports_load_time_and_the_first_request():
    engine = SleepingEngine(0.01)
    runner = LocalRunner(lambda: (time.sleep(0.02), engine)[1])
    loaded = runner.load({"x": np.zeros(1)})
    assert loaded.load_time_s >= 0.02 and loaded.first_request_ms >= 10
    assert runner.peak_memory_bytes() > 0


def test_inputs_of_the_wrong_batch_size_are_refused():
    runner, _ = _runner(0.0)
    with pytest.raises(ServoptError, match="do not all hold 8 examples"):
        runner.set_inputs(8, [{"x": np.zeros(4)}])
