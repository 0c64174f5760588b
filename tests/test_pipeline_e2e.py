"""The digits pipeline end to end on real TFX runners with a real SQLite ML Metadata store.

The session's one `servopt demo` (fixture `demo_run`, tests/pipeline_runs.py) runs
everything on the configs/ defaults; the tests here read it. Later runs reuse its work
directory, as a user reruns a pipeline, change one thing, and TFX's cache re-runs only
what that change affects. What the Quantizer makes depends on the CPU: the bf16 variant
exists where the machine has bf16 units (`BF16`, from the Quantizer's own rule).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from components.core.bf16 import bf16_unavailable_reason
from components.core.gate import versions
from components.core.identity import TFLITE_OUTPUTS
from pipelines.local_runner import run_pipeline
from pipelines.mlmd_summary import custom_properties
from tests.pipeline_runs import BF16, COMPONENTS, TFLITE, VERSIONS, demo, executions, gate_outcome

pytestmark = pytest.mark.e2e  # a whole TFX pipeline, several times

# (consumer, its input key, producer, the producer's output key)
LINEAGE = [
    ("DigitsTrainer", "examples", "DigitsExampleGen", "examples"),
    ("Freezer", "model", "DigitsTrainer", "model"),
    ("GraphOptimizer", "model", "Freezer", "frozen_model"),
    ("Quantizer", "model", "GraphOptimizer", "optimized_model"),
    ("ServingBenchmark", "baseline_model", "DigitsTrainer", "model"),
    ("PusherGate", "benchmark", "ServingBenchmark", "benchmark"),
]


def test_demo_lays_out_mlmd_pipeline_root_and_serving_dir_under_the_workdir(demo_run):
    workdir = demo_run.workdir
    assert (workdir / "metadata.sqlite").is_file()
    assert (workdir / "pipeline_root" / "Quantizer").is_dir()
    assert "metadata.sqlite" in demo_run.stdout and "PusherGate" in demo_run.stdout


def test_the_demos_tables_fit_80_columns_and_keep_every_number(demo_run):
    from tests.test_cli_output import assert_readable

    run = demo_run.executions()
    sizes = [f"{custom_properties(run[component].outputs[key][0])['size_bytes_total'] / 1e6:.2f}"
             " MB" for component, key in (("Freezer", "frozen_model"),
                                          ("GraphOptimizer", "optimized_model"))]
    assert_readable(demo_run.stdout, 80, sizes, log=True)
    assert "digits pipeline: what each stage produced" in demo_run.stdout


def test_one_execution_per_component(demo_run):
    run = demo_run.executions()
    assert sorted(run) == sorted(COMPONENTS)
    assert {r.state for r in run.values()} == {"ran"}


def test_lineage_runs_from_examples_through_every_model_to_the_gate(demo_run):
    run = demo_run.executions()
    for consumer, input_key, producer, output_key in LINEAGE:
        consumed = [a.id for a in run[consumer].inputs[input_key]]
        produced = [a.id for a in run[producer].outputs[output_key]]
        assert consumed == produced, f"{consumer}.{input_key} <- {producer}.{output_key}"
    benchmark_inputs = run["ServingBenchmark"].inputs
    candidates = {a.id for key, artifacts in benchmark_inputs.items()
                  if key.startswith("candidate_") for a in artifacts}
    # Every variant is wired in; one not produced here is passed over by the benchmark.
    assert candidates == {run[c].outputs[k][0].id for c, k in (
        ("Freezer", "frozen_model"), ("GraphOptimizer", "optimized_model"),
        ("Quantizer", "quantized_model"), ("Quantizer", "bfloat16_model"),
        *(("Quantizer", key) for key in TFLITE_OUTPUTS.values()))}


def test_every_model_records_plausible_measurements(demo_run):
    run = demo_run.executions()
    trainer = custom_properties(run["DigitsTrainer"].outputs["model"][0])
    frozen = custom_properties(run["Freezer"].outputs["frozen_model"][0])
    optimized = custom_properties(run["GraphOptimizer"].outputs["optimized_model"][0])
    quantized = custom_properties(run["Quantizer"].outputs["quantized_model"][0])
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


def test_the_bf16_variant_is_made_exactly_where_the_cpu_has_bf16_units(demo_run):
    """Where the CPU has avx512_bf16 or amx_bf16 (and TF runs oneDNN, its default there), the
    demo makes, verifies and measures the bf16 variant; elsewhere it records why not."""
    bf16 = custom_properties(demo_run.executions()["Quantizer"].outputs["bfloat16_model"][0])
    reason = bf16_unavailable_reason()
    assert bf16["produced"] == (0 if reason else 1)
    models = demo_run.metrics()["models"]
    if reason:
        assert reason in bf16["skipped_reason"]
        assert "Quantizer-bfloat16" not in models
    else:
        assert bf16["verification_passed"] == 1
        assert bf16["verification_top1_agreement"] >= 0.99
        assert bf16["compute_precision"] == "bfloat16"
        assert models["Quantizer-bfloat16"]["error"] is None


def test_the_benchmark_measures_every_model_side_by_side(demo_run):
    result = demo_run.executions()["ServingBenchmark"].outputs["benchmark"][0]
    metrics = demo_run.metrics()
    assert (Path(result.uri) / "report.html").is_file()
    default_rows = ["DigitsTrainer", "Freezer", "GraphOptimizer", "Quantizer", *BF16,
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
        if name in default_rows:
            assert set(model["batches"]) == {"1", "100"}, name
        else:  # searched: at the profile's batch sizes; batching under concurrent clients
            assert model["batches"] or model["concurrency"], name
        for batch in model["batches"].values():
            assert batch["p99_ms"] >= batch["p50_ms"] > 0
    props = custom_properties(result)
    assert props["baseline"] == "DigitsTrainer"
    assert props["Quantizer_speedup_p50_batch100"] > 0


def test_the_demo_searches_tf_serving_settings_and_pushes_the_best_pair_with_its_command(
        demo_run):
    """The benchmark searched the best rows' TF Serving settings on the demo's traffic
    profile (request-weighted p50 over batch 1 and 100); the gate chose among the pairs it
    kept, and the demo prints the pairs table and the whole tensorflow_model_server command
    for what it pushed."""
    search = demo_run.metrics()["search"]
    traffic = search["traffic"]
    assert traffic["objective"] == "weighted_p50_ms" and traffic["clients"] == 2
    assert [(r["batch_size"], r["share"]) for r in traffic["requests"]] == [(1, 0.9),
                                                                          (100, 0.1)]
    assert search["tried"] and set(search["tried"]) <= {
        "tflite_interpreters_per_pool", "mixed_precision", "batching", "intra_op_threads",
        "inter_op_threads"}
    assert search["steps"] and search["contenders"]
    tried = {step["knob"] for step in search["steps"] if step["rows"]}
    assert "tflite_interpreters_per_pool" in tried  # the TFLite rows' batch split
    pushed, decision = demo_run.gate_outcome()
    kept = set(search["best"].values())
    assert decision["row"] in kept or decision["label"] == "default"
    command = decision["server_command"]
    assert "tensorflow_model_server" in command
    assert f"--model_base_path={demo_run.workdir / 'serving' / 'digits'}" in command
    assert all(flag in command for flag in decision["server_flags"])
    stdout = " ".join(demo_run.stdout.split())  # lines wrap at 80
    assert "serve it with:" in stdout and "tensorflow_model_server" in stdout
    assert "pairs judged on the traffic profile 90% batch 1, 10% batch 100" in stdout
    assert "configuration search: the traffic profile 90% batch 1, 10% batch 100" in stdout
    assert "traffic profile: 90% batch 1, 10% batch 100; 2 clients" in stdout


def test_the_demo_pushes_with_the_flags_its_chosen_runtime_needs(demo_run):
    """The demo's server runs --prefer_tflite_model=true: each TFLite variant is judged on
    its TFLite row; whichever wins, the decision names the flags it needs, and a TFLite
    version carries model.tflite for them."""
    pushed, decision = demo_run.gate_outcome()
    rows = {c["name"]: c["row"] for c in decision["candidates"]}
    assert {name: rows[name] for name in TFLITE} == {name: f"{name}@tflite" for name in TFLITE}
    assert {c["version"] for c in decision["candidates"]} == {"DigitsTrainer", *VERSIONS}
    version = demo_run.workdir / "serving" / "digits" / str(pushed["pushed_version"])
    chose_tflite = decision["chosen"] in TFLITE
    assert ("--prefer_tflite_model=true" in decision["server_flags"]) == chose_tflite
    assert (version / "model.tflite").is_file() == chose_tflite


def test_with_configs_defaults_the_demo_pushes_exactly_one_version(demo_run):
    pushed, decision = demo_run.gate_outcome()
    assert pushed["pushed"] == 1
    assert decision["blessed"] and decision["chosen"] == pushed["pushed_model_name"]
    assert decision["first_push"]
    serving = demo_run.workdir / "serving" / "digits"
    assert versions(serving) == [int(pushed["pushed_version"])]
    assert (serving / pushed["pushed_version"] / "saved_model.pb").is_file()
    warmup = serving / pushed["pushed_version"] / "assets.extra" / "tf_serving_warmup_requests"
    assert warmup.is_file()


# ------------------------------------------------------------------ reruns of the same workdir
# Each appends a run to the demo's work directory and reads that run (the latest); none of
# them may push, so the serving directory keeps the first run's one version. The reruns
# keep the demo's traffic profile (another one could rightly choose another pair) but
# measure without the search and the concurrency sweep (both checked on the first run),
# in windows of a tenth of a second or 30 requests; the impossible thresholds' rerun then
# reuses the second run's benchmark from the cache.
RERUN = {"benchmark": {"concurrency": [], "search_budget_s": 0, "window_seconds": 0.1,
                       "window_requests": 30, "min_requests": 30}}


def test_a_second_run_reuses_the_cache_and_pushes_nothing_new(demo_run):
    """Every model is reused from the cache; the benchmark runs again because the served
    model is new input (it is measured in the same rounds as the candidates), and the gate
    finds the chosen model already served, or no pair faster than it with confidence (the
    served version stays). Only the caching and the push are judged here (RERUN)."""
    workdir = demo_run.workdir
    first_pushed, _ = demo_run.gate_outcome()
    assert versions(workdir / "serving" / "digits") == [int(first_pushed["pushed_version"])]
    demo(workdir, RERUN)
    run = executions(workdir)
    assert sorted(run) == sorted(COMPONENTS)
    assert {n for n, r in run.items() if r.state == "cached"} == set(COMPONENTS) - {
        "ServingBenchmark", "PusherGate"}
    pushed, decision = gate_outcome(workdir)
    assert pushed["pushed"] == 0 and not decision["first_push"]
    # The same pair chosen again, or none faster than the served one with confidence, or
    # (the searched configuration the first run pushed is not remeasured) every candidate
    # slower than the served version: it stays, whichever way the rerun's rows fall.
    assert ("already served" in pushed["decision"]
            or "the served version stays" in pushed["decision"]), pushed["decision"]
    assert versions(workdir / "serving" / "digits") == [int(first_pushed["pushed_version"])]


def test_impossible_thresholds_push_nothing_and_list_the_failed_thresholds(demo_run):
    workdir = demo_run.workdir
    before = versions(workdir / "serving" / "digits")
    stdout = demo(workdir, {**RERUN, "thresholds": {"value": {"max_p99_ms": 0.001}}})
    pushed, decision = gate_outcome(workdir)
    assert pushed["pushed"] == 0 and not decision["blessed"]
    assert versions(workdir / "serving" / "digits") == before
    too_slow = [c for c in decision["checks"]
                if c["threshold"] == "value.max_p99_ms" and not c["passed"]]
    assert {c["candidate"].split(":")[0] for c in too_slow} == {  # each version's pairs
        "DigitsTrainer", *VERSIONS}
    assert all(c["measured"] > 0.001 and c["limit"] == 0.001 for c in too_slow)
    assert "nothing pushed" in stdout


@pytest.mark.slow  # a third whole pipeline (3 min on 2 cores): see docs/testing.md
def test_a_candidate_slower_than_the_served_model_is_blocked_for_it(demo_run):
    """A retrained model with 8x wider Dense layers (about 3x the FLOPs) is slower than the
    served one, found through ML Metadata, far beyond the 20% p99 regression allowed. The
    configuration search and the Quantizer's extra variants are off (the first run made,
    measured and searched them all): the served-model checks judge every version's rows
    the same way."""
    workdir = demo_run.workdir
    demo(workdir, {"trainer": {"dense_units": 4096, "epochs": 1},
                   "quantizer": {"tflite": None, "bfloat16": False,
                                 "min_top1_agreement": 0.9},
                   "benchmark": {"batch_sizes": [100], "concurrency": [],
                                 "search_budget_s": 0},
                   "thresholds": {"primary_batch_size": 100}})  # judged at 100 only
    pushed, decision = gate_outcome(workdir)
    assert pushed["pushed"] == 0 and not decision["first_push"]
    regressions = {c["candidate"] for c in decision["checks"]
                   if c["threshold"] == "vs_served.max_p99_regression_pct"
                   and not c["passed"] and c["measured"] > 20}
    assert {"DigitsTrainer", "Freezer", "GraphOptimizer", "Quantizer"} <= regressions


def test_the_pipeline_runs_with_local_dag_runner(tmp_path):
    """LocalDagRunner, on a small configuration: one epoch, batch 8, no search and no
    variants but the int8 weights (the first run made and measured them all)."""
    config = tmp_path / "quick.yaml"
    config.write_text("trainer: {epochs: 1}\nverification: {num_examples: 64}\n"
                      "quantizer: {tflite: null, bfloat16: false, min_top1_agreement: 0.9}\n"
                      "benchmark: {batch_sizes: [8], concurrency: [], window_seconds: null,"
                      " window_requests: 10, max_windows: 6, min_requests: 1,"
                      " decision_budget_s: 0, warmup_requests: 2, search_budget_s: 0}\n"
                      "thresholds: {primary_batch_size: 8}\n")
    run_pipeline(tmp_path / "work", runner="local", config_path=config)
    run = executions(tmp_path / "work")
    assert sorted(run) == sorted(COMPONENTS)
    quantized = run["Quantizer"].outputs["quantized_model"][0]
    assert (Path(quantized.uri) / "Format-Serving" / "saved_model.pb").is_file()
