"""The gate over (version, TF Serving configuration) pairs: every configuration the
benchmark's search measured on the server's runtime is a candidate, the objective picks the
best pair that passes every check, the decision prints the whole tensorflow_model_server
command and the pairs table, and the pushed version carries the configuration (its
batching_params.pbtxt and its serving requirements). Real SavedModels and model.tflite;
the metrics are hand-written as the benchmark's search writes them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from components.core.batching import (
    BATCHING_PARAMS_FILE,
    SERVER_BATCHING_FILE,
    SERVER_BATCHING_FILE_PLACEHOLDER,
    BatchingParameters,
)
from components.core.config import deep_merge
from components.core.errors import ServoptError
from components.core.gate import (
    GateDecision,
    Thresholds,
    evaluate_gate,
    log_lines,
    pairs_table,
    push_model,
)
from components.core.requirements import (
    ServingRequirements,
    read_requirements,
    requirements_path,
    write_requirements,
)
from components.core.serving_config import ServingConfig
from components.kfp.pipeline import compile_pipeline
from components.kfp.resources import TaskResources
from tests.model_zoo import tflite_variant
from tests.test_gate_decision import NO_LIMITS

VARIANT = "Quantizer-tflite-full_int8"
BATCHING = BatchingParameters(max_batch_size=32, batch_timeout_micros=1000,
                              num_batch_threads=2, max_enqueued_batches=100,
                              allowed_batch_sizes=(8, 32))
TFLITE = ServingConfig(runtime="tflite", tflite_pools=2)
SESSION = ServingConfig(intra_op_threads=2, inter_op_threads=2)
SPLIT = TFLITE.with_changes(tflite_interpreters_per_pool=10)
BATCHED = SESSION.with_changes(batching=BATCHING)
BATCHED_LABEL = BATCHED.label()  # e.g. "batching<=32,1000us,..."


TRAINER_P50, TRAINER_P99 = 20.0, 24.0  # the baseline's figures at batch 100


def batch(p50: float, p99: float, paired_with_trainer: bool) -> dict:
    """A row at batch 100; measured with the trainer (every row but the trainer's own),
    its paired speedups are the trainer's figures over its own, +-3%."""
    paired = {}
    if paired_with_trainer:
        for key, value in (("p50", TRAINER_P50 / p50), ("p99", TRAINER_P99 / p99)):
            paired |= {f"speedup_{key}": value,
                       f"speedup_{key}_interval": [value * 0.97, value * 1.03]}
        paired["throughput_ratio"] = TRAINER_P50 / p50
    return {"p50_ms": p50, "p90_ms": p50, "p95_ms": p50, "p99_ms": p99, "mean_ms": p50,
            "std_ms": 0.1, "min_ms": p50, "max_ms": p99, "throughput": 100_000 / p50,
            "stable": True, "windows": 8, "requests": 30, "confidence": 0.95, **paired}


def flags(config: ServingConfig) -> list[str]:
    """The row's flags as the benchmark records them: with batching, as
    batching.batching_flags writes them where num_batch_threads is set (the server-wide
    file beside the versions, its path known at the push)."""
    if config.batching is None:
        return config.flags()
    return [*[f for f in config.flags() if not f.startswith("--batching_parameters_file")],
            f"--batching_parameters_file={SERVER_BATCHING_FILE_PLACEHOLDER}"]


def row(version: str, config: ServingConfig, p50: float, p99: float,
        role: str = "candidate") -> dict:
    """One row as the benchmark writes it: the configuration, its label and its flags."""
    return {"path": f"/models/{version}", "role": role, "error": None,
            "runtime": {"runtime": config.runtime, "version": version,
                        "settings": config.settings(), "server_flags": flags(config),
                        "servable": True, "configuration": config.to_dict(),
                        "label": config.label()},
            "size_bytes": 1_000_000, "batches": {"100": batch(p50, p99, role != "baseline")},
            "concurrency": [], "accuracy": {"accuracy": 0.95, "top1_agreement": 1.0,
                                            "max_abs_diff": 0.0, "num_examples": 64}}


def name(version: str, config: ServingConfig) -> str:
    label = config.label()
    return f"{version}@{config.runtime}" + ("" if label == "default" else f":{label}")


def metrics(cpu_features: list[str] | None = None) -> dict:
    """The Trainer's model; `optimized` under its default Session and with server-side
    batching; the full-int8 TFLite variant's model.tflite under its default pools and
    with its batches split over 10 interpreters, and its saved_model.pb."""
    machine = {"cpu_model": "AMD EPYC 9B14", "cores": 2, "tensorflow_version": "2.21.0",
               "python_version": "3.11", "platform": "linux"}
    if cpu_features is not None:
        machine["cpu_features"] = cpu_features
    models = {
        "trainer": row("trainer", SESSION, TRAINER_P50, TRAINER_P99, role="baseline"),
        name("optimized", SESSION): row("optimized", SESSION, 15.0, 18.0),
        name("optimized", BATCHED): row("optimized", BATCHED, 9.0, 30.0),
        name(VARIANT, TFLITE): row(VARIANT, TFLITE, 8.6, 9.5),
        name(VARIANT, SPLIT): row(VARIANT, SPLIT, 5.1, 6.0),
        name(VARIANT, SESSION): row(VARIANT, SESSION, 19.5, 22.0),
    }
    models["trainer"]["runtime"]["version"] = "trainer"
    return {"schema_version": 1, "baseline": "trainer", "settings": {},
            "machine": machine, "models": models}


@pytest.fixture(scope="module")
def model_dirs(two_signature_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    return {"optimized": two_signature_model,
            VARIANT: tflite_variant(two_signature_model, root / "variant")}


def gate(model_dirs, thresholds: dict | None = None, data: dict | None = None,
         names=("optimized", VARIANT)) -> GateDecision:
    merged = deep_merge(deep_merge(NO_LIMITS, {"objective": ["p99_ms"],
                                               "server": {"prefer_tflite_model": True}}),
                        thresholds or {})
    return evaluate_gate(data or metrics(), Thresholds.from_dict(merged),
                         {n: model_dirs[n] for n in names})


def test_settings_the_search_tried_and_did_not_keep_are_no_pairs(model_dirs):
    """They did not beat the settings before them with the benchmark's confidence, and
    their figures come from other rounds: ranking them by absolute latency ranks noise."""
    data = metrics()
    kept_split = {"objective": "p99_ms", "batch_size": 100, "budget_s": 120, "elapsed_s": 80,
                  "contenders": [name(VARIANT, TFLITE), name("optimized", SESSION)],
                  "best": {name(VARIANT, TFLITE): name(VARIANT, SPLIT),
                           name("optimized", SESSION): name("optimized", SESSION)}}
    decision = gate(model_dirs, data={**data, "search": kept_split})
    assert {c.label for c in decision.candidates} == {"interpreters_per_pool=10", "default"}
    assert decision.chosen_pair == f"{VARIANT}:interpreters_per_pool=10"
    kept_default = {**kept_split, "best": {name(VARIANT, TFLITE): name(VARIANT, TFLITE)}}
    decision = gate(model_dirs, data={**data, "search": kept_default})
    assert {c.label for c in decision.candidates} == {"default"}
    assert decision.chosen_pair == VARIANT and decision.label == "default"


def test_every_configuration_on_the_servers_runtime_is_a_pair_and_the_best_one_is_chosen(
        model_dirs):
    decision = gate(model_dirs)
    assert [(c.name, c.row, c.label) for c in decision.candidates] == [
        (f"{VARIANT}:interpreters_per_pool=10", f"{VARIANT}@tflite:interpreters_per_pool=10",
         "interpreters_per_pool=10"),
        (VARIANT, f"{VARIANT}@tflite", "default"),
        ("optimized", "optimized@tensorflow", "default"),
        (f"optimized:{BATCHED_LABEL}", f"optimized@tensorflow:{BATCHED_LABEL}",
         BATCHED_LABEL)]  # the variant's saved_model.pb row: not what the server runs
    assert decision.blessed and decision.chosen == VARIANT  # the version is what is pushed
    assert decision.chosen_pair == f"{VARIANT}:interpreters_per_pool=10"
    assert decision.row == f"{VARIANT}@tflite:interpreters_per_pool=10"
    assert decision.label == "interpreters_per_pool=10"
    assert ServingConfig.from_dict(decision.configuration) == SPLIT
    assert decision.server_flags == ["--prefer_tflite_model=true", "--num_tflite_pools=2",
                                     "--num_tflite_interpreters_per_pool=10"]
    assert decision.chosen_candidate().version == VARIANT
    assert decision.reason == (
        f"'{VARIANT}:interpreters_per_pool=10' has the lowest weighted_p99_ms at batch 100 of "
        f"the 4 candidates that passed every check: 6 vs 9.5 for '{VARIANT}'")
    # every check is made per pair, the version's own (safety, signatures) included
    for pair in decision.candidates:
        assert {"benchmark", "server", "safety", "signatures", "measurement"} <= {
            c.threshold for c in decision.checks if c.candidate == pair.name}


def test_a_pair_blocked_by_a_threshold_loses_to_a_worse_pair_that_passes(model_dirs):
    """Batching halves the p50 of `optimized` but its timeout costs p99: with a p99 bound,
    the default configuration (slower p50) is pushed instead."""
    decision = gate(model_dirs, {"objective": ["p50_ms"], "value": {"max_p99_ms": 20}},
                    names=("optimized",))
    assert decision.chosen_pair == "optimized" and decision.label == "default"
    blocked = decision.candidate(f"optimized:{BATCHED_LABEL}")
    assert not blocked.passed and blocked.objective == {"weighted_p50_ms": 9.0, "p50_ms": 9.0}
    assert blocked.blocked_by == ["value.max_p99_ms: p99 latency at batch 100: 30 ms > max "
                                  "20 ms"]
    assert decision.server_flags == ["--tensorflow_intra_op_parallelism=2",
                                     "--tensorflow_inter_op_parallelism=2"]
    without = gate(model_dirs, {"objective": ["p50_ms"]}, names=("optimized",))
    assert without.label == BATCHED_LABEL
    assert {"--enable_batching", "--enable_per_model_batching_parameters"} <= set(
        without.server_flags)


def test_a_tie_goes_to_the_default_configuration_then_to_the_name(model_dirs):
    data = metrics()
    searched = data["models"][name(VARIANT, SPLIT)]
    searched["batches"] = json.loads(json.dumps(data["models"][name(VARIANT, TFLITE)]["batches"]))
    decision = gate(model_dirs, data=data, names=(VARIANT,))
    assert [c.name for c in decision.candidates] == [VARIANT,
                                                     f"{VARIANT}:interpreters_per_pool=10"]
    assert decision.chosen_pair == VARIANT and decision.label == "default"
    assert decision.reason.endswith("; chosen by the default configuration first")


def test_the_decision_prints_the_whole_server_command_for_the_destination(model_dirs,
                                                                          tmp_path):
    decision = gate(model_dirs).with_destination(str(tmp_path / "serving" / "digits"))
    command = [
        "tensorflow_model_server", "--port=8500", "--rest_api_port=8501",
        "--model_name=digits", f"--model_base_path={tmp_path}/serving/digits",
        "--prefer_tflite_model=true", "--num_tflite_pools=2",
        "--num_tflite_interpreters_per_pool=10"]
    assert decision.server_command == command
    assert decision.summary_lines()[-1] == (
        f"  serve '{VARIANT}' (configuration interpreters_per_pool=10) with: "
        + " ".join(command))
    named = gate(model_dirs).with_destination("gs://bucket/serving", "mnist")
    assert named.server_command[3:5] == ["--model_name=mnist",
                                         "--model_base_path=gs://bucket/serving/mnist"]
    assert GateDecision.from_dict(json.loads(json.dumps(decision.to_dict()))) == decision


def test_the_environment_a_version_needs_prefixes_the_command(two_signature_model, tmp_path):
    onednn = tmp_path / "bf16"
    shutil.copytree(two_signature_model, onednn)
    write_requirements(onednn, ServingRequirements(precision="bfloat16",
                                                   environment={"TF_ENABLE_ONEDNN_OPTS": "1"}))
    decision = gate({"optimized": onednn}, names=("optimized",))
    decision = decision.with_destination("/srv/models/digits")
    assert decision.server_command[:2] == ["TF_ENABLE_ONEDNN_OPTS=1",
                                           "tensorflow_model_server"]
    assert decision.serving_command().startswith(
        "TF_ENABLE_ONEDNN_OPTS=1 tensorflow_model_server --port=8500")


def test_without_a_destination_the_command_names_the_model_base_path_as_a_variable(
        model_dirs):
    decision = gate(model_dirs, {"objective": ["p50_ms"]}, names=("optimized",))
    assert decision.server_command == []  # known at the push
    assert decision.serving_command() == (
        "tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=${MODEL_NAME} "
        "--model_base_path=${MODEL_BASE_PATH} --tensorflow_intra_op_parallelism=2 "
        "--tensorflow_inter_op_parallelism=2 --enable_batching "
        "--enable_per_model_batching_parameters "
        f"--batching_parameters_file=${{MODEL_BASE_PATH}}/{SERVER_BATCHING_FILE}")


def test_the_pairs_table_lists_every_pair_best_first_the_chosen_marked(model_dirs):
    decision = gate(model_dirs, {"value": {"max_p99_ms": 20}})
    text = pairs_table(decision).plain(200)
    lines = text.splitlines()
    assert lines[0] == (f"PusherGate: push '{VARIANT}', configuration interpreters_per_pool=10; "
                        "the (version, TF Serving configuration) pairs judged at batch 100")
    assert lines[1].split() == ["version", "runtime", "configuration", "p50", "ms", "p99",
                                "ms", "examples/s", "speedup", "p50", "verdict"]
    body = [line.split() for line in lines[3:7]]
    assert " ".join(" ".join(lines[7:]).split()) == decision.reason  # the why, under the table
    assert [cells[:3] for cells in body] == [
        [VARIANT, "tflite", "interpreters_per_pool=10"], [VARIANT, "tflite", "default"],
        ["optimized", "tensorflow", "default"],
        ["optimized", "tensorflow", BATCHED_LABEL]]
    assert body[0][3:9] == ["5.1", "6", "19608", "3.922x", "[3.80,", "4.04]"]
    assert body[0][9:] == ["chosen"] and body[1][9:] == ["pass"]
    assert " ".join(body[3][9:]) == ("blocked: value.max_p99_ms: p99 latency at batch 100: "
                                     "30 ms > max 20 ms")
    summary = log_lines(decision)
    assert any(line.strip().startswith(lines[0][:40]) for line in summary)
    narrow = pairs_table(decision).plain(40)  # one block per pair: nothing cut
    assert "interpreters_per_pool=10" in narrow and "19608" in narrow


def test_the_pushed_version_carries_the_batching_parameters_and_the_configuration(
        model_dirs, tmp_path):
    decision = gate(model_dirs, {"objective": ["p50_ms"]}, names=("optimized",))
    decision = decision.with_destination(str(tmp_path / "serving"))
    assert decision.label == BATCHED_LABEL
    before = sorted(p.name for p in Path(decision.chosen_path).rglob("*"))
    pushed = Path(push_model(decision.chosen_path, tmp_path / "serving",
                             configuration=decision.configuration,
                             server_command=decision.server_command).path)
    written = (pushed / BATCHING_PARAMS_FILE).read_text()
    assert written == BATCHING.to_pbtxt()
    assert "max_batch_size { value: 32 }" in written
    assert "batch_timeout_micros { value: 1000 }" in written
    # The batch thread pool is the server's: its file beside the versions, named in the
    # command with the destination's absolute path.
    server_file = tmp_path / "serving" / SERVER_BATCHING_FILE
    assert "num_batch_threads { value: 2 }" in server_file.read_text()
    assert f"--batching_parameters_file={server_file}" in decision.server_command
    assert decision.server_command[-3:-1] == ["--enable_batching",
                                              "--enable_per_model_batching_parameters"]
    recorded = read_requirements(pushed)
    assert recorded.configuration == decision.configuration
    assert list(recorded.server_command) == decision.server_command
    assert "--enable_per_model_batching_parameters" in recorded.server_command
    assert sorted(p.name for p in Path(decision.chosen_path).rglob("*")) == before  # source
    assert not requirements_path(Path(decision.chosen_path)).exists()


def test_without_batching_no_batching_parameters_are_written(model_dirs, tmp_path):
    decision = gate(model_dirs).with_destination(str(tmp_path / "serving"))
    pushed = Path(push_model(decision.chosen_path, tmp_path / "serving",
                             configuration=decision.configuration,
                             server_command=decision.server_command).path)
    assert not (pushed / BATCHING_PARAMS_FILE).exists()
    assert not (tmp_path / "serving" / SERVER_BATCHING_FILE).exists()
    recorded = json.loads(requirements_path(pushed).read_text())
    assert recorded["configuration"]["tflite_interpreters_per_pool"] == 10
    assert recorded["runtime"] == "tflite"  # the variant's own requirements are kept
    assert recorded["server_command"][0] == "tensorflow_model_server"
    plain = Path(push_model(decision.chosen_path, tmp_path / "plain").path)
    assert read_requirements(plain) == read_requirements(Path(decision.chosen_path))


def test_the_decision_says_when_the_serving_nodes_cpu_differs_in_what_ranks_pairs(
        model_dirs):
    data = metrics(["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
    decision = gate(model_dirs, {"server": {"cpu_features": ["avx2", "fma", "avx_vnni"]}},
                    data=data)
    [note] = [c for c in decision.checks if c.threshold == "measured_on"]
    assert note.passed and note.candidate is None and note.kind == "note"
    assert note.reason == (
        "measured on AMD EPYC 9B14, 2 cores: the ranking was measured on a CPU with bf16 "
        "units (avx512_bf16); the serving nodes lack it; the ranking was measured on a CPU "
        "with AVX-512 (avx512f); the serving nodes lack it; the best pair there may differ: "
        "measure on the serving machine type")
    assert f"  note: {note.reason}" in decision.summary_lines()
    assert decision.summary_lines()[2] == (
        "  measured on: AMD EPYC 9B14, 2 cores (CPU features: avx2, avx512_bf16, "
        "avx512_vnni, avx512f)")
    assert decision.blessed  # informs, never blocks
    assert decision.measured_on == {"cpu_model": "AMD EPYC 9B14", "cores": 2, "cpu_features": [
        "avx2", "avx512_bf16", "avx512_vnni", "avx512f"]}
    same = gate(model_dirs, {"server": {"cpu_features": [
        "avx512f", "avx512_vnni", "avx512_bf16", "sse4_2"]}}, data=data)
    [note] = [c for c in same.checks if c.threshold == "measured_on"]
    assert "have the same features that change rankings" in note.reason
    old = gate(model_dirs, {"server": {"cpu_features": ["avx2"]}})  # no cpu_features recorded
    [note] = [c for c in old.checks if c.threshold == "measured_on"]
    assert not note.applicable and old.measured_on["cpu_features"] is None


def test_the_benchmark_task_machine_is_a_setting_of_the_compiled_pipeline(tmp_path):
    path = compile_pipeline(tmp_path / "p.yaml", benchmark_resources=TaskResources(
        cpu_request="2", cpu_limit="2", memory_request="4G", memory_limit="8G"))
    executors = yaml.safe_load(path.read_text())["deploymentSpec"]["executors"]
    assert executors["exec-benchmark"]["container"]["resources"] == {
        "cpuLimit": 2.0, "cpuRequest": 2.0, "memoryLimit": 8.0, "memoryRequest": 4.0,
        "resourceCpuLimit": "2", "resourceCpuRequest": "2", "resourceMemoryLimit": "8G",
        "resourceMemoryRequest": "4G"}
    assert not any("resources" in e["container"] for key, e in executors.items()
                   if key != "exec-benchmark")
    default = yaml.safe_load(compile_pipeline(tmp_path / "d.yaml").read_text())
    assert not any("resources" in e["container"]
                   for e in default["deploymentSpec"]["executors"].values())
    with pytest.raises(ServoptError, match="benchmark resources: cpu_limit 'two' is not "
                                           "accepted by KFP"):
        compile_pipeline(tmp_path / "bad.yaml", benchmark_resources=TaskResources(
            cpu_limit="two"))


def test_servopt_gate_prints_the_pairs_and_the_command_for_the_destination(
        model_dirs, tmp_path):
    from click.testing import CliRunner

    from components.cli import main

    data = metrics()
    data["models"] = {key: {**entry, "path": str(model_dirs["optimized"])}
                      for key, entry in data["models"].items()
                      if not key.startswith("Quantizer")}
    (tmp_path / "metrics.json").write_text(json.dumps(data))
    (tmp_path / "thresholds.yaml").write_text(
        "objective: [p50_ms]\nvalue: {max_p99_ms: 20}\n")
    args = ["gate", str(tmp_path / "metrics.json"), "--thresholds",
            str(tmp_path / "thresholds.yaml"), "--destination", "/srv/serving/digits"]
    result = CliRunner(env={"COLUMNS": "250"}).invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    [chosen] = [line.split() for line in lines if line.endswith("chosen")]
    assert chosen[:3] == ["optimized", "tensorflow", "default"]
    assert any(line.split()[:3] == ["optimized", "tensorflow", BATCHED_LABEL]
               and "blocked: value.max_p99_ms" in line for line in lines)
    assert lines[-1] == (
        "  serve 'optimized' with: tensorflow_model_server --port=8500 --rest_api_port=8501 "
        "--model_name=digits --model_base_path=/srv/serving/digits "
        "--tensorflow_intra_op_parallelism=2 --tensorflow_inter_op_parallelism=2")
    recorded = json.loads(CliRunner().invoke(main, [*args, "--json"]).stdout)
    assert recorded["server_command"][3:5] == ["--model_name=digits",
                                               "--model_base_path=/srv/serving/digits"]
    assert recorded["chosen_metrics"]["runtime"]["label"] == "default"


def test_the_push_step_receives_the_gates_decision_and_the_gate_the_destination(tmp_path):
    spec = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml").read_text())
    components = spec["components"]
    assert "decision" in components["comp-push"]["inputDefinitions"]["artifacts"]
    assert "push_destination" in components["comp-gate"]["inputDefinitions"]["parameters"]
