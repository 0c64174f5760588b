"""The digits pipeline end to end on real TFX runners with a real SQLite ML Metadata store.

One work directory is reused across the module, as a user reruns a pipeline: the first
`servopt demo` runs everything on the configs/ defaults; later runs change one thing and
TFX's cache re-runs only what that change affects.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.cli import main
from components.core.gate import versions
from components.core.producers import TFLITE_OUTPUTS
from components.core.tflite import TFLITE_MODES
from pipelines.local_runner import run_pipeline
from pipelines.mlmd_summary import custom_properties, latest_run_id, open_store, run_executions

pytestmark = pytest.mark.e2e  # a whole TFX pipeline, several times

COMPONENTS = ["DigitsExampleGen", "DigitsTrainer", "Freezer", "GraphOptimizer", "Quantizer",
              "ServingBenchmark", "PusherGate"]
TFLITE = [f"Quantizer-tflite-{mode}" for mode in TFLITE_MODES]  # every mode, by default
# (consumer, its input key, producer, the producer's output key)
LINEAGE = [
    ("DigitsTrainer", "examples", "DigitsExampleGen", "examples"),
    ("Freezer", "model", "DigitsTrainer", "model"),
    ("GraphOptimizer", "model", "Freezer", "frozen_model"),
    ("Quantizer", "model", "GraphOptimizer", "optimized_model"),
    ("ServingBenchmark", "baseline_model", "DigitsTrainer", "model"),
    ("PusherGate", "benchmark", "ServingBenchmark", "benchmark"),
]


def executions_of_latest_run(workdir: Path):
    store = open_store(workdir / "metadata.sqlite")
    return {r.component: r for r in run_executions(store, latest_run_id(store))
            if r.component in COMPONENTS}


def demo(workdir: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["demo", "--workdir", str(workdir), *args],
                                env={"COLUMNS": "80"})  # redirected, as into a CI log
    assert result.exit_code == 0, result.output
    return result.stdout


def gate_outcome(workdir: Path) -> tuple[dict, dict]:
    gate = executions_of_latest_run(workdir)["PusherGate"]
    pushed = custom_properties(gate.outputs["pushed_model"][0])
    decision = json.loads((Path(gate.outputs["blessing"][0].uri) / "decision.json")
                          .read_text())
    return pushed, decision


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """`servopt demo` with BeamDagRunner (the default), run once for the module."""
    path = tmp_path_factory.mktemp("demo")
    stdout = demo(path)
    (path / "first_stdout.txt").write_text(stdout)
    return path


def test_demo_lays_out_mlmd_pipeline_root_and_serving_dir_under_the_workdir(workdir):
    stdout = (workdir / "first_stdout.txt").read_text()
    assert (workdir / "metadata.sqlite").is_file()
    assert (workdir / "pipeline_root" / "Quantizer").is_dir()
    assert "metadata.sqlite" in stdout and "PusherGate" in stdout


def test_the_demos_tables_fit_80_columns_and_keep_every_number(workdir):
    from tests.test_cli_output import assert_readable

    executions = executions_of_latest_run(workdir)
    sizes = [f"{custom_properties(e.outputs[key][0])['size_bytes_total'] / 1e6:.2f} MB"
             for component, key in (("Freezer", "frozen_model"),
                                    ("GraphOptimizer", "optimized_model"))
             for e in [executions[component]]]
    stdout = (workdir / "first_stdout.txt").read_text()
    assert_readable(stdout, 80, sizes, log=True)
    assert "digits pipeline: what each stage produced" in stdout


def test_one_execution_per_component(workdir):
    executions = executions_of_latest_run(workdir)
    assert sorted(executions) == sorted(COMPONENTS)
    assert {r.state for r in executions.values()} == {"ran"}


def test_lineage_runs_from_examples_through_every_model_to_the_gate(workdir):
    executions = executions_of_latest_run(workdir)
    for consumer, input_key, producer, output_key in LINEAGE:
        consumed = [a.id for a in executions[consumer].inputs[input_key]]
        produced = [a.id for a in executions[producer].outputs[output_key]]
        assert consumed == produced, f"{consumer}.{input_key} <- {producer}.{output_key}"
    benchmark_inputs = executions["ServingBenchmark"].inputs
    candidates = {a.id for key, artifacts in benchmark_inputs.items()
                  if key.startswith("candidate_") for a in artifacts}
    # Every variant is wired in; one not produced here is passed over by the benchmark.
    assert candidates == {executions[c].outputs[k][0].id for c, k in (
        ("Freezer", "frozen_model"), ("GraphOptimizer", "optimized_model"),
        ("Quantizer", "quantized_model"), ("Quantizer", "bfloat16_model"),
        *(("Quantizer", key) for key in TFLITE_OUTPUTS.values()))}


def test_every_model_records_plausible_measurements(workdir):
    executions = executions_of_latest_run(workdir)
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


def test_the_benchmark_measures_every_model_side_by_side(workdir):
    executions = executions_of_latest_run(workdir)
    result = executions["ServingBenchmark"].outputs["benchmark"][0]
    metrics = json.loads((Path(result.uri) / "metrics.json").read_text())
    assert (Path(result.uri) / "report.html").is_file()
    default_rows = ["DigitsTrainer", "Freezer", "GraphOptimizer", "Quantizer",
                    *(f"{name}@{runtime}" for name in TFLITE
                      for runtime in ("tflite", "tensorflow"))]
    assert list(metrics["models"])[:len(default_rows)] == default_rows
    for name in TFLITE:
        assert metrics["models"][f"{name}@tflite"]["runtime"]["runtime"] == "tflite"
    # The TFLite variants share one saved_model.pb (GraphOptimizer's graph): measured once.
    first, *others = TFLITE
    assert metrics["models"][f"{first}@tensorflow"]["runtime"]["measured_as"] is None
    assert {metrics["models"][f"{name}@tensorflow"]["runtime"]["measured_as"]
            for name in others} == {f"{first}@tensorflow"}
    for name, model in metrics["models"].items():
        assert model["error"] is None, name
        assert model["accuracy"]["accuracy"] > 0.9
        sizes = ("1", "100") if name in default_rows else ("100",)  # searched at 100
        for size in sizes:
            assert model["batches"][size]["p99_ms"] >= model["batches"][size]["p50_ms"] > 0
    props = custom_properties(result)
    assert props["baseline"] == "DigitsTrainer"
    assert props["Quantizer_speedup_p50_batch100"] > 0


def test_the_demo_searches_tf_serving_settings_and_pushes_the_best_pair_with_its_command(
        workdir):
    """The benchmark searched the best rows' TF Serving settings on the gate's objective
    (lowest p99 at batch 100); the gate chose among the pairs it kept, and the demo prints
    the pairs table and the whole tensorflow_model_server command for what it pushed."""
    executions = executions_of_latest_run(workdir)
    result = executions["ServingBenchmark"].outputs["benchmark"][0]
    search = json.loads((Path(result.uri) / "metrics.json").read_text())["search"]
    assert search["objective"] == "p99_ms" and search["batch_size"] == 100
    assert search["steps"] and search["contenders"]
    tried = {step["knob"] for step in search["steps"] if step["rows"]}
    assert "tflite_interpreters_per_pool" in tried  # the TFLite rows' batch split
    pushed, decision = gate_outcome(workdir)
    kept = set(search["best"].values())
    assert decision["row"] in kept or decision["label"] == "default"
    command = decision["server_command"]
    assert "tensorflow_model_server" in command
    assert f"--model_base_path={workdir / 'serving' / 'digits'}" in command
    assert all(flag in command for flag in decision["server_flags"])
    stdout = " ".join((workdir / "first_stdout.txt").read_text().split())  # lines wrap at 80
    assert "serve it with:" in stdout and "tensorflow_model_server" in stdout
    assert "pairs judged on the traffic profile 90% batch 1, 10% batch 100" in stdout
    assert "configuration search: the traffic profile 90% batch 1, 10% batch 100" in stdout
    assert "traffic profile: 90% batch 1, 10% batch 100; 2 clients" in stdout


def test_the_demo_pushes_with_the_flags_its_chosen_runtime_needs(workdir):
    """The demo's server runs --prefer_tflite_model=true: each TFLite variant is judged on
    its TFLite row; whichever wins, the decision names the flags it needs, and a TFLite
    version carries model.tflite for them."""
    pushed, decision = gate_outcome(workdir)
    rows = {c["name"]: c["row"] for c in decision["candidates"]}
    assert {name: rows[name] for name in TFLITE} == {name: f"{name}@tflite" for name in TFLITE}
    version = workdir / "serving" / "digits" / str(pushed["pushed_version"])
    chose_tflite = decision["chosen"] in TFLITE
    assert ("--prefer_tflite_model=true" in decision["server_flags"]) == chose_tflite
    assert (version / "model.tflite").is_file() == chose_tflite


def test_with_configs_defaults_the_demo_pushes_exactly_one_version(workdir):
    pushed, decision = gate_outcome(workdir)
    assert pushed["pushed"] == 1
    assert decision["blessed"] and decision["chosen"] == pushed["pushed_model_name"]
    assert decision["first_push"]
    serving = workdir / "serving" / "digits"
    assert versions(serving) == [int(pushed["pushed_version"])]
    assert (serving / pushed["pushed_version"] / "saved_model.pb").is_file()
    warmup = serving / pushed["pushed_version"] / "assets.extra" / "tf_serving_warmup_requests"
    assert warmup.is_file()


def test_a_second_run_reuses_the_cache_and_pushes_nothing_new(workdir):
    """Only the gate runs again (it now sees the served model) and finds it already served."""
    before = versions(workdir / "serving" / "digits")
    demo(workdir)
    executions = executions_of_latest_run(workdir)
    assert sorted(executions) == sorted(COMPONENTS)
    assert {n for n, r in executions.items() if r.state == "cached"} == set(COMPONENTS) - {
        "PusherGate"}
    pushed, decision = gate_outcome(workdir)
    assert pushed["pushed"] == 0 and "already served" in pushed["decision"]
    assert decision["blessed"] and not decision["first_push"]
    assert versions(workdir / "serving" / "digits") == before


def test_impossible_thresholds_push_nothing_and_list_the_failed_thresholds(workdir,
                                                                           tmp_path):
    before = versions(workdir / "serving" / "digits")
    config = tmp_path / "impossible.yaml"
    config.write_text("thresholds:\n  value:\n    max_p99_ms: 0.001\n")
    stdout = demo(workdir, "--config", str(config))
    pushed, decision = gate_outcome(workdir)
    assert pushed["pushed"] == 0 and not decision["blessed"]
    assert versions(workdir / "serving" / "digits") == before
    too_slow = [c for c in decision["checks"]
                if c["threshold"] == "value.max_p99_ms" and not c["passed"]]
    assert {c["candidate"].split(":")[0] for c in too_slow} == {  # each version's pairs
        "DigitsTrainer", "Freezer", "GraphOptimizer", "Quantizer", *TFLITE}
    assert all(c["measured"] > 0.001 and c["limit"] == 0.001 for c in too_slow)
    assert "nothing pushed" in stdout


def test_a_candidate_slower_than_the_served_model_is_blocked_for_it(workdir, tmp_path):
    """A retrained model with 8x wider Dense layers (about 3x the FLOPs) is slower than the
    served one, found through ML Metadata, far beyond the 20% p99 regression allowed."""
    config = tmp_path / "wider.yaml"
    config.write_text("trainer:\n  dense_units: 4096\n"
                      "benchmark:\n  batch_sizes: [100]\n  concurrency: []\n")
    demo(workdir, "--config", str(config))
    pushed, decision = gate_outcome(workdir)
    assert pushed["pushed"] == 0 and not decision["first_push"]
    regressions = {c["candidate"] for c in decision["checks"]
                   if c["threshold"] == "vs_served.max_p99_regression_pct"
                   and not c["passed"] and c["measured"] > 20}
    assert {"DigitsTrainer", "Freezer", "GraphOptimizer", "Quantizer", *TFLITE} <= regressions


def test_the_pipeline_runs_with_local_dag_runner(tmp_path):
    config = tmp_path / "quick.yaml"
    config.write_text("trainer: {epochs: 1}\nverification: {num_examples: 64}\n"
                      "quantizer: {tflite: null, min_top1_agreement: 0.9}\n"
                      "benchmark: {batch_sizes: [8], concurrency: [], window_requests: 10,"
                      " max_windows: 6, warmup_requests: 2, search_budget_s: 0}\n"
                      "thresholds: {primary_batch_size: 8}\n")
    run_pipeline(tmp_path / "work", runner="local", config_path=config)
    executions = executions_of_latest_run(tmp_path / "work")
    assert sorted(executions) == sorted(COMPONENTS)
    quantized = executions["Quantizer"].outputs["quantized_model"][0]
    assert (Path(quantized.uri) / "Format-Serving" / "saved_model.pb").is_file()
