"""The memory budget of the benchmark's workers (components/core/benchmark/memory.py).

- what a process holds is read from /proc (Pss and private memory, VmRSS where
  smaps_rollup is missing), and the budget never passes what the machine or its cgroup
  has available;
- candidates that do not fit beside the baseline and the served version are measured in
  later groups, each in rounds with the baseline, so every candidate still gets paired
  speedups; the groups are recorded in metrics.json and on the report.

The session tests plan real SavedModels and measure them with scripted runners whose
memory is scripted too (what is under test is the grouping, not a model); one e2e test
runs real workers under a budget that fits one candidate at a time.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from components.core.benchmark import run as run_module
from components.core.benchmark.config import BenchmarkConfig, ModelSpec
from components.core.benchmark.measure import LoadInfo
from components.core.benchmark.memory import (
    MB,
    MemoryPlan,
    available_bytes,
    plan_group,
    prior_estimate,
    process_memory,
    workers_budget_bytes,
)
from components.core.benchmark.report import render_report
from components.core.benchmark.run import BenchmarkSession, run_benchmark
from components.core.benchmark.schema import BenchmarkResult
from components.core.errors import ServoptError
from tests.test_benchmark_budget import LATENCY_S, PLAN, SleepyRunner


def _proc(root: Path, pid: int, status: str, rollup: str | None) -> None:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "status").write_text(status)
    if rollup is not None:
        (root / str(pid) / "smaps_rollup").write_text(rollup)


def test_a_process_holds_its_pss_and_its_private_pages_else_its_resident_set(tmp_path):
    _proc(tmp_path, 7, "VmHWM:\t  900000 kB\nVmRSS:\t  877000 kB\n",
          "Rss: 877000 kB\nPss:  479000 kB\nPrivate_Clean: 1000 kB\nPrivate_Dirty: 300000 kB\n")
    _proc(tmp_path, 8, "VmHWM:\t  900000 kB\nVmRSS:\t  877000 kB\n", None)  # old kernel
    seven = process_memory(7, tmp_path)
    assert (seven.pss_bytes, seven.private_bytes, seven.peak_rss_bytes) == (
        479000 * 1024, 301000 * 1024, 900000 * 1024)
    eight = process_memory(8, tmp_path)
    assert eight.pss_bytes == eight.private_bytes == 877000 * 1024  # counts more: safe
    assert process_memory(9, tmp_path).pss_bytes == 0  # gone
    # At its peak it held 23000 kB more than now, all of it its own: shared pages (576000
    # kB now) are the libraries, there from the start.
    assert seven.peak_private_bytes == (301000 + 23000) * 1024
    assert eight.peak_private_bytes == 900000 * 1024  # VmRSS only: all of it private


def test_a_load_keeps_room_for_the_largest_transient_of_the_runtimes_loading():
    plan = MemoryPlan(room=4e9, runtimes={"base": "tensorflow", "bf16": "tensorflow",
                                          "int8@tflite": "tflite", "f16@tflite": "tflite"})
    assert plan.load_headroom(["bf16"]) == 0  # nothing measured yet
    plan.transient = {"base": 900 * MB}
    assert plan.load_headroom(["f16@tflite"]) == 900 * MB  # the only one measured
    plan.transient["int8@tflite"] = 100 * MB
    assert plan.load_headroom(["f16@tflite"]) == 100 * MB
    assert plan.load_headroom(["f16@tflite", "bf16"]) == 900 * MB
    assert plan.load_headroom([]) == 0


def test_the_budget_never_passes_what_the_machine_or_its_cgroup_has_available(tmp_path):
    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    proc.mkdir()
    cgroup.mkdir()
    (proc / "meminfo").write_text("MemTotal: 24000000 kB\nMemAvailable: 16000000 kB\n")
    assert available_bytes(proc, cgroup) == 16000000 * 1024
    (cgroup / "memory.max").write_text("max\n")  # a cgroup without a limit
    (cgroup / "memory.current").write_text(str(1 << 30))
    assert available_bytes(proc, cgroup) == 16000000 * 1024
    (cgroup / "memory.max").write_text(str(4 << 30))  # a pod limited to 4 GiB, 1 used
    assert available_bytes(proc, cgroup) == 3 << 30
    assert workers_budget_bytes(4096, lambda: 3 << 30) == pytest.approx(0.8 * (3 << 30))
    assert workers_budget_bytes(1024, lambda: 16 << 30) == 1024 * MB
    assert workers_budget_bytes(None, lambda: float("inf")) == float("inf")


def test_a_group_is_the_longest_run_that_fits_and_never_empty():
    sizes = {"a": 300, "b": 300, "c": 100, "d": 900}
    assert plan_group(["a", "b", "c", "d"], sizes.get, 700) == ["a", "b", "c"]
    assert plan_group(["d", "a"], sizes.get, 500) == ["d"]  # alone, over the room
    assert plan_group(["a", "c", "b"], sizes.get, 400) == ["a", "c"]  # in order
    assert plan_group([], sizes.get, 400) == []


def test_a_candidate_is_estimated_by_what_its_runtime_was_measured_to_hold():
    plan = MemoryPlan(room=4e9, runtimes={"base": "tensorflow", "bf16": "tensorflow",
                                          "int8@tflite": "tflite", "f16@tflite": "tflite"})
    assert plan.estimate("bf16") == 0  # nothing measured yet
    plan.private = {"base": 700 * MB}
    assert plan.estimate("bf16") == plan.estimate("f16@tflite") == 700 * MB  # the baseline's
    plan.private["int8@tflite"] = 300 * MB
    assert plan.estimate("f16@tflite") == 300 * MB and plan.estimate("bf16") == 700 * MB
    assert MemoryPlan(room=float("inf"), runtimes={}).limited is False


def test_a_memory_budget_must_be_positive_or_null():
    with pytest.raises(ServoptError, match="memory_budget_mb must be > 0 or null"):
        BenchmarkConfig(memory_budget_mb=0).validate()
    BenchmarkConfig(memory_budget_mb=None).validate()


# ------------------------------------------------------------------ groups in a session

WORKER_MB = 100  # what each scripted worker holds, Pss and private alike


class LoadableRunner(SleepyRunner):
    """A scripted worker with a process id, loaded like a real one."""

    def __init__(self, latency_s: float, pid: int, alive: set[int]):
        super().__init__(latency_s)
        self.pid, self.alive, self.loads = pid, alive, 0
        self.concurrent_calls: list[tuple[int, int]] = []  # (batch size, clients)
        alive.add(pid)

    def concurrent(self, batch_size, clients, requests_per_client, seconds=None):
        self.concurrent_calls.append((batch_size, clients))
        time.sleep(self.latency_s * requests_per_client)

    def wait_ready(self):
        pass

    def load(self, feeds):
        self.loads += 1
        return LoadInfo(load_time_s=0.01, first_request_ms=1.0)

    def set_inputs(self, batch_size, pool):
        pass

    def close(self):
        super().close()
        self.alive.discard(self.pid)


class ScriptedMemory(MemoryPlan):
    """Every running worker holds WORKER_MB, or what `sizes_mb` gives its row once loaded."""

    def __init__(self, room_mb: float, runtimes: dict[str, str], alive: set[int]):
        super().__init__(room=room_mb * MB, runtimes=runtimes)
        self.alive, self.most, self.transient_mb = alive, 0, 0
        self.sizes_mb: dict[str, int] = {}
        self._by_pid: dict[int, int] = {}

    def record(self, name, runner):
        self._by_pid[runner.pid] = self.sizes_mb.get(name, WORKER_MB)
        self.private[name] = self._by_pid[runner.pid] * MB
        self.transient[name] = self.transient_mb * MB

    def held(self, runners):
        held = sum(self._by_pid.get(runner.pid, WORKER_MB) * MB for runner in runners
                   if runner.pid in self.alive)
        self.most = max(self.most, sum(self._by_pid.get(pid, WORKER_MB)
                                       for pid in self.alive))
        return held


@pytest.fixture()
def scripted(tiny_models, monkeypatch):
    """A session over the tiny models whose workers are LoadableRunners."""
    alive: set[int] = set()
    started: list[list[str]] = []
    made: dict[str, list[LoadableRunner]] = {}

    def start(rows, signatures, config, errors, cleanup, pools):
        started.append(list(rows))
        runners = {}
        for name in rows:
            runner = LoadableRunner(LATENCY_S[name], pid=len(alive) + 100 * len(started),
                                    alive=alive)
            made.setdefault(name, []).append(runner)
            cleanup.callback(runner.close)
            runners[name] = runner
        return runners

    monkeypatch.setattr(run_module, "_start_runners", start)
    # Candidates load smallest on disk first: the same size here keeps the models' order
    # (other tests may write beside the shared tiny models).
    sizes = {name: 1 for name in tiny_models}
    monkeypatch.setattr(run_module, "size_on_disk",
                        lambda path, skip_tflite=False: sizes[Path(path).name])

    def make(room_mb: float, plan: BenchmarkConfig = PLAN) -> BenchmarkSession:
        models = [ModelSpec(name, path) for name, path in tiny_models.items()]
        session = BenchmarkSession(models, plan)
        session.memory = ScriptedMemory(room_mb, {n: "tensorflow" for n in tiny_models},
                                        alive)
        return session

    make.sizes = sizes
    return make, started, made, alive


def test_candidates_that_do_not_fit_are_measured_in_later_groups_with_the_baseline(
        scripted):
    make, started, made, alive = scripted
    plan = dataclasses.replace(PLAN, total_budget_s=None)
    with make(room_mb=250, plan=plan) as session:  # the baseline and one candidate
        result = session.measure()
        memory = session.memory
        assert all(not runner.closed for runner in made["base"])  # until the session ends
    # The baseline starts with the candidates that fit by the prior estimate (300 MB
    # each: one, at least); each later group's workers start when its turn comes,
    # planned from what the loaded rows hold: none starts only to be closed.
    assert started == [["base", "slow"], ["fast"], ["mid"]]
    assert result.budget.memory_groups == [["slow"], ["fast"], ["mid"]]
    assert memory.most <= 200  # never above the budget
    for name in ("slow", "fast", "mid"):
        batch = result.models[name].batches[1]
        assert batch.speedup_p50_interval is not None, name  # paired with the baseline
    assert result.models["fast"].batches[1].speedup_p50 == pytest.approx(4.0)
    assert result.models["slow"].batches[1].speedup_p50 == pytest.approx(0.1)
    # The baseline's own figures are its first group's; it ran in every group.
    base = made["base"][0]
    assert len(made["base"]) == 1
    assert base.windows == 3 * result.models["base"].batches[1].windows
    assert not alive  # every worker closed at the end
    page = render_report(result)
    assert "measured in 3 groups, each with the baseline: slow; fast; mid" in page
    # What a worker holds is read after the sweep's most concurrent requests at the
    # largest batch: each in-flight request holds its own activations.
    assert base.concurrent_calls == [(max(plan.batch_sizes), max(plan.concurrency,
                                                                 default=1))]


def test_a_candidate_loads_only_where_its_load_transient_fits_too(scripted):
    """Three workers of 100 MB fit in 350 MB; loading one takes 100 MB more for a
    moment, so only two run at once."""
    make, started, _, _ = scripted
    plan = dataclasses.replace(PLAN, total_budget_s=None)
    session = make(room_mb=350, plan=plan)
    session.memory.transient_mb = 100
    with session:
        result = session.measure()
    assert result.budget.memory_groups == [["slow"], ["fast"], ["mid"]]
    with make(room_mb=350, plan=plan) as session:  # no transient: two candidates at once
        result = session.measure()
    assert result.budget.memory_groups == [["slow", "fast"], ["mid"]]


def test_a_candidate_that_holds_more_than_planned_defers_the_rest_of_its_group(scripted):
    """The first group is planned from the baseline (100 MB): two candidates. The first
    holds 200 MB once loaded, so the second waits for the next group, planned from it."""
    make, started, _, _ = scripted
    session = make(room_mb=350, plan=dataclasses.replace(PLAN, total_budget_s=None))
    session.memory.sizes_mb = {"slow": 200, "fast": 200, "mid": 200}
    with session:
        result = session.measure()
    assert started == [["base", "slow"], ["fast"], ["fast"], ["mid"]]
    assert result.budget.memory_groups == [["slow"], ["fast"], ["mid"]]
    # Over the budget only by the second worker of the first group, started with the
    # first as planned and closed before it loaded anything.
    assert session.memory.most == 100 + 200 + WORKER_MB  # base, slow, fast unloaded
    assert all(result.models[name].batches[1].speedup_p50_interval is not None
               for name in ("slow", "fast", "mid"))


def test_without_a_memory_limit_every_row_runs_at_once(scripted):
    make, started, made, _ = scripted
    plan = dataclasses.replace(PLAN, total_budget_s=None)
    with make(room_mb=float("inf"), plan=plan) as session:
        result = session.measure()
    assert started == [["base", "slow", "fast", "mid"]]
    assert result.budget.memory_groups == []
    assert all(len(runners) == 1 for runners in made.values())


def test_candidates_that_fit_by_the_prior_start_with_the_baseline(scripted):
    """On a machine with room, the first group's workers start with the baseline's (their
    TensorFlow imports overlap): no second wave of starts before the first group."""
    make, started, _, _ = scripted
    with make(room_mb=4000, plan=dataclasses.replace(PLAN, total_budget_s=None)) as session:
        result = session.measure()
    assert started == [["base", "slow", "fast", "mid"]]
    assert result.budget.memory_groups == []  # one group: every row at once
    assert prior_estimate(100 * MB) == 300 * MB + 20 * 100 * MB


def test_candidates_load_smallest_first(scripted):
    make, started, _, _ = scripted
    make.sizes.update(slow=3, fast=1, mid=2)
    with make(room_mb=float("inf"), plan=dataclasses.replace(PLAN, total_budget_s=None)):
        pass
    assert started == [["base", "fast", "mid", "slow"]]


def test_a_spent_time_budget_leaves_the_later_groups_unmeasured_and_says_why(scripted):
    make, started, _, _ = scripted
    plan = dataclasses.replace(PLAN, total_budget_s=0.001)
    with make(room_mb=250, plan=plan) as session:
        result = session.measure()
    assert started == [["base", "slow"]]  # no later group was started
    assert {"fast", "mid"} <= set(result.budget.not_measured)
    assert "group 2" in result.models["fast"].error
    assert result.models["slow"].batches[1].speedup_p50 == pytest.approx(0.1)


def test_the_search_restarts_a_contender_a_group_closed(scripted):
    """The contenders run again for the search (their memory groups closed them), and the
    other candidates' workers are closed before it starts rows of its own."""
    make, started, made, alive = scripted
    plan = dataclasses.replace(PLAN, total_budget_s=None)
    with make(room_mb=250, plan=plan) as session:
        result = session.measure()
        session.run_only(["fast"])
        running = sorted(session.runners)
    assert running == ["base", "fast"]
    # Started for its group, and again for the search.
    assert started[-1] == ["fast"] and len(made["fast"]) == 2
    assert result.models["fast"].load_time_s == 0.01  # its first load's


@pytest.mark.e2e
def test_real_workers_one_candidate_at_a_time_under_a_small_budget(tiny_models):
    """1 MiB holds no worker: the baseline runs throughout, each candidate alone beside
    it, and metrics.json says so. Each row's peak memory is its worker's own: a spawned
    worker is forked from this process before it execs Python, and ru_maxrss (kept
    across exec) reported this process's resident set, 2 GiB of ballast included."""
    import numpy as np

    ballast = np.ones(1 << 28)  # 2 GiB, resident
    config = BenchmarkConfig(batch_sizes=(1,), concurrency=(), window_seconds=None,
                             window_requests=10, max_windows=6, min_requests=1,
                             warmup_requests=2, decision_budget_s=0, search_budget_s=0,
                             memory_budget_mb=1)
    models = [ModelSpec(name, path) for name, path in tiny_models.items()
              if name in ("base", "fast", "mid")]
    result = run_benchmark(models, config)
    assert sorted(result.budget.memory_groups) == [["fast"], ["mid"]]  # one at a time
    for name in ("fast", "mid"):
        model = result.models[name]
        assert model.error is None and model.at(1).speedup_p50_interval is not None
        assert 0 < model.peak_memory_bytes < ballast.nbytes
    again = BenchmarkResult.from_dict(result.to_dict())
    assert again.budget.memory_groups == result.budget.memory_groups


def test_the_search_tries_only_the_settings_whose_workers_fit():
    from components.core.benchmark.search import fit_in_memory

    plans = {"bf16": ["a", "b", "c"], "int8@tflite": ["d", "e"]}
    cost = {"bf16": 700 * MB, "int8@tflite": 300 * MB}.get
    kept, room, notes = fit_in_memory(plans, cost, 1700 * MB, "intra_op_threads")
    assert kept == {"bf16": ["a", "b"], "int8@tflite": ["d"]}
    assert room == pytest.approx(0)
    assert notes["bf16"].startswith("1 of 3 intra_op_threads value(s) not tried: the memory "
                                    "budget holds no more workers of about 700 MiB")
    assert notes["int8@tflite"].startswith("1 of 2")
    kept, _, notes = fit_in_memory(plans, cost, 100 * MB, "batching")
    assert kept == {} and set(notes) == {"bf16", "int8@tflite"}
    unlimited = fit_in_memory(plans, cost, float("inf"), "batching")
    assert unlimited[0] == plans and unlimited[2] == {}
    assert fit_in_memory(plans, lambda name: 0, 0, "batching")[0] == plans  # not measured
    # Room for many more: what is left is the room less the rows kept, not less what fits.
    assert fit_in_memory(plans, cost, 10000 * MB, "batching")[1] == 10000 * MB - (
        3 * 700 + 2 * 300) * MB


def test_accuracy_holds_the_baseline_and_the_candidates_that_fit_beside_it(monkeypatch):
    """The accuracy pipeline loads every model of a group in this process: under a memory
    budget the candidates come in groups, each with the baseline (agreement needs it)."""
    from components.core.benchmark.run import _accuracy, accuracy_groups
    from components.core.benchmark.schema import AccuracyResult, ModelResult

    plan = MemoryPlan(room=2000 * MB, runtimes={"base": "tensorflow", "bf16": "tensorflow",
                                                "int8": "tflite", "f16": "tflite"})
    plan.private = {"base": 900 * MB, "int8": 300 * MB}
    names = ["base", "bf16", "int8", "f16"]
    assert accuracy_groups(names, plan) == [["base", "bf16"], ["base", "int8", "f16"]]
    assert accuracy_groups(names, None) == [names]
    assert accuracy_groups(names, MemoryPlan(room=float("inf"), runtimes={})) == [names]

    seen: list[list[str]] = []

    def measured(group, rows, config):
        seen.append(list(group))
        return {name: AccuracyResult(accuracy=0.9 if name == "base" else 0.8,
                                     top1_agreement=None if name == "base" else len(seen),
                                     max_abs_diff=None, num_examples=64)
                for name in group}

    monkeypatch.setattr(run_module, "_accuracy_of", measured)
    results = {name: ModelResult(path=name, role="candidate") for name in names}
    lines: list[str] = []
    _accuracy({}, results, "base", BenchmarkConfig(), lines.append, memory=plan)
    assert seen == [["base", "bf16"], ["base", "int8", "f16"]]
    assert results["base"].accuracy.accuracy == 0.9
    assert [results[name].accuracy.top1_agreement for name in ("bf16", "int8", "f16")] == [
        1, 2, 2]
    assert "in 2 groups that fit the memory budget, each with the baseline" in lines[0]
