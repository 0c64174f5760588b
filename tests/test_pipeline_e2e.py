"""The digits pipeline end to end on real TFX runners with a real SQLite ML Metadata store."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from components.cli import main
from pipelines.local_runner import run_pipeline
from pipelines.mlmd_summary import custom_properties, latest_run_id, open_store, run_executions

COMPONENTS = ["DigitsExampleGen", "DigitsTrainer", "Freezer", "GraphOptimizer", "Quantizer"]
# (consumer, its input key, producer, the producer's output key)
LINEAGE = [
    ("DigitsTrainer", "examples", "DigitsExampleGen", "examples"),
    ("Freezer", "model", "DigitsTrainer", "model"),
    ("GraphOptimizer", "model", "Freezer", "frozen_model"),
    ("Quantizer", "model", "GraphOptimizer", "optimized_model"),
]


def executions_of_latest_run(workdir: Path):
    store = open_store(workdir / "metadata.sqlite")
    return {r.component: r for r in run_executions(store, latest_run_id(store))}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`servopt demo` with BeamDagRunner (the default), run once for the module."""
    workdir = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(main, ["demo", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    return workdir, result.stdout


def test_demo_lays_out_mlmd_and_pipeline_root_under_the_workdir(demo):
    workdir, stdout = demo
    assert (workdir / "metadata.sqlite").is_file()
    assert (workdir / "pipeline_root" / "Quantizer").is_dir()
    assert "metadata.sqlite" in stdout and "Quantizer" in stdout


def test_one_execution_per_component(demo):
    executions = executions_of_latest_run(demo[0])
    assert sorted(executions) == sorted(COMPONENTS)
    assert {r.state for r in executions.values()} == {"ran"}


def test_lineage_runs_examples_trainer_freezer_optimizer_quantizer(demo):
    executions = executions_of_latest_run(demo[0])
    for consumer, input_key, producer, output_key in LINEAGE:
        consumed = [a.id for a in executions[consumer].inputs[input_key]]
        produced = [a.id for a in executions[producer].outputs[output_key]]
        assert consumed == produced, f"{consumer}.{input_key} <- {producer}.{output_key}"


def test_every_model_records_plausible_measurements(demo):
    executions = executions_of_latest_run(demo[0])
    trainer = custom_properties(executions["DigitsTrainer"].outputs["model"][0])
    frozen = custom_properties(executions["Freezer"].outputs["frozen_model"][0])
    optimized = custom_properties(executions["GraphOptimizer"].outputs["optimized_model"][0])
    quantized = custom_properties(executions["Quantizer"].outputs["quantized_model"][0])
    assert trainer["eval_accuracy"] > 0.9
    assert frozen["variable_count"] == 0
    assert optimized["node_count"] < frozen["node_count"]
    assert quantized["size_bytes_total"] <= 0.3 * frozen["size_bytes_total"]
    for props in (frozen, optimized, quantized):
        assert props["verification_passed"] == 1
        assert props["source_model_uri"] and props["op_counts"].startswith("{")
    for props in (frozen, optimized):
        assert props["verification_max_abs_diff"] <= 1e-5
    assert quantized["verification_top1_agreement"] >= 0.99


def test_a_second_run_reuses_the_cache_and_succeeds(demo):
    workdir, _ = demo
    result = CliRunner().invoke(main, ["demo", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    executions = executions_of_latest_run(workdir)
    assert sorted(executions) == sorted(COMPONENTS)
    assert {r.state for r in executions.values()} == {"cached"}


def test_the_pipeline_runs_with_local_dag_runner(tmp_path):
    config = tmp_path / "quick.yaml"
    config.write_text("trainer: {epochs: 1}\nverification: {num_examples: 64}\n"
                      "quantizer: {tflite: null, min_top1_agreement: 0.9}\n")
    run_pipeline(tmp_path / "work", runner="local", config_path=config)
    executions = executions_of_latest_run(tmp_path / "work")
    assert sorted(executions) == sorted(COMPONENTS)
    quantized = executions["Quantizer"].outputs["quantized_model"][0]
    assert (Path(quantized.uri) / "Format-Serving" / "saved_model.pb").is_file()
