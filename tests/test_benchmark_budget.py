"""The benchmark's total time budget and what is never lost.

- the rows are ranked by promise (the baseline first, then the fastest warm-up) and the
  least promising that do not fit the budget are not measured, each recorded with why;
- the rounds end at the budget's deadline;
- the result goes to a checkpoint after every batch size, so metrics.json grows as rows
  complete;
- a late step that fails (FLOPs, accuracy, the search, the report, a figure) is recorded
  for its row or the run, and what was measured stands.

The sessions here are planned on real SavedModels (signatures, inputs), then measured with
scripted in-process runners (`SleepyRunner`: a request sleeps its latency) instead of
worker processes: what is under test is the budget and the bookkeeping, not a model.
"""

from __future__ import annotations

import json
import time

import pytest

from components.core.benchmark import run as run_module
from components.core.benchmark.budget import (
    Budget,
    clock_text,
    rank_rows,
    rewarm_count,
    round_cost_s,
    rows_that_fit,
)
from components.core.benchmark.config import BenchmarkConfig, ModelSpec
from components.core.benchmark.measure import WindowSample
from components.core.benchmark.outputs import metrics_checkpoint, write_results
from components.core.benchmark.run import BenchmarkSession, _count_flops, _search
from components.core.benchmark.scheduler import interleaved_rounds
from components.core.benchmark.schema import BenchmarkResult, load_metrics
from components.core.errors import ServoptError


class SleepyRunner:
    """Every request takes `latency_s` (a sleep); records what it was asked to do."""

    def __init__(self, latency_s: float):
        self.latency_s, self.closed, self.windows = latency_s, False, 0

    def warmup(self, batch_size, requests):
        time.sleep(self.latency_s * requests)

    def window(self, batch_size, requests, seconds=None):
        time.sleep(self.latency_s * requests)
        self.windows += 1
        return WindowSample([self.latency_s * 1e3] * requests, self.latency_s * requests,
                            batch_size * requests)

    def peak_memory_bytes(self):
        return 1

    def close(self):
        self.closed = True


LATENCY_S = {"base": 0.02, "slow": 0.2, "fast": 0.005, "mid": 0.05}
# One warm-up request, windows of one request, no re-warm: a row costs one request per
# round; confidence 0.75 needs 3 rounds.
PLAN = BenchmarkConfig(batch_sizes=(1,), concurrency=(), warmup_requests=1,
                       window_seconds=None, window_requests=1, rewarm_requests=0,
                       max_windows=6, confidence=0.75, search_budget_s=0)


def _session(tiny_models, plan: BenchmarkConfig, checkpoint=None, lines=None
             ) -> tuple[BenchmarkSession, dict[str, SleepyRunner]]:
    models = [ModelSpec(name, path) for name, path in tiny_models.items()]
    session = BenchmarkSession(models, plan, progress=(lines.append if lines is not None
                                                       else None), checkpoint=checkpoint)
    runners = {name: SleepyRunner(LATENCY_S[name]) for name in tiny_models}
    session.runners = dict(runners)  # no worker processes: see the module docstring
    session.budget = Budget(plan.total_budget_s)  # counted from here, not from planning
    return session, runners


def test_the_baseline_comes_first_then_the_fastest_candidates():
    assert rank_rows("base", {"slow": 0.2, "base": 0.5, "fast": 0.01, "mid": 0.05}) == [
        "base", "fast", "mid", "slow"]
    assert rank_rows("gone", {"b": 2.0, "a": 1.0}) == ["a", "b"]  # baseline failed


def test_the_served_version_is_kept_beside_the_baseline_however_slow():
    """The gate compares every candidate with the served version (vs_served): it is a
    reference like the baseline, in the floor whatever the budget."""
    per_request = {"slow": 0.2, "base": 0.5, "fast": 0.01, "served": 0.9}
    ranked = rank_rows("base", per_request, ["served"])
    assert ranked == ["base", "served", "fast", "slow"]
    costs = dict.fromkeys(ranked, 1.0)
    assert rows_that_fit(ranked, costs, 6, 1.0, keep=3) == ["base", "served", "fast"]


def test_rows_that_fit_keep_the_longest_prefix_and_always_the_first():
    costs = {"a": 1.0, "b": 1.0, "c": 5.0}
    assert rows_that_fit(["a", "b", "c"], costs, rounds=3, seconds=7) == ["a", "b"]
    assert rows_that_fit(["c", "a"], costs, rounds=3, seconds=1) == ["c"]
    assert rows_that_fit(["c", "a", "b"], costs, rounds=3, seconds=0, keep=2) == ["c", "a"]


def test_a_rows_round_costs_its_window_which_ends_at_its_requests_or_its_seconds():
    # 300 requests of 0.1 ms end the window in 30 ms; 300 of 10 ms would take 3 s: 1 s
    assert round_cost_s(0.0001, 1.0, 300, 3) == pytest.approx(0.0303)
    assert round_cost_s(0.010, 1.0, 300, 3) == pytest.approx(1.03)
    assert round_cost_s(2.0, 1.0, 300, 0) == 2.0  # at least one request
    assert round_cost_s(0.010, None, 50, 0) == pytest.approx(0.5)  # count windows
    assert round_cost_s(1.0, 0.5, 300, 3) == pytest.approx(2.0)  # one re-warm, one request


def test_a_slow_row_is_re_warmed_by_about_a_tenth_of_a_second_of_work():
    assert rewarm_count(3, 0.0001) == 3  # fast requests: all of them
    assert rewarm_count(3, 0.04) == 3
    assert rewarm_count(3, 0.06) == 2
    assert rewarm_count(3, 1.0) == 1  # a ResNet50 batch: one request wakes the pools
    assert rewarm_count(3, None) == 3  # before its first window
    assert rewarm_count(0, 1.0) == 0


def test_rounds_re_warm_a_slow_row_once_its_request_time_is_known():
    asked: list[int] = []

    class Slow(SleepyRunner):
        def warmup(self, batch_size, requests):
            asked.append(requests)

    plan = BenchmarkConfig(batch_sizes=(1,), window_seconds=None, window_requests=1,
                           rewarm_requests=3, max_windows=3, min_requests=1,
                           confidence=0.75)
    interleaved_rounds({"slow": Slow(0.2)}, 1, plan, warmed=True)
    assert asked == [3, 1, 1]  # all three before the first window, then one


def test_progress_lines_say_the_time_spent_the_budget_and_the_time_left():
    ticks = iter([100.0, 190.0])
    line = Budget(420.0, clock=lambda: next(ticks)).line("batch size 1", left_s=75)
    assert line == "[1:30 of 7:00] batch size 1, about 1:15 left"
    assert clock_text(float("inf")) == "no limit"


def test_without_a_limit_every_row_is_measured_the_most_promising_first(tiny_models):
    import dataclasses

    session, runners = _session(tiny_models, dataclasses.replace(PLAN, total_budget_s=None))
    result = session.measure()
    assert result.budget.order == ["base", "fast", "mid", "slow"]
    assert result.budget.not_measured == {} and result.budget.stopped == ""
    assert all(1 in model.batches and not model.error for model in result.models.values())
    assert result.models["fast"].batches[1].speedup_p50 == pytest.approx(4.0)


def test_a_short_budget_leaves_out_the_least_promising_row_and_says_why(tiny_models):
    import dataclasses

    # After the warm-ups (~0.28 s) about 0.7 s are left: 3 rounds of base, fast and mid
    # cost ~0.23 s; with slow they would cost ~0.83 s.
    lines: list[str] = []
    session, runners = _session(tiny_models, dataclasses.replace(PLAN, total_budget_s=1.0),
                                lines=lines)
    result = session.measure()
    assert result.budget.order == ["base", "fast", "mid", "slow"]
    assert list(result.budget.not_measured) == ["slow"]
    slow = result.models["slow"]
    assert slow.batches == {} and "not measured at batch size 1" in slow.error
    assert "total_budget_s" in slow.error  # says what to do
    assert runners["slow"].closed and runners["slow"].windows == 0  # its memory freed
    for name in ("base", "fast", "mid"):
        assert result.models[name].batches[1].windows >= 3 and not result.models[name].error
    assert any("the most promising first: base, fast, mid" in line for line in lines)
    assert all(line.startswith("[") and " of 0:01]" in line for line in lines)
    assert result.budget.stopped.startswith("the budget ran short at batch size 1")


def test_a_spent_budget_still_compares_the_baseline_with_the_most_promising(tiny_models):
    import dataclasses

    session, runners = _session(tiny_models, dataclasses.replace(PLAN, total_budget_s=0.001))
    time.sleep(0.01)
    result = session.measure()
    assert set(result.budget.not_measured) == {"mid", "slow"}
    assert all(not result.models[name].batches and "budget" in result.models[name].error
               for name in ("mid", "slow"))
    for name in ("base", "fast"):  # the floor: its minimum rounds, past the budget
        assert result.models[name].batches[1].windows == 3
    assert result.models["fast"].batches[1].speedup_p50 == pytest.approx(4.0)


def test_rounds_end_at_the_deadline_after_the_minimum_rounds_before_the_models_settle():
    calls: list = []

    class Scripted(SleepyRunner):
        def window(self, batch_size, requests, seconds=None):
            calls.append(self.latency_s)
            return super().window(batch_size, requests, seconds)

    runners = {"a": Scripted(0.001), "b": Scripted(0.002)}
    outcome = interleaved_rounds(runners, 1, PLAN, deadline=time.monotonic() - 1)
    # The minimum rounds an interval needs (3 here), then the passed deadline ends them.
    assert len(calls) == 2 * 3
    assert all(len(series.windows) == 3 for series in outcome.series.values())


def test_the_result_is_handed_to_the_checkpoint_after_every_batch_size(tiny_models,
                                                                       tmp_path):
    import dataclasses

    plan = dataclasses.replace(PLAN, batch_sizes=(1, 2), total_budget_s=None)
    seen: list[dict] = []
    write = metrics_checkpoint(tmp_path / "out" / "metrics.json")

    def checkpoint(result: BenchmarkResult) -> None:
        write(result)
        seen.append(json.loads((tmp_path / "out" / "metrics.json").read_text()))

    session, _ = _session(tiny_models, plan, checkpoint=checkpoint)
    session.measure()
    assert [sorted(seen[0]["models"]["base"]["batches"]),
            sorted(seen[1]["models"]["base"]["batches"])] == [["1"], ["1", "2"]]
    assert seen[0]["budget"]["order"] == ["base", "fast", "mid", "slow"]
    assert load_metrics(tmp_path / "out" / "metrics.json").models["fast"].batches[2]


def test_a_failing_checkpoint_is_said_and_the_measuring_goes_on(tiny_models):
    import dataclasses

    lines: list[str] = []

    def broken(result):
        raise OSError("disk full")

    session, _ = _session(tiny_models, dataclasses.replace(PLAN, total_budget_s=None),
                          checkpoint=broken, lines=lines)
    result = session.measure()
    assert result.models["mid"].batches[1]
    assert any("could not save the partial result: OSError: disk full" in line
               for line in lines)


def test_a_row_whose_flops_cannot_be_counted_records_it_and_the_others_are_counted(
        tiny_models, tmp_path):
    import dataclasses
    import shutil

    copy = shutil.copytree(tiny_models["mid"], tmp_path / "mid")
    models = {**tiny_models, "mid": copy}
    session, _ = _session(models, dataclasses.replace(PLAN, total_budget_s=None))
    result = session.measure()
    shutil.rmtree(copy)  # a real failure: the model is gone when its FLOPs are counted
    lines: list[str] = []
    _count_flops(session.rows, result.models, session.config, lines.append,
                 order=["fast", "base", "mid", "slow"])
    assert "flops" in result.models["mid"].step_errors
    assert result.models["mid"].flops_per_example is None
    assert result.models["mid"].batches[1]  # what was measured stands
    for name in ("base", "fast", "slow"):
        assert result.models[name].flops_per_example > 0
        assert result.models[name].step_errors == {}
    assert lines[0].startswith("counting FLOPs of fast (1 of 4)")  # the most promising first


def test_a_search_that_fails_is_recorded_and_the_default_rows_stand(tiny_models,
                                                                    monkeypatch):
    import dataclasses

    from components.core.benchmark import search as search_module

    def crash(self):  # fault injection: a bug in the search must not cost the run
        raise RuntimeError("search exploded")

    monkeypatch.setattr(search_module.ConfigurationSearch, "run", crash)
    session, _ = _session(tiny_models, dataclasses.replace(PLAN, total_budget_s=None,
                                                           search_budget_s=30))
    result = session.measure()
    assert _search(session, result) is None
    assert result.step_errors["search"] == "RuntimeError: search exploded"
    assert session.config.search_budget_s == 30  # the session's settings restored
    assert result.models["fast"].batches[1].speedup_p50


def test_the_search_gets_at_most_what_is_left_of_the_total_budget(tiny_models, monkeypatch):
    import dataclasses

    from components.core.benchmark import search as search_module

    budgets: list[float] = []

    def record(self):
        budgets.append(self.settings.search_budget_s)
        raise RuntimeError("stop here")

    monkeypatch.setattr(search_module.ConfigurationSearch, "run", record)
    session, _ = _session(tiny_models, dataclasses.replace(PLAN, total_budget_s=50,
                                                           search_budget_s=120))
    result = session.measure()
    _search(session, result)
    assert 45 < budgets[0] <= 50


def test_a_report_that_cannot_be_written_is_recorded_in_metrics_json(tiny_models,
                                                                     tmp_path):
    import dataclasses

    session, _ = _session(tiny_models, dataclasses.replace(PLAN, total_budget_s=None))
    result = session.measure()
    metrics = tmp_path / "metrics.json"
    failure = write_results(result, metrics, tmp_path / "missing-dir" / "report.html")
    assert "cannot write the report" in failure
    assert load_metrics(metrics).step_errors["report"] == failure
    assert load_metrics(metrics).models["fast"].batches[1].speedup_p50


def test_a_figure_that_cannot_be_drawn_leaves_the_page_and_is_recorded(tiny_models,
                                                                       tmp_path,
                                                                       monkeypatch):
    import dataclasses

    from components.core.benchmark import plots

    def broken(*args, **kwargs):  # fault injection: a plotting library failing
        raise ValueError("no backend")

    monkeypatch.setattr(plots, "throughput_figure", broken)
    session, _ = _session(tiny_models, dataclasses.replace(PLAN, total_budget_s=None))
    result = session.measure()
    report = tmp_path / "report.html"
    assert write_results(result, tmp_path / "metrics.json", report) is None
    assert "figure not drawn" in report.read_text()
    assert "no backend" in load_metrics(tmp_path / "metrics.json").step_errors["plots"]


def test_metrics_of_earlier_versions_without_budget_or_step_errors_still_read(
        tiny_models, tmp_path):
    import dataclasses

    session, _ = _session(tiny_models, dataclasses.replace(PLAN, total_budget_s=None))
    data = session.measure().to_dict()
    del data["budget"], data["step_errors"]
    for model in data["models"].values():
        del model["step_errors"]
    old = BenchmarkResult.from_dict(data)
    assert old.budget is None and old.step_errors == {}
    assert old.models["base"].step_errors == {}


def test_a_budget_that_is_not_positive_is_refused():
    import dataclasses

    with pytest.raises(ServoptError, match="total_budget_s must be > 0 or null"):
        dataclasses.replace(PLAN, total_budget_s=0).validate()


def test_a_failed_step_is_one_line_naming_the_error():
    assert run_module.failure_text(RuntimeError("a\n b")) == "RuntimeError: a b"
    assert run_module.failure_text(ServoptError("x: no such file")) == "x: no such file"
