"""The configuration search: which TF Serving settings make each contender fastest.

The knobs are TF Serving's flags; which values are worth trying follows from its source
(the TFLite batch split of tflite_interpreter_pool.cc, the thread pools, bf16 only with
bf16 units). One real run (module fixture: the demo CNN and its TFLite variant, worker
processes with real TensorFlow) searches, and the tests read what it measured and
recorded: rows named after their settings, with the flags that set them, speedups from
the same rounds as the baseline, a table and a plot.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.benchmark_cli import benchmark_command, search_table
from components.core.benchmark import plots, search
from components.core.benchmark.config import BenchmarkConfig, ModelSpec
from components.core.benchmark.report import render_report
from components.core.benchmark.run import BenchmarkSession
from components.core.benchmark.runtimes import Row, default_config
from components.core.benchmark.schema import BenchmarkResult, load_metrics
from components.core.benchmark.search_table import search_rows
from components.core.errors import ServoptError
from components.core.serving_config import ServingConfig
from components.core.traffic import TrafficProfile
from tests.model_zoo import tflite_variant

SETTINGS = BenchmarkConfig(batch_sizes=(1, 100), concurrency=(), warmup_requests=3,
                           window_seconds=0.1, max_windows=6, search_contenders=1)


def _row(path: Path, runtime: str, name: str = "v@tflite") -> Row:
    return Row(name, ModelSpec("v", path), runtime, path, servable=True, beside_tflite=True)


# --- what is worth trying, from TF Serving's source --------------------------------------

@pytest.mark.parametrize("batch, cores, expected", [
    (100, 2, [10]),  # chunks of ceil(500/10) = 50: a batch of 100 on two interpreters
    (100, 4, [10, 15, 20]),  # halves, thirds (34), quarters (25)
    (1, 4, []),  # a single example is never split
])
def test_interpreter_counts_are_those_that_split_the_batch_among_the_cores(
        batch, cores, expected, tmp_path):
    settings = dataclasses.replace(SETTINGS, batch_sizes=(batch,), tflite_pools=cores)
    config = default_config("tflite", settings)
    values, why_not = search._interpreter_counts(config, _row(tmp_path, "tflite"), settings)
    assert values == expected
    assert bool(why_not) == (not expected)


def test_thread_counts_try_fewer_threads_than_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "available_cores", lambda: 8)
    settings = dataclasses.replace(SETTINGS, intra_op_threads=8, inter_op_threads=8)
    config = default_config("tensorflow", settings)
    values, _ = search._thread_counts("intra_op_threads")(config, _row(tmp_path, "tensorflow"),
                                                          settings)
    assert values == [1, 4]


def test_mixed_precision_is_tried_only_where_the_cpu_has_bf16_units(seed_cnn_model,
                                                                    monkeypatch):
    settings, row = SETTINGS, _row(seed_cnn_model, "tensorflow", "v")
    config = default_config("tensorflow", settings)
    monkeypatch.setattr(search, "cpu_flags", lambda: {"avx2", "fma"})
    values, why_not = search._mixed_precision(config, row, settings)
    assert values == [] and "no bf16 units" in why_not
    monkeypatch.setattr(search, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert search._mixed_precision(config, row, settings)[0] == ["bfloat16"]


def test_a_configuration_names_its_flags_and_what_it_changed():
    config = ServingConfig("tflite", tflite_pools=2).with_changes(
        tflite_interpreters_per_pool=10)
    assert config.flags() == ["--prefer_tflite_model=true", "--num_tflite_pools=2",
                              "--num_tflite_interpreters_per_pool=10"]
    assert config.label() == "interpreters_per_pool=10"
    assert ServingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    session = ServingConfig("tensorflow", 2, 2).with_changes(intra_op_threads=1,
                                                              mixed_precision="bfloat16")
    assert session.flags() == ["--tensorflow_intra_op_parallelism=1",
                               "--tensorflow_inter_op_parallelism=2",
                               "--mixed_precision=bfloat16"]
    assert session.label() == "intra_op=1,mixed_precision=bfloat16"
    assert ServingConfig("tensorflow", 2, 2).label() == "default"


def test_search_settings_are_checked_before_anything_runs():
    for bad, message in (({"search_budget_s": -1}, "search_budget_s must be >= 0"),
                         ({"search_objective": "p95_ms"}, "unknown search_objective"),
                         ({"search_batch_size": 7}, "search_batch_size 7 is not among"),
                         ({"search_contenders": 0}, "search_contenders must be >= 1")):
        with pytest.raises(ServoptError, match=message):
            dataclasses.replace(SETTINGS, **bad).validate()


# --- one real search -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(demo_cnn_model, tmp_path_factory) -> tuple[BenchmarkResult, BenchmarkResult]:
    """One session, searched twice: with no time to spend, then with enough for every
    knob that applies (TFLite batch split; thread pools on the Session rows)."""
    root = tmp_path_factory.mktemp("search")
    variant = tflite_variant(demo_cnn_model, root / "variant")
    models = [ModelSpec("base", demo_cnn_model), ModelSpec("variant", variant)]
    with BenchmarkSession(models, dataclasses.replace(SETTINGS, search_budget_s=1)
                          ) as session:
        result = session.measure()
        broke = search.ConfigurationSearch(session, result)
        no_time = dataclasses.replace(result, search=broke.run())
        session.config = dataclasses.replace(session.config, search_budget_s=600)
        full = search.ConfigurationSearch(session, result)
        result.search = full.run()
    full.inherit()
    return no_time, BenchmarkResult.from_dict(json.loads(json.dumps(result.to_dict())))


@pytest.mark.e2e
def test_a_search_with_no_time_left_measures_nothing_and_says_why(searched):
    no_time, _ = searched
    assert no_time.search.steps == [] or all(not step.rows for step in no_time.search.steps)
    assert "search budget of 1 s left out" in no_time.search.stopped


@pytest.mark.e2e
def test_the_search_measures_each_knob_as_a_row_named_after_its_settings(searched):
    _, result = searched
    record = result.search
    assert record.objective == "p99_ms" and record.batch_size == 100
    assert set(record.contenders) == {"variant@tflite", "variant@tensorflow"}
    split = result.models["variant@tflite:interpreters_per_pool=10"]
    assert split.runtime.runtime == "tflite" and split.runtime.version == "variant"
    assert "--num_tflite_interpreters_per_pool=10" in split.runtime.server_flags
    assert split.runtime.configuration["tflite_interpreters_per_pool"] == 10
    threads = result.models["variant@tensorflow:intra_op=1"]
    assert "--tensorflow_intra_op_parallelism=1" in threads.runtime.server_flags
    assert [step.knob for step in record.steps if step.rows] == [
        "tflite_interpreters_per_pool", "intra_op_threads", "inter_op_threads"]
    assert record.stopped == "every knob was tried"
    mixed = next(step for step in record.steps if step.knob == "mixed_precision")
    assert mixed.rows == [] or "bfloat16" in " ".join(mixed.rows)


@pytest.mark.e2e
def test_searched_rows_carry_speedups_from_the_same_rounds_as_the_baseline(searched):
    _, result = searched
    for name in ("variant@tflite:interpreters_per_pool=10", "variant@tensorflow:intra_op=1"):
        batch = result.models[name].at(100)
        low, high = batch.speedup_p99_interval
        assert batch.windows >= 6 and low <= batch.speedup_p99 <= high
        assert result.rows_of("variant")[name] is result.models[name]


@pytest.mark.e2e
def test_each_contender_keeps_a_setting_only_when_it_beat_its_current_best(searched):
    _, result = searched
    record = result.search
    for contender, best in record.best.items():
        outcomes = [step.outcomes[contender] for step in record.steps
                    if contender in step.outcomes]
        if best == contender:
            assert not any(o.startswith("chose") for o in outcomes)
        else:
            assert any(o.startswith(f"chose {best.split(':', 1)[1]}") for o in outcomes)
            assert result.models[best].at(1) is not None  # completed at every batch size


@pytest.mark.e2e
def test_thesearch_table_and_plot_rank_every_searched_row(searched, tmp_path):
    _, result = searched
    rows = search_rows(result)
    assert {r.row for r in rows} >= {"variant@tflite", "variant@tflite:interpreters_per_pool=10"}
    assert [r.p99_ms for r in rows] == sorted(r.p99_ms for r in rows)
    assert {r.row for r in rows if r.best} == set(result.search.best.values())
    assert plots.search_figure(result).startswith(b"\x89PNG")
    html = render_report(result)
    assert "Configuration search" in html and "interpreters_per_pool=10" in html
    assert search_table(result) is not None


@pytest.mark.e2e
def test_the_cli_searches_and_prints_the_table(demo_cnn_model, tmp_path, monkeypatch):
    """The CLI's search, on its first knob only: the module's run searches every knob."""
    monkeypatch.setattr(search, "KNOBS", tuple(k for k in search.KNOBS
                                               if k.name == "tflite_interpreters_per_pool"))
    variant = tflite_variant(demo_cnn_model, tmp_path / "variant")
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(benchmark_command, [
        f"base={demo_cnn_model}", str(variant), "--batch-sizes", "100", "--concurrency", "",
        "--warmup-requests", "2", "--window-seconds", "0.1", "--max-windows", "6",
        "--search-budget", "600", "--search-contenders", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "configuration search: p99_ms at batch 100" in result.output
    assert "interpreters_per_pool=10" in result.output
    assert load_metrics(out).search.contenders



@pytest.mark.e2e
def test_batching_is_judged_with_concurrent_clients_and_a_winner_measured_like_any_row(
        seed_cnn_model, tmp_path, monkeypatch):
    """TF Serving's --enable_batching merges requests in flight: the batching settings of
    its guide are compared with the contender's under the sweep's largest number of
    clients (TF's BatchFunction op, the same scheduler), and recorded as concurrency
    points; the one that wins is then measured one client at a time like every row."""
    import shutil

    monkeypatch.setattr(search, "KNOBS", tuple(k for k in search.KNOBS
                                               if k.name == "batching"))
    copy = shutil.copytree(seed_cnn_model, tmp_path / "copy")
    settings = dataclasses.replace(SETTINGS, batch_sizes=(1, 8), concurrency=(1, 4),
                                   search_budget_s=600)
    with BenchmarkSession([ModelSpec("base", seed_cnn_model), ModelSpec("copy", copy)],
                          settings) as session:
        result = session.measure()
        searcher = search.ConfigurationSearch(session, result)
        result.search = searcher.run()
    (step,) = result.search.steps
    assert step.knob == "batching" and len(step.rows) >= 3
    for name in step.rows:
        model = result.models[name]
        assert model.runtime.configuration["batching"]["max_batch_size"] >= 8
        assert "--enable_batching" in model.runtime.server_flags
        (point,) = model.concurrency
        assert point.concurrency == 4 and point.batch_size == 8 and point.throughput > 0
    best = result.search.best["copy"]
    if best != "copy":
        assert step.outcomes["copy"].startswith("chose batching=")
        assert all(result.models[best].at(size) for size in (1, 8))
    else:
        assert step.outcomes["copy"].startswith("kept")


# --- the keep rule, on recorded rounds ---------------------------------------------------

ONLINE = TrafficProfile.from_dict({"requests": {1: 0.9, 100: 0.1}, "objective":
                                   "weighted_p50_ms"}, "test")
# Recorded per-round p50s (ms) of a TFLite row and its batch split (10 interpreters) on a
# 2-core Xeon: at batch 1 the split costs a little, at batch 100 it halves the latency.
DEFAULT_P50 = {1: [0.30, 0.31, 0.29, 0.30, 0.32, 0.30], 100: [9.8, 10.1, 9.9, 10.3, 9.7, 10.0]}
SPLIT_P50 = {1: [0.31, 0.32, 0.30, 0.31, 0.33, 0.31], 100: [5.6, 5.5, 5.8, 5.4, 5.7, 5.6]}


def test_a_value_is_kept_when_the_profile_objective_is_better_with_confidence():
    judged = search.judge_gain(DEFAULT_P50, SPLIT_P50, ONLINE, 0.95)
    # weighted p50: 0.9 * 0.30 + 0.1 * 10.0 = 1.27 ms against 0.9 * 0.31 + 0.1 * 5.6 = 0.84
    assert judged.outcome == search.BETTER and judged.rounds == 6
    assert judged.gain.low > 1.4 and 1.45 < judged.gain.estimate < 1.56


def test_a_value_that_is_worse_on_the_profile_is_worse_even_if_better_at_one_batch_size():
    batch1_only = TrafficProfile.from_dict({"requests": {1: 1.0}}, "test")
    assert search.judge_gain(DEFAULT_P50, SPLIT_P50, batch1_only, 0.95).outcome == \
        search.WORSE  # every request of batch 1: the split's scheduler costs 3%


def test_an_interval_that_straddles_one_is_undecided_not_worse():
    noisy = {1: [0.30] * 6, 100: [10.0, 9.0, 11.0, 10.5, 9.5, 10.0]}
    same = {1: [0.30] * 6, 100: [10.2, 9.6, 10.4, 10.1, 9.9, 10.3]}
    judged = search.judge_gain(noisy, same, ONLINE, 0.95)
    assert judged.outcome == search.UNDECIDED
    assert judged.gain.low < 1 < judged.gain.high


def test_too_few_rounds_for_the_confidence_are_undecided():
    few = {size: values[:5] for size, values in DEFAULT_P50.items()}
    fewer = {size: values[:5] for size, values in SPLIT_P50.items()}
    assert search.judge_gain(few, fewer, ONLINE, 0.95).outcome == search.UNDECIDED
    assert search.judge_gain({1: [], 100: []}, SPLIT_P50, ONLINE, 0.95) is None


def test_throughput_gains_point_the_other_way():
    mix = TrafficProfile.from_dict({"requests": {1: 0.5, 100: 0.5},
                                    "objective": "throughput_per_core"}, "test")
    slow = {1: [3000.0] * 6, 100: [9000.0, 9100, 8900, 9050, 8950, 9000]}
    fast = {1: [3000.0] * 6, 100: [15000.0, 15100, 14900, 15050, 14950, 15000]}
    assert search.judge_gain(slow, fast, mix, 0.95).outcome == search.BETTER
    assert search.judge_gain(fast, slow, mix, 0.95).outcome == search.WORSE


def test_the_search_judges_on_the_traffic_profile_when_one_is_set():
    settings = dataclasses.replace(SETTINGS, traffic=ONLINE)
    assert settings.search_profile() is ONLINE
    legacy = dataclasses.replace(SETTINGS, search_objective="p50_ms")
    assert legacy.search_profile() == TrafficProfile.one_batch(100, "weighted_p50_ms")
    assert search.search_clients(dataclasses.replace(
        SETTINGS, traffic=dataclasses.replace(ONLINE, clients=4))) == 4


def test_the_most_promising_knobs_come_first():
    assert [knob.name for knob in search.KNOBS] == [
        "tflite_interpreters_per_pool", "mixed_precision", "batching", "intra_op_threads",
        "inter_op_threads"]


class _ScriptedRunner:
    """A worker whose every request takes `p50s[batch][r]` ms in its r-th window (cycled)."""

    def __init__(self, p50s: dict[int, list[float]]):
        self.p50s, self.calls = p50s, {size: 0 for size in p50s}

    def warmup(self, batch_size, requests):
        pass

    def window(self, batch_size, requests, seconds=None):
        from components.core.benchmark.measure import WindowSample

        values = self.p50s[batch_size]
        value = values[self.calls[batch_size] % len(values)]
        self.calls[batch_size] += 1
        return WindowSample([value] * 10, duration_s=value * 10 / 1e3,
                            examples=batch_size * 10)


def _scripted_search(budget_s: float):
    """A ConfigurationSearch over scripted workers (no TensorFlow): the contender's
    default row, one new setting, the baseline."""
    import time
    import types

    settings = dataclasses.replace(SETTINGS, traffic=ONLINE, search_budget_s=budget_s,
                                   window_seconds=None, window_requests=10,
                                   warmup_requests=0, rewarm_requests=0, min_requests=1)
    searcher = search.ConfigurationSearch.__new__(search.ConfigurationSearch)
    searcher.session = types.SimpleNamespace(baseline="base", say=lambda message: None)
    searcher.result = types.SimpleNamespace(models={})  # nothing measured: 1 s windows
    searcher.settings, searcher.profile = settings, ONLINE
    searcher.objective, searcher.started = "p50_ms", time.monotonic()
    searcher.best, searcher.origin = {"v": "v"}, {"v:new": "v"}
    # the same at batch 1, ~15% faster at batch 100 but for one round in 6 (a collision
    # with another process): 6 rounds straddle 1 ([0.98, 1.08]), 12 are clear of it
    incumbent = {1: [1.0] * 6, 100: [10.5, 10.3, 8.7, 10.1, 10.2, 10.4]}
    new = {1: [1.0] * 6, 100: [9.0] * 6}
    runners = {"base": _ScriptedRunner({1: [2.0], 100: [20.0]}),
               "v": _ScriptedRunner(incumbent), "v:new": _ScriptedRunner(new)}
    plans = {"v": [types.SimpleNamespace(name="v:new")]}
    series, errors = searcher._rounds(runners)
    return searcher, plans, series, runners, errors


def test_a_straddling_setting_is_measured_for_more_rounds_within_the_budget():
    searcher, plans, series, runners, errors = _scripted_search(budget_s=600)
    first = search.judge_gain(searcher._figures(series["v"]), searcher._figures(
        series["v:new"]), ONLINE, 0.95)
    assert first.outcome == search.UNDECIDED and first.rounds == 6
    judged = searcher._judge(plans, series, runners, errors)["v:new"]
    assert judged.rounds == 12 and judged.outcome == search.BETTER
    assert judged.gain.low > 1.05


def test_without_budget_a_straddling_setting_stays_undecided_and_is_not_kept():
    searcher, plans, series, runners, errors = _scripted_search(budget_s=0)
    judged = searcher._judge(plans, series, runners, errors)
    assert judged["v:new"].outcome == search.UNDECIDED and judged["v:new"].rounds == 6
    outcome = searcher._choose("v", "v", plans["v"], judged)
    assert outcome.startswith("kept v (default settings): no setting was better on "
                              "weighted_p50_ms") and searcher.best["v"] == "v"
    assert "over 6 rounds: no clear difference" in outcome
