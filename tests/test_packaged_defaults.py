"""The defaults ship inside the package; configs/ is the same files; every default has
one source."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.core.benchmark.config import BenchmarkConfig
from components.core.config import OptimizationRecipe, default_config
from components.core.gate import Thresholds

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ("optimization.yaml", "benchmark.yaml", "thresholds.yaml")
# Values the shipped benchmark.yaml sets on purpose, beyond the library's defaults.
BENCHMARK_POLICY = {"label_key": "label"}


@pytest.mark.parametrize("name", PACKAGED)
def test_configs_holds_exactly_the_packaged_defaults(name):
    packaged = default_config(name)
    assert packaged.is_file() and packaged.parent == ROOT / "components" / "configs"
    assert (ROOT / "configs" / name).read_bytes() == packaged.read_bytes(), (
        f"configs/{name} and components/configs/{name} drifted apart; edit "
        f"components/configs/{name} and copy it to configs/")


def test_the_packaged_benchmark_yaml_states_the_librarys_defaults():
    stated = yaml.safe_load(default_config("benchmark.yaml").read_text())
    defaults = BenchmarkConfig().to_dict()
    assert {key: value for key, value in stated.items() if key not in BENCHMARK_POLICY} == {
        key: defaults[key] for key in stated if key not in BENCHMARK_POLICY}
    assert BenchmarkConfig.from_yaml() == BenchmarkConfig(**BENCHMARK_POLICY)


def test_readers_without_a_path_read_the_packaged_files():
    assert Thresholds.from_yaml() == Thresholds.from_yaml(ROOT / "configs" / "thresholds.yaml")
    assert OptimizationRecipe.from_yaml() == OptimizationRecipe.from_yaml(
        ROOT / "configs" / "optimization.yaml")


def test_the_inconclusive_policy_has_one_value_the_librarys():
    stated = yaml.safe_load(default_config("thresholds.yaml").read_text())
    assert stated.get("inconclusive", Thresholds().inconclusive) == Thresholds().inconclusive
    assert Thresholds.from_yaml().inconclusive == Thresholds().inconclusive


def test_settings_round_trip_through_their_parameter_form():
    config = BenchmarkConfig(batch_sizes=(1, 8), concurrency=(), label_key="label")
    assert BenchmarkConfig.from_dict(config.to_dict()) == config


def test_a_run_input_is_not_a_setting():
    from components.core.errors import ServoptError

    with pytest.raises(ServoptError, match="'benchmark.examples' is not a setting"):
        BenchmarkConfig.from_dict({"examples": "/data"}, "my.yaml")


def test_the_packaged_thresholds_yaml_states_exactly_the_librarys_defaults():
    stated = yaml.safe_load(default_config("thresholds.yaml").read_text())
    assert stated == Thresholds().to_dict()
    assert Thresholds.from_yaml() == Thresholds()


def test_the_packaged_optimization_yaml_states_exactly_the_settings_groups_defaults():
    from dataclasses import asdict

    from components.core.config import SETTINGS_GROUPS

    stated = yaml.safe_load(default_config("optimization.yaml").read_text())
    for name, cls in SETTINGS_GROUPS.items():
        assert stated[name] == asdict(cls()), name
    assert OptimizationRecipe.from_yaml() == OptimizationRecipe()


def test_the_cli_tfx_and_kfp_front_ends_take_their_defaults_from_the_settings_groups():
    """One source per setting: the library's OptimizeConfig, the TFX Quantizer and the KFP
    pipeline's parameters all read the settings dataclasses."""
    import inspect

    from components.core.config import QuantizerSettings, VerificationSettings
    from components.core.steps import OptimizeConfig
    from components.kfp.mapping import settings_from_parameter, thresholds_from_parameter
    from components.kfp.pipeline import DEFAULT_SETTINGS, DEFAULT_THRESHOLDS
    from components.quantizer import Quantizer

    assert OptimizeConfig().num_examples == VerificationSettings().num_examples
    assert OptimizeConfig().quantize_min_elements == QuantizerSettings().min_elements
    assert OptimizeConfig().quantized_tolerance.min_top1_agreement == (
        QuantizerSettings().min_top1_agreement)
    signature = inspect.signature(Quantizer.__init__).parameters
    assert {key: signature[key].default for key in vars(QuantizerSettings())} == vars(
        QuantizerSettings())
    for name, value in DEFAULT_SETTINGS.items():
        assert settings_from_parameter(name, value) == getattr(OptimizationRecipe(), name)
    assert thresholds_from_parameter(DEFAULT_THRESHOLDS) == Thresholds()


def test_quantizer_settings_are_validated_once_with_the_key_named():
    from components.core.config import QuantizerSettings
    from components.core.errors import ServoptError

    with pytest.raises(ServoptError, match="quantizer.tflite: unknown TFLite mode 'int4'"):
        QuantizerSettings(tflite="int4")
    with pytest.raises(ServoptError, match="my.yaml: quantizer.mode must be one of int8"):
        OptimizationRecipe.from_dict({"quantizer": {"mode": "bfloat16"}}, "my.yaml")
