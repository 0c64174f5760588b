"""The TFX executors, called directly with hand-built artifacts, as TFX tests its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tfx import types
from tfx.types import standard_artifacts

from components.core.bf16 import bf16_unavailable_reason
from components.core.choices import TFLITE_MODES
from components.core.errors import ServoptError
from components.core.identity import QUANTIZER_OUTPUTS, TFLITE_OUTPUTS
from components.core.tflite import TFLITE_PRECISION
from components.freezer import executor as freezer_executor
from components.graph_optimizer import GraphOptimizer
from components.graph_optimizer import executor as optimizer_executor
from components.quantizer import Quantizer
from components.quantizer import executor as quantizer_executor
from pipelines.demo import DemoResult, stage_table
from pipelines.digits.example_gen import write_examples
from pipelines.mlmd_summary import ExecutionRecord


def model_artifact(uri: Path) -> standard_artifacts.Model:
    artifact = standard_artifacts.Model()
    artifact.uri = str(uri)
    return artifact


def trainer_output(model_dir: Path, root: Path) -> standard_artifacts.Model:
    """A Model artifact laid out as Trainer writes it: <uri>/Format-Serving/."""
    shutil.copytree(model_dir, root / "trainer" / "Format-Serving")
    return model_artifact(root / "trainer")


def output_artifact(root: Path, name: str) -> standard_artifacts.Model:
    (root / name).mkdir()
    return model_artifact(root / name)


def test_freezer_writes_a_frozen_model_and_records_what_it_measured(seed_cnn_model, tmp_path):
    source = trainer_output(seed_cnn_model, tmp_path)
    frozen = output_artifact(tmp_path, "frozen")
    freezer_executor.Executor().Do({"model": [source]}, {"frozen_model": [frozen]}, {})
    assert (Path(frozen.uri) / "Format-Serving" / "saved_model.pb").is_file()
    assert frozen.get_int_custom_property("variable_count") == 0
    assert frozen.get_int_custom_property("size_bytes_variables") == 0
    assert 0 < frozen.get_int_custom_property("size_bytes_total") < (
        frozen.get_int_custom_property("source_size_bytes_total"))
    assert frozen.get_int_custom_property("verification_passed") == 1
    assert frozen.get_float_custom_property("verification_max_abs_diff") <= 1e-5
    assert frozen.get_string_custom_property("source_model_uri").endswith("Format-Serving")
    assert json.loads(frozen.get_string_custom_property("op_counts"))["Const"] > 0
    steps = json.loads(frozen.get_string_custom_property("steps"))
    assert steps[0]["step"] == "freeze" and steps[0]["status"] == "applied"


def test_graph_optimizer_chains_on_the_freezer_output(seed_cnn_model, tmp_path):
    source = trainer_output(seed_cnn_model, tmp_path)
    frozen = output_artifact(tmp_path, "frozen")
    freezer_executor.Executor().Do({"model": [source]}, {"frozen_model": [frozen]}, {})
    optimized = output_artifact(tmp_path, "optimized")
    optimizer_executor.Executor().Do(
        {"model": [frozen]}, {"optimized_model": [optimized]},
        {"passes": json.dumps(["remove_identity", "fold_constants", "fuse_ops"])})
    assert optimized.get_int_custom_property("node_count") < frozen.get_int_custom_property(
        "node_count")
    assert optimized.get_string_custom_property("steps_applied") == (
        "optimize=remove_identity+fold_constants+fuse_ops")


def test_quantizer_emits_weight_bf16_and_every_tflite_mode_in_one_run(seed_cnn_model,
                                                                       tmp_path):
    """The component's defaults (QuantizerSettings: every TFLite mode), as TFX hands them to
    the executor: one output per mode, each verified through the TfLiteSession model."""
    source = trainer_output(seed_cnn_model, tmp_path)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    write_examples(Path(examples.uri))
    component = Quantizer(model=types.Channel(type=standard_artifacts.Model))
    assert set(component.outputs) == set(QUANTIZER_OUTPUTS)
    outputs = {key: output_artifact(tmp_path, key) for key in component.outputs}
    quantizer_executor.Executor().Do(
        {"model": [source], "examples": [examples]}, {k: [a] for k, a in outputs.items()},
        {**component.exec_properties, "num_examples": 128})
    quantized = outputs["quantized_model"]
    assert quantized.get_int_custom_property("verification_passed") == 1
    assert quantized.get_int_custom_property("verification_num_examples") == 128
    assert quantized.get_float_custom_property("verification_top1_agreement") >= 0.99
    assert quantized.get_string_custom_property("serving_flags") == ""

    for mode in TFLITE_MODES:
        tflite = outputs[TFLITE_OUTPUTS[mode]]
        assert tflite.get_int_custom_property("produced") == 1, mode
        assert tflite.get_string_custom_property("servopt_variant") == f"tflite-{mode}"
        serving = Path(tflite.uri) / "Format-Serving"
        assert (serving / "saved_model.pb").is_file() and (serving / "model.tflite").is_file()
        assert tflite.get_string_custom_property("serving_runtime") == "tflite"
        assert tflite.get_string_custom_property("serving_flags") == (
            "--prefer_tflite_model=true")
        assert tflite.get_string_custom_property("compute_precision") == TFLITE_PRECISION[mode]
        assert tflite.get_int_custom_property("tflite_verification_passed") == 1
        assert tflite.get_float_custom_property("tflite_verification_top1_agreement") >= 0.99
        steps = json.loads(tflite.get_string_custom_property("steps"))
        assert steps[-1]["step"] == f"tflite={mode}" and steps[-1]["status"] == "applied"
    sizes = {mode: outputs[TFLITE_OUTPUTS[mode]].get_int_custom_property("tflite_size_bytes")
             for mode in TFLITE_MODES}
    assert sizes["full_int8"] < sizes["float16"] < sizes["float32"]  # the modes differ
    assert sizes["dynamic_int8"] < sizes["float16"]

    bf16 = outputs["bfloat16_model"]
    reason = bf16_unavailable_reason()
    if reason:  # this CPU: recorded, nothing published
        assert bf16.get_int_custom_property("produced") == 0
        assert reason in bf16.get_string_custom_property("skipped_reason")
        assert not (Path(bf16.uri) / "Format-Serving").exists()
    else:
        assert bf16.get_int_custom_property("produced") == 1
        assert bf16.get_string_custom_property("compute_precision") == "bfloat16"

    # The demo's closing table, from what the executor recorded: a row per variant.
    record = ExecutionRecord(1, "Quantizer", "ran",
                             {key: [a.mlmd_artifact] for key, a in outputs.items()})
    table = stage_table(DemoResult(tmp_path, tmp_path / "metadata.sqlite", tmp_path, tmp_path,
                                   [record]))
    rows = {row[0].text: [cell.text for cell in row[1:]] for row in table.rows}
    assert list(rows) == ["Quantizer", "Quantizer-bfloat16",
                          *(f"Quantizer-tflite-{mode}" for mode in TFLITE_MODES)]
    for mode in TFLITE_MODES:
        assert rows[f"Quantizer-tflite-{mode}"][4].startswith("passed: "), mode
        assert "model.tflite" in rows[f"Quantizer-tflite-{mode}"][4]
    assert rows["Quantizer-bfloat16"][4].startswith("skipped: " if reason else "passed: ")


def test_quantizer_makes_only_the_tflite_modes_it_is_given(seed_cnn_model, tmp_path):
    """One mode as a plain string: only its output exists (TFX leaves the others out, as
    an unrequested bfloat16_model), and the executor writes only it."""
    component = Quantizer(model=types.Channel(type=standard_artifacts.Model),
                          bfloat16=False, tflite="full_int8")
    assert set(component.outputs) == {"quantized_model", "tflite_full_int8_model"}
    source = trainer_output(seed_cnn_model, tmp_path)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    write_examples(Path(examples.uri))
    outputs = {key: output_artifact(tmp_path, key) for key in component.outputs}
    quantizer_executor.Executor().Do(
        {"model": [source], "examples": [examples]}, {k: [a] for k, a in outputs.items()},
        {**component.exec_properties, "num_examples": 64})
    full_int8 = outputs["tflite_full_int8_model"]
    assert full_int8.get_int_custom_property("produced") == 1
    assert full_int8.get_string_custom_property("compute_precision") == "int8"
    assert Quantizer(model=types.Channel(type=standard_artifacts.Model), tflite=None
                     ).outputs.keys() == {"quantized_model", "bfloat16_model"}
    with pytest.raises(ServoptError, match="Quantizer's tflite parameter must be a JSON list"):
        quantizer_executor.quantizer_settings({"mode": "int8", "tflite": "full_int8"})


def _assert_nothing_produced(artifact: standard_artifacts.Model) -> None:
    assert list(Path(artifact.uri).iterdir()) == []
    assert not artifact.mlmd_artifact.custom_properties


def test_a_model_artifact_without_a_saved_model_fails_clearly(tmp_path):
    empty = model_artifact(tmp_path / "empty")
    (tmp_path / "empty" / "Format-Serving").mkdir(parents=True)
    frozen = output_artifact(tmp_path, "frozen")
    with pytest.raises(ServoptError, match="empty.*no SavedModel found"):
        freezer_executor.Executor().Do({"model": [empty]}, {"frozen_model": [frozen]}, {})
    _assert_nothing_produced(frozen)


def test_a_corrupted_saved_model_pb_fails_clearly(tmp_path):
    broken = tmp_path / "broken" / "Format-Serving"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"\x0a\xff\xff\xff garbage")
    quantized = output_artifact(tmp_path, "quantized")
    with pytest.raises(ServoptError, match=r"Format-Serving/saved_model\.pb: not a valid"):
        quantizer_executor.Executor().Do({"model": [model_artifact(broken.parent)]},
                                         {"quantized_model": [quantized]}, {"mode": "int8"})
    _assert_nothing_produced(quantized)


def test_an_unknown_pass_fails_in_the_executor_and_at_pipeline_definition(seed_cnn_model,
                                                                          tmp_path):
    source = trainer_output(seed_cnn_model, tmp_path)
    optimized = output_artifact(tmp_path, "optimized")
    with pytest.raises(ServoptError, match="unknown optimization pass 'fold_everything'"):
        optimizer_executor.Executor().Do({"model": [source]}, {"optimized_model": [optimized]},
                                         {"passes": json.dumps(["fold_everything"])})
    _assert_nothing_produced(optimized)
    with pytest.raises(ServoptError, match="unknown optimization pass"):
        GraphOptimizer(model=types.Channel(type=standard_artifacts.Model),
                       passes=["fold_everything"])
