"""Every TFLite mode in one run: `quantizer.tflite` is a list of modes (default all four),
the Quantizer makes one output per mode, named and identified by its mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from kfp import dsl

from components.core.choices import TFLITE_MODES
from components.core.config import OptimizationRecipe, QuantizerSettings
from components.core.errors import ServoptError
from components.core.identity import QUANTIZER, QUANTIZER_OUTPUTS, TFLITE_OUTPUTS, VARIANT_OUTPUTS
from components.core.producers import output_identity, quantizer_steps
from components.core.steps import Step
from components.kfp.mapping import (
    model_paths,
    produce_outputs,
    settings_from_parameter,
    settings_parameter,
)
from pipelines.digits.example_gen import write_examples


def test_by_default_every_tflite_mode_is_made():
    assert QuantizerSettings().tflite == list(TFLITE_MODES) == [
        "float32", "float16", "dynamic_int8", "full_int8"]
    assert OptimizationRecipe.from_yaml().quantizer.tflite == list(TFLITE_MODES)


@pytest.mark.parametrize(("written", "modes"), [
    ("full_int8", ["full_int8"]),  # one mode, as before
    (["full_int8", "float32"], ["full_int8", "float32"]),
    (None, []),
    ([], []),
])
def test_tflite_takes_a_list_one_mode_or_null(written, modes):
    assert QuantizerSettings(tflite=written).tflite == modes
    recipe = OptimizationRecipe.from_dict({"quantizer": {"tflite": written}}, "my.yaml")
    assert recipe.quantizer.tflite == modes


@pytest.mark.parametrize(("written", "message"), [
    (["float32", "int4"], "my.yaml: quantizer.tflite: unknown TFLite mode 'int4'; known "
                          "modes: float32, float16, dynamic_int8, full_int8"),
    ("int4", "my.yaml: quantizer.tflite: unknown TFLite mode 'int4'"),
    (["full_int8", "float16", "full_int8"],
     "my.yaml: quantizer.tflite: 'full_int8' is listed twice"),
    (8, "my.yaml: 'quantizer.tflite' must be list"),
])
def test_a_bad_tflite_setting_is_refused_in_one_line_naming_the_key(written, message):
    with pytest.raises(ServoptError) as raised:
        OptimizationRecipe.from_dict({"quantizer": {"tflite": written}}, "my.yaml")
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_the_kfp_parameter_form_keeps_the_list_and_null():
    for settings in (QuantizerSettings(), QuantizerSettings(tflite=["float16"]),
                     QuantizerSettings(tflite=None)):
        assert settings_from_parameter("quantizer", settings_parameter(settings)) == settings
    assert settings_from_parameter("quantizer", {"tflite": ""}).tflite == []  # null as ''


def test_one_quantizer_step_and_output_per_tflite_mode():
    steps = quantizer_steps(QuantizerSettings(bfloat16=False))
    assert steps == {"quantized_model": Step("quantize", "int8"),
                     "tflite_float32_model": Step("tflite", "float32"),
                     "tflite_float16_model": Step("tflite", "float16"),
                     "tflite_dynamic_int8_model": Step("tflite", "dynamic_int8"),
                     "tflite_full_int8_model": Step("tflite", "full_int8")}
    # in the outputs' order, whatever the list's
    assert list(quantizer_steps(QuantizerSettings(tflite=["full_int8", "float32"]))) == [
        "quantized_model", "bfloat16_model", "tflite_float32_model", "tflite_full_int8_model"]
    assert list(quantizer_steps(QuantizerSettings(bfloat16=False, tflite=None))) == [
        "quantized_model"]
    assert TFLITE_OUTPUTS["full_int8"] == "tflite_full_int8_model"
    assert set(QUANTIZER_OUTPUTS) == {"quantized_model", "bfloat16_model", *steps}


def test_each_mode_has_its_own_name_in_benchmarks_and_decisions():
    names = {output: output_identity(QUANTIZER, output).name for output in VARIANT_OUTPUTS}
    assert names == {"bfloat16_model": "Quantizer-bfloat16",
                     "tflite_float32_model": "Quantizer-tflite-float32",
                     "tflite_float16_model": "Quantizer-tflite-float16",
                     "tflite_dynamic_int8_model": "Quantizer-tflite-dynamic_int8",
                     "tflite_full_int8_model": "Quantizer-tflite-full_int8"}
    assert output_identity(QUANTIZER, "quantized_model").name == "Quantizer"


def test_the_kfp_quantize_step_records_the_modes_not_asked_for_and_makes_the_others(
        seed_cnn_model, tmp_path):
    """The KFP step's library path, on its real artifact class: a mode not in the list is
    recorded as not produced, as an unrequested bfloat16 is; the benchmark, the gate and
    the push then see only the produced ones, by their names."""
    examples = tmp_path / "examples"
    write_examples(examples)
    settings = QuantizerSettings(bfloat16=False, tflite=["full_int8"])
    outputs = {name: dsl.Model(uri=str(tmp_path / name)) for name in QUANTIZER_OUTPUTS}
    produce_outputs(QUANTIZER, str(seed_cnn_model), str(examples), outputs,
                    {"num_examples": 64}, quantizer_steps(settings), settings)
    full_int8 = outputs["tflite_full_int8_model"].metadata
    assert full_int8["produced"] == 1 and full_int8["servopt_variant"] == "tflite-full_int8"
    assert full_int8["tflite_verification_passed"] == 1
    assert full_int8["tflite_verification_top1_agreement"] >= 0.99
    assert (tmp_path / "tflite_full_int8_model" / "model.tflite").is_file()
    for name in ("bfloat16_model", "tflite_float32_model", "tflite_float16_model",
                 "tflite_dynamic_int8_model"):
        metadata = outputs[name].metadata
        assert metadata["produced"] == 0, name
        assert metadata["skipped_reason"] == "not asked for by the settings"
        assert not Path(outputs[name].path).exists()
    paths = model_paths(str(seed_cnn_model), list(outputs.values()))
    assert list(paths) == ["trainer", "Quantizer", "Quantizer-tflite-full_int8"]
