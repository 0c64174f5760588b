"""Gate thresholds: read from YAML or a dict, every one optional, and every mistake named
with the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.core.errors import ServoptError
from components.core.gate import (
    BaselineThresholds,
    ServedThresholds,
    ServerProfile,
    Thresholds,
    ValueThresholds,
)
from components.core.traffic import TrafficProfile

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thresholds.yaml"
    path.write_text(text)
    return path


def test_the_default_thresholds_file_reads_as_documented():
    thresholds = Thresholds.from_yaml(CONFIGS / "thresholds.yaml")
    assert thresholds.primary_batch_size == 100
    assert thresholds.inconclusive == "block" == Thresholds().inconclusive  # one default
    assert thresholds.server == ServerProfile()  # TF Serving's defaults, this machine's CPU
    assert thresholds.traffic == TrafficProfile.one_batch(100, "weighted_p99_ms")
    assert thresholds.objective == ("size_bytes",)  # ties on the profile's objective
    assert thresholds.value == ValueThresholds(max_size_mb=500)
    assert thresholds.vs_baseline == BaselineThresholds(
        max_accuracy_drop=0.01, min_top1_agreement=0.99, min_speedup_p50=0.95)
    assert thresholds.vs_served == ServedThresholds(max_p99_regression_pct=20,
                                                    max_accuracy_regression=0.01)


def test_the_impossible_thresholds_file_asks_for_a_one_microsecond_p99():
    thresholds = Thresholds.from_yaml(CONFIGS / "thresholds_impossible.yaml")
    assert thresholds.value.max_p99_ms == 0.001
    assert thresholds.vs_baseline == BaselineThresholds()


def test_absent_keys_take_the_defaults_and_null_turns_a_threshold_off():
    assert Thresholds.from_dict({}) == Thresholds() == Thresholds.from_yaml()
    assert Thresholds.from_dict(None) == Thresholds()
    assert Thresholds.from_dict({"value": None}) == Thresholds()
    off = Thresholds.from_dict({"vs_served": {"max_p99_regression_pct": None}})
    assert off.vs_served == ServedThresholds(max_p99_regression_pct=None)
    assert off.vs_served.max_accuracy_regression == 0.01  # the others keep theirs


def test_a_dict_and_the_dataclass_say_the_same_thing():
    data = {"primary_batch_size": 1, "inconclusive": "allow", "objective": ["size_bytes"],
            "value": {"max_p99_ms": 5, "min_accuracy": 0.9},
            "vs_baseline": {"min_speedup_p99": 1.1},
            "vs_served": {"max_accuracy_regression": 0.02}}
    expected = Thresholds(primary_batch_size=1, inconclusive="allow",
                          objective=("size_bytes",),
                          value=ValueThresholds(max_p99_ms=5, min_accuracy=0.9),
                          vs_baseline=BaselineThresholds(min_speedup_p99=1.1),
                          vs_served=ServedThresholds(max_accuracy_regression=0.02))
    assert Thresholds.from_dict(data) == expected
    assert Thresholds.from_dict(expected.to_dict()) == expected


def test_a_single_objective_may_be_written_as_a_string():
    assert Thresholds.from_dict({"objective": "throughput"}).objective == ("throughput",)


@pytest.mark.parametrize(("text", "message"), [
    ("value:\n  max_p99: 5\n",
     r"unknown key 'value\.max_p99' \(did you mean 'max_p99_ms'\?\)"),
    ("latency:\n  max_p99_ms: 5\n", r"unknown key 'latency'"),
    ("value:\n  max_p99_ms: fast\n", r"'value\.max_p99_ms' must be a number or null, got "
                                     r"str 'fast'"),
    ("value:\n  max_p99_ms: true\n", r"'value\.max_p99_ms' must be a number"),
    ("value:\n  max_p99_ms: -1\n", r"'value\.max_p99_ms' must be > 0, got -1"),
    ("value:\n  min_accuracy: 95\n", r"'value\.min_accuracy' must be >= 0 and <= 1, got 95"),
    ("vs_baseline:\n  min_top1_agreement: 1.5\n", r"'vs_baseline\.min_top1_agreement' must"),
    ("vs_served:\n  max_p99_regression_pct: -5\n", r"max_p99_regression_pct' must be >= 0"),
    ("value: 5\n", r"'value' must be a mapping of thresholds, got int 5"),
    ("primary_batch_size: 0\n", r"'primary_batch_size' must be an integer >= 1, got 0"),
    ("primary_batch_size: '100'\n", r"'primary_batch_size' must be an integer, got str"),
    ("inconclusive: ignore\n", r"'inconclusive' must be one of block, allow"),
    ("unstable_latency: allow\n", r"'unstable_latency' was replaced by 'inconclusive' "
                                  r"\(block \| allow\).*write 'inconclusive: allow'"),
    ("objective: [p99]\n", r"unknown objective 'p99' \(did you mean 'p99_ms'\?\)"),
    ("objective: []\n", r"'objective' is empty"),
    ("objective: [p99_ms, p99_ms]\n", r"lists a metric twice"),
    ("- max_p99_ms\n", r"expected a mapping of threshold groups, got list"),
])
def test_a_bad_thresholds_file_names_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ServoptError, match=message) as error:
        Thresholds.from_yaml(path)
    assert str(error.value).startswith(f"{path}: ")


def test_a_yaml_syntax_error_names_the_file_and_the_line(tmp_path):
    path = write(tmp_path, "value:\n  max_p99_ms: [5\n  min_accuracy: 0.9\n")
    with pytest.raises(ServoptError, match=rf"{path}: not valid YAML at line \d+, column \d+"):
        Thresholds.from_yaml(path)


def test_a_missing_thresholds_file_is_named(tmp_path):
    with pytest.raises(ServoptError, match=r"nope\.yaml: no such thresholds file"):
        Thresholds.from_yaml(tmp_path / "nope.yaml")


def test_a_bad_dict_names_where_it_came_from():
    with pytest.raises(ServoptError, match=r"^pusher config: unknown key 'value\.max_size'"):
        Thresholds.from_dict({"value": {"max_size": 5}}, source="pusher config")


def test_the_dataclass_validates_too():
    with pytest.raises(ServoptError, match=r"'value\.max_size_mb' must be > 0"):
        Thresholds(value=ValueThresholds(max_size_mb=0))
