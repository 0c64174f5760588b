"""Benchmark statistics and settings: percentiles, the stability rule, paired speedups,
model names, and settings that fail before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.core.benchmark.config import (
    BenchmarkConfig,
    default_name,
    name_models,
    parse_int_list,
)
from components.core.benchmark.stats import (
    ABOVE_ONE,
    BELOW_ONE,
    INCONCLUSIVE,
    NOT_REGRESSED,
    REGRESSED,
    STRADDLES_ONE,
    is_stable,
    judge_at_least,
    median_interval,
    paired_ratios,
    percentile,
    rounds_for,
    side_of_one,
    spread,
    summarize,
)
from components.core.errors import ServoptError


def test_percentiles_interpolate_linearly_between_ranks():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)


def test_summary_of_known_latencies():
    summary = summarize([10.0, 20.0, 30.0, 40.0])
    assert summary.p50_ms == pytest.approx(25.0)
    assert summary.mean_ms == pytest.approx(25.0)
    assert summary.std_ms == pytest.approx(11.180339887)
    assert (summary.min_ms, summary.max_ms) == (10.0, 40.0)
    assert summary.p90_ms == pytest.approx(37.0)
    assert summary.p95_ms == pytest.approx(38.5)
    assert summary.p99_ms == pytest.approx(39.7)


def test_spread_is_max_over_min_minus_one():
    assert spread([10.0, 11.0, 10.5]) == pytest.approx(0.1)
    assert spread([5.0, 5.0]) == 0.0


def test_stable_when_the_last_three_window_p50s_are_within_the_percentage():
    assert is_stable([30.0, 10.0, 10.5, 11.0], stability_percent=10)  # the 30 is older
    assert not is_stable([10.0, 10.5, 11.2], stability_percent=10)  # 12% spread
    assert is_stable([10.0, 10.5, 11.2], stability_percent=15)
    assert not is_stable([10.0, 10.0], stability_percent=10)  # fewer than 3 windows


def test_speedup_is_the_median_of_per_round_ratios():
    # Both models slow down together round by round (drift): each round's ratio is 2.
    baseline = [10.0, 20.0, 40.0, 12.0]
    candidate = [5.0, 10.0, 20.0, 6.0]
    assert median_interval(paired_ratios(baseline, candidate), 0.5).estimate == \
        pytest.approx(2.0)
    ratios = paired_ratios([10.0, 10.0, 10.0], [5.0, 10.0, 20.0])
    assert median_interval(ratios, 0.5).estimate == pytest.approx(1.0)
    assert paired_ratios([10.0], [0.0]) == []  # a round without a usable window


def test_the_median_interval_is_distribution_free_and_ignores_outliers_at_the_ends():
    ratios = [1.00, 0.99, 1.01, 1.02, 0.98, 1.00, 1.01, 0.99, 1.00, 0.40]  # one busy round
    interval = median_interval(ratios, 0.95)
    # n = 10: the 2nd smallest and 2nd largest cover the median with 97.9% (1 - 2 * 11/1024)
    assert (interval.low, interval.high) == (0.98, 1.01)  # the 0.40 falls outside
    assert interval.coverage == pytest.approx(1 - 2 * 11 / 1024)
    assert interval.estimate == pytest.approx(1.0)


def test_too_few_rounds_give_no_interval_at_that_confidence():
    assert rounds_for(0.95) == 6 and rounds_for(0.75) == 3
    interval = median_interval([1.0, 1.1, 0.9, 1.0, 1.05], 0.95)  # 5 reach 93.75% only
    assert interval.coverage == 0.0 and interval.to_list() == [None, None]
    assert judge_at_least(*interval.to_list(), 0.95) == INCONCLUSIVE


def test_three_outcomes_against_a_line():
    assert judge_at_least(0.80, 0.90, 0.95) == REGRESSED  # wholly below
    assert judge_at_least(0.95, 1.10, 0.95) == NOT_REGRESSED  # wholly at or above
    assert judge_at_least(0.90, 1.00, 0.95) == INCONCLUSIVE  # straddles it


def test_integer_lists_are_parsed_with_an_error_that_names_the_option():
    assert parse_int_list("1, 8,100", "--batch-sizes") == (1, 8, 100)
    with pytest.raises(ServoptError, match="--batch-sizes: 'x' is not an integer"):
        parse_int_list("1,x", "--batch-sizes")


@pytest.mark.parametrize(("config", "message"), [
    (BenchmarkConfig(batch_sizes=(1, 0)), "batch size 0 is not valid"),
    (BenchmarkConfig(batch_sizes=(-4,)), "batch size -4 is not valid"),
    (BenchmarkConfig(batch_sizes=()), "no batch size given"),
    (BenchmarkConfig(batch_sizes=(8, 8)), "batch size values repeat"),
    (BenchmarkConfig(concurrency=(0,)), "concurrency 0 is not valid"),
    (BenchmarkConfig(backend="onnx"), "unknown backend 'onnx'"),
    (BenchmarkConfig(max_windows=2), "max_windows must be >= 3"),
    (BenchmarkConfig(window_requests=0), "window_requests must be >= 1"),
    (BenchmarkConfig(stability_percent=0), "stability_percent must be > 0"),
    (BenchmarkConfig(label_key="label"), "needs examples"),
])
def test_settings_that_cannot_work_fail_before_anything_starts(config, message):
    with pytest.raises(ServoptError, match=message):
        config.validate()


def test_a_batch_size_of_0_fails_before_any_model_is_touched(tmp_path):
    """run_benchmark validates first: the model path does not even exist."""
    from components.core.benchmark.config import ModelSpec
    from components.core.benchmark.run import run_benchmark

    with pytest.raises(ServoptError, match="batch size 0 is not valid"):
        run_benchmark([ModelSpec("m", tmp_path / "missing")], BenchmarkConfig(batch_sizes=(0,)))


def test_models_are_named_after_their_directories_made_unique(tmp_path):
    specs = name_models([str(tmp_path / "a" / "model"), str(tmp_path / "b" / "model"),
                         str(tmp_path / "model")])
    assert [s.name for s in specs] == ["model", "model-2", "model-3"]
    assert default_name(Path("/artifacts/Trainer/model/7")) == "model-7"
    assert default_name(Path("/x/fast.tflite")) == "fast"


def test_models_can_be_named_explicitly():
    assert [s.name for s in name_models(["base=/m/a", "opt=/m/b"])] == ["base", "opt"]
    assert name_models(["base=/m/a"])[0].path == Path("/m/a")
    assert [s.name for s in name_models(["/m/a", "/m/b"], ["x", "y"])] == ["x", "y"]
    with pytest.raises(ServoptError, match="2 names for 1 models"):
        name_models(["/m/a"], ["x", "y"])


@pytest.mark.parametrize("low, high, side", [
    (1.02, 1.4, ABOVE_ONE), (0.7, 0.98, BELOW_ONE), (0.98, 1.02, STRADDLES_ONE),
    (1.0, 1.2, STRADDLES_ONE),  # touching 1 is not clear of it
    (None, 1.2, STRADDLES_ONE),  # an unknown bound knows nothing
])
def test_a_ratios_interval_lies_above_below_or_across_one(low, high, side):
    assert side_of_one(low, high) == side
