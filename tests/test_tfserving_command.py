"""The `tfserving` backend's server command and version files, as pure functions checked
against TF Serving's own flag definitions.

No tensorflow_model_server binary can be installed here, so every command built for a
(variant, configuration) row is parsed here the way the server parses it:
`FLAGS` is tensorflow/serving (commit 9d981c5) `model_servers/main.cc`'s flag list with
each flag's C++ type from `server.h` Options; TF's flag parser (tsl
`util/command_line_flags.cc`) takes `--name=value` for every type and a bare `--name`
for a bool; `server.cc` BuildAndStart adds rules across flags. The live test, where the
binary exists, is in test_benchmark_tfserving.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from components.core.batching import (
    BATCHING_PARAMS_FILE,
    SERVER_BATCHING_FILE,
    BatchingParameters,
    read_batching_params,
)
from components.core.benchmark.config import BenchmarkConfig, ModelSpec
from components.core.benchmark.engines import resolve_model
from components.core.benchmark.runtimes import (
    Row,
    build_gap_note,
    default_config,
    runtime_info,
    served_row_plan,
)
from components.core.benchmark.tfserving import (
    BENCHMARK_ONLY_FLAGS,
    ServedRow,
    benchmark_command,
    load_failure,
    model_base_dir,
    served_name,
    served_row,
    warmup_records,
)
from components.core.gate.decision import GateDecision
from components.core.requirements import (
    PREFER_TFLITE_FLAG,
    TENSORFLOW_RUNTIME,
    TFLITE_RUNTIME,
    ServingRequirements,
    write_requirements,
)
from components.core.serving_config import ServingConfig, row_flags

# main.cc (line of its tensorflow::Flag) -> the Options field's type in server.h.
FLAGS = {
    "port": "int32",  # main.cc:88, server.h:43
    "rest_api_port": "int32",  # main.cc:95, server.h:51
    "enable_batching": "bool",  # main.cc:107, server.h:59
    "batching_parameters_file": "string",  # main.cc:114, server.h:64
    "enable_per_model_batching_parameters": "bool",  # main.cc:120, server.h:60
    "model_name": "string",  # main.cc:145, server.h:65
    "model_base_path": "string",  # main.cc:148, server.h:72
    "max_num_load_retries": "int32",  # main.cc:163, server.h:68
    "tensorflow_session_parallelism": "int64",  # main.cc:191, server.h:76
    "tensorflow_intra_op_parallelism": "int64",  # main.cc:205, server.h:79
    "tensorflow_inter_op_parallelism": "int64",  # main.cc:211, server.h:80
    "enable_model_warmup": "bool",  # main.cc:245, server.h:91
    "prefer_tflite_model": "bool",  # main.cc:263, server.h:98
    "num_tflite_pools": "int32",  # main.cc:271, server.h:99
    "num_tflite_interpreters_per_pool": "int32",  # main.cc:277, server.h:100
    "mixed_precision": "string",  # main.cc:304, server.h:104
}
BOOLS = {"true": True, "1": True, "false": False, "0": False}  # ParseBoolFlag


def parse_command(command: list[str]) -> dict[str, object]:
    """The flags of a tensorflow_model_server command, parsed as main.cc's Flags::Parse
    would: an unknown flag, a value of the wrong type, or a flag given twice fails."""
    parsed: dict[str, object] = {}
    for argument in command:
        assert argument.startswith("--"), f"not a flag: {argument!r} (Flags::Parse leaves it)"
        name, sep, value = argument[2:].partition("=")
        assert name in FLAGS, f"--{name} is not a flag of tensorflow_model_server (main.cc)"
        assert name not in parsed, f"--{name} given twice"
        kind = FLAGS[name]
        if kind == "bool":
            assert not sep or value.lower() in BOOLS, f"--{name}={value}: not a bool"
            parsed[name] = BOOLS[value.lower()] if sep else True
        elif kind in ("int32", "int64"):
            assert sep, f"--{name} needs a value"
            parsed[name] = int(value)  # ValueError: not an integer
            if kind == "int32":
                assert -2**31 <= parsed[name] < 2**31
        else:
            assert sep, f"--{name} needs a value"
            parsed[name] = value
    # server.cc BuildAndStart, lines 239-242: the batching file needs --enable_batching.
    if parsed.get("batching_parameters_file"):
        assert parsed.get("enable_batching"), "batching_parameters_file without enable_batching"
    # main.cc:120's help: per-model parameters apply only with --enable_batching.
    if parsed.get("enable_per_model_batching_parameters"):
        assert parsed.get("enable_batching")
    # server.cc:256-263: not all three of session, intra and inter parallelism.
    assert not all(parsed.get(k, 0) > 0 for k in (
        "tensorflow_session_parallelism", "tensorflow_intra_op_parallelism",
        "tensorflow_inter_op_parallelism"))
    # saved_model_bundle_factory.cc:140: "bfloat16" is the mode it knows.
    assert parsed.get("mixed_precision", "bfloat16") == "bfloat16"
    return parsed


BATCHING = BatchingParameters(max_batch_size=8, batch_timeout_micros=1000,
                              num_batch_threads=2, max_enqueued_batches=4)
CONFIGS = {
    "tensorflow default": ServingConfig(intra_op_threads=2, inter_op_threads=2),
    "tensorflow threads": ServingConfig().with_changes(intra_op_threads=1),
    "bf16": ServingConfig(intra_op_threads=2, inter_op_threads=2).with_changes(
        mixed_precision="bfloat16"),
    "batching": ServingConfig(intra_op_threads=2, inter_op_threads=2).with_changes(
        batching=BATCHING),
    "batching, default threads": ServingConfig(intra_op_threads=2, inter_op_threads=2)
    .with_changes(batching=BatchingParameters(max_batch_size=16)),
    "tflite": ServingConfig(runtime=TFLITE_RUNTIME, tflite_pools=2),
    "tflite split": ServingConfig(runtime=TFLITE_RUNTIME, tflite_pools=2).with_changes(
        tflite_interpreters_per_pool=10),
}


@pytest.mark.parametrize("label", list(CONFIGS))
@pytest.mark.parametrize("beside_tflite", [False, True])
def test_every_rows_command_parses_as_tf_servings_flags(tmp_path, label, beside_tflite):
    config = CONFIGS[label]
    row = ServedRow("m", tmp_path, tuple(row_flags(config, beside_tflite)),
                    batching=config.batching)
    command = benchmark_command("/usr/bin/tensorflow_model_server", row, tmp_path / "base",
                                9000, 9001)
    assert command[0] == "/usr/bin/tensorflow_model_server"
    flags = parse_command(command[1:])
    assert (flags["port"], flags["rest_api_port"]) == (9000, 9001)
    assert flags["model_base_path"] == str(tmp_path / "base")
    assert flags["max_num_load_retries"] == 0
    if config.runtime == TFLITE_RUNTIME:
        assert flags["prefer_tflite_model"] is True
        assert flags["num_tflite_pools"] == config.tflite_pools
        assert flags["num_tflite_interpreters_per_pool"] == config.tflite_interpreters_per_pool
    else:
        assert flags.get("prefer_tflite_model", False) is False
        assert flags["tensorflow_intra_op_parallelism"] == config.intra_op_threads
        assert flags["tensorflow_inter_op_parallelism"] == config.inter_op_threads
        assert ("mixed_precision" in flags) == (config.mixed_precision is not None)
        assert bool(flags.get("enable_batching")) == (config.batching is not None)
        assert bool(flags.get("enable_per_model_batching_parameters")) == (
            config.batching is not None)
        if config.batching is not None and config.batching.num_batch_threads:
            # The file the flag names lies beside the version (model_base_dir writes it).
            assert flags["batching_parameters_file"] == str(
                tmp_path / "base" / SERVER_BATCHING_FILE)
        else:
            assert "batching_parameters_file" not in flags


def test_a_saved_model_beside_model_tflite_is_served_with_prefer_tflite_model_false():
    flags = parse_command(row_flags(ServingConfig(intra_op_threads=1, inter_op_threads=1),
                                    beside_tflite=True))
    assert flags["prefer_tflite_model"] is False


def test_the_measured_command_is_the_command_the_gate_prints(tmp_path):
    """The push prints GateDecision.command_for; the backend runs benchmark_command: the
    same words, but for the backend's binary, ports, model name and base path and its
    BENCHMARK_ONLY_FLAGS."""
    config = CONFIGS["batching"]
    requirements = ServingRequirements(environment={"TF_ENABLE_ONEDNN_OPTS": "1"},
                                       server_flags=("--mixed_precision=bfloat16",))
    flags = row_flags(config, False, requirements)
    assert flags[-1] == "--mixed_precision=bfloat16"  # the requirement's, for its runtime
    decision = GateDecision(blessed=True, chosen="m", chosen_path=str(tmp_path),
                            reason="", primary_batch_size=1, objective=[],
                            first_push=True, candidates=[], checks=[],
                            server_flags=flags, environment=dict(requirements.environment))
    base = tmp_path / "base"
    printed = decision.command_for(str(base), "m")
    measured = benchmark_command("tensorflow_model_server", ServedRow(
        "m", tmp_path, tuple(flags), requirements.environment, config.batching), base,
        8500, 8501)
    assert printed[0] == "TF_ENABLE_ONEDNN_OPTS=1"  # given to the process, not in argv
    assert measured == printed[1:] + list(BENCHMARK_ONLY_FLAGS)


def test_the_version_directory_carries_the_rows_batching_and_warmups(tmp_path,
                                                                     seed_cnn_model):
    """What the push writes into a version for the configuration, written into the
    scratch version, read back as TF Serving reads it; the model itself is not touched."""
    from components.core.gate.warmup import WARMUP_FILE, read_warmup_file, replay_warmup

    before = sorted(p.relative_to(seed_cnn_model) for p in seed_cnn_model.rglob("*"))
    from components.core.benchmark.feeds import read_signature

    signature = read_signature(seed_cnn_model, TENSORFLOW_RUNTIME, "serving_default")
    key = next(iter(signature.signature.inputs))
    feeds = {key: np.zeros((2, *[d.size for d in signature.signature.inputs[key]
                                  .tensor_shape.dim][1:]), np.float32)}
    row = ServedRow("seed", seed_cnn_model, (), batching=BATCHING,
                    warmups=warmup_records("seed", "serving_default", [feeds]))
    base = model_base_dir(row, tmp_path / "scratch")
    version = base / "1"
    # GetPerModelBatchingParams' file; the thread pool is the server's (its own file)
    assert read_batching_params(version) == replace(BATCHING, num_batch_threads=None)
    server_file = (base / SERVER_BATCHING_FILE).read_text()
    assert "num_batch_threads { value: 2 }" in server_file
    logs = read_warmup_file(version / "assets.extra" / WARMUP_FILE)
    assert len(logs) == 1 and logs[0].predict_log.request.model_spec.name == "seed"
    replay_warmup(seed_cnn_model, logs)  # the records run: TF Serving's load would pass
    assert sorted(p.relative_to(seed_cnn_model) for p in seed_cnn_model.rglob("*")) == before
    assert not (seed_cnn_model / BATCHING_PARAMS_FILE).exists()


def test_a_warmup_file_the_model_carries_is_kept(tmp_path):
    model = tmp_path / "model"
    (model / "assets.extra").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"")
    (model / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"own")
    base = model_base_dir(ServedRow("m", model, (), warmups=("not written",)), tmp_path / "s")
    carried = base / "1" / "assets.extra" / "tf_serving_warmup_requests"
    assert carried.is_symlink() and carried.read_bytes() == b"own"


# How the server logs a version that cannot load: util/retrier.cc:40 (the description from
# core/loader_harness.cc:82), core/aspired_versions_manager.cc:421, then main.cc's line
# before it exits (ServerCore::Create waits for the model, server_core.cc:328-363).
CAUSE = ("FAILED_PRECONDITION: Last entry in allowed_batch_sizes must match max_batch_size; "
         "last entry was 4; expected 8")
FAILED_LOAD_LOG = "\n".join([
    "2026-12-06 17:00:00.000001: I tensorflow_serving/model_servers/server.cc:77] Building "
    "single TensorFlow model file config:  model_name: m model_base_path: /tmp/s/model",
    "2026-12-06 17:00:00.000200: I tensorflow_serving/core/loader_harness.cc:71] Approving "
    "load for servable version {name: m version: 1}",
    "2026-12-06 17:00:00.000300: I tensorflow_serving/core/loader_harness.cc:79] Loading "
    "servable version {name: m version: 1}",
    "2026-12-06 17:00:00.100000: E tensorflow_serving/util/retrier.cc:40] Loading servable: "
    f"{{name: m version: 1}} failed: {CAUSE}",
    "2026-12-06 17:00:00.100100: E tensorflow_serving/core/aspired_versions_manager.cc:421] "
    f"Servable {{name: m version: 1}} cannot be loaded: {CAUSE}",
    "Failed to start server. Error: UNKNOWN: 1 model(s) did not become available: "
    f"{{{{name: m version: 1}} due to error: {CAUSE}}}, }}", ""])


def test_a_failed_load_is_told_by_the_servers_own_line():
    assert load_failure(FAILED_LOAD_LOG) == (
        f"Loading servable: {{name: m version: 1}} failed: {CAUSE}")
    start_failure = FAILED_LOAD_LOG.splitlines()[-1]
    assert load_failure(start_failure) == start_failure
    assert load_failure("I tensorflow_serving/model_servers/server.cc:77] Building\n") is None


def test_row_names_become_model_names_a_rest_path_can_hold():
    assert served_name("quant@tflite:interpreters_per_pool=10") == \
        "quant_tflite_interpreters_per_pool_10"


def _variant(tmp_path: Path, configuration: dict | None = None) -> Path:
    """A version directory shaped like a TFLite variant (saved_model.pb + model.tflite +
    requirements); only its files' names and requirements are read here."""
    model = tmp_path / "variant"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"")
    (model / "model.tflite").write_bytes(b"")
    write_requirements(model, ServingRequirements(
        runtime=TFLITE_RUNTIME, precision="int8", server_flags=(PREFER_TFLITE_FLAG,),
        configuration=configuration))
    return model


def test_a_tflite_variants_two_rows_get_their_runtimes_flags(tmp_path):
    model = _variant(tmp_path)
    settings = BenchmarkConfig(backend="tfserving", batch_sizes=(1,)).resolved()
    pools = {1: [{"x": np.zeros((1, 2), np.float32)}]}
    spec = ModelSpec("variant", model)
    tflite = Row("variant@tflite", spec, TFLITE_RUNTIME, model / "model.tflite", True, True,
                 config=default_config(TFLITE_RUNTIME, settings).with_changes(
                     tflite_interpreters_per_pool=10))
    graph = Row("variant@tensorflow", spec, TENSORFLOW_RUNTIME, model, True, True)
    on_tflite = parse_command(list(served_row(tflite, settings, pools).flags))
    assert on_tflite["prefer_tflite_model"] is True
    assert on_tflite["num_tflite_interpreters_per_pool"] == 10
    served = served_row(graph, settings, pools)
    assert parse_command(list(served.flags))["prefer_tflite_model"] is False
    assert served.model_dir == model and served.name == "variant_tensorflow"
    assert len(served.warmups) == 1


def test_the_served_version_runs_in_the_configuration_it_was_pushed_with(tmp_path):
    pushed = ServingConfig(runtime=TFLITE_RUNTIME, tflite_pools=2).with_changes(
        tflite_interpreters_per_pool=10)
    model = _variant(tmp_path, pushed.to_dict())
    row = served_row_plan(ModelSpec("served", model), resolve_model(model))
    assert row.runtime == TFLITE_RUNTIME and row.config == pushed
    assert row.config.label() == "interpreters_per_pool=10"
    (tmp_path / "old").mkdir()
    legacy = _variant(tmp_path / "old")  # pushed before configurations were recorded
    row = served_row_plan(ModelSpec("served", legacy), resolve_model(legacy))
    assert row.runtime == TFLITE_RUNTIME and row.config is None


def test_in_process_tflite_int8_on_amx_or_avx_vnni_cpus_is_noted_possibly_optimistic():
    note = build_gap_note(TFLITE_RUNTIME, "int8-dynamic-range", "session",
                          {"avx512f", "avx512_vnni", "amx_int8", "amx_tile"})
    assert note.startswith("possibly optimistic") and "amx_int8, amx_tile" in note
    assert build_gap_note(TFLITE_RUNTIME, "int8", "session", {"avx2", "avx_vnni"})
    # AVX-512 VNNI is in TF Serving's XNNPACK (.bazelrc leaves only AVX-VNNI and AMX out).
    assert build_gap_note(TFLITE_RUNTIME, "int8", "session", {"avx512_vnni"}) is None
    # TF Serving itself measured it, or it is no int8 TFLite figure.
    assert build_gap_note(TFLITE_RUNTIME, "int8", "tfserving", {"amx_int8"}) is None
    assert build_gap_note(TFLITE_RUNTIME, "float32", "session", {"amx_int8"}) is None
    assert build_gap_note(TENSORFLOW_RUNTIME, "int8", "session", {"amx_int8"}) is None


def test_the_note_reaches_the_rows_runtime_info(tmp_path, monkeypatch):
    import components.core.requirements as requirements

    monkeypatch.setattr(requirements, "cpu_flags", lambda: {"avx2", "avx_vnni"})
    model = _variant(tmp_path)
    row = Row("variant@tflite", ModelSpec("variant", model), TFLITE_RUNTIME,
              model / "model.tflite", True, True)
    info = runtime_info(row, BenchmarkConfig().resolved())
    assert len(info.notes) == 1 and "avx_vnni" in info.notes[0]
    assert json.loads(json.dumps(vars(info)))["notes"] == info.notes


FAILING_SERVER = '''#!/bin/sh
# A stand-in for tensorflow_model_server that fails to load its model (this test only; the
# real binary cannot be installed here): it records its argv and environment, writes the
# log lines TF Serving writes for such a load (FAILED_LOAD_LOG) and exits as main.cc does.
printf '%s\\n' "$@" > "$(dirname "$0")/argv"
echo "$TF_ENABLE_ONEDNN_OPTS" > "$(dirname "$0")/env"
cat "$(dirname "$0")/log" >&2
exit 255
'''


def test_a_version_that_fails_to_load_is_a_failed_row_with_the_servers_line(tmp_path):
    """Mocked: the server process (see FAILING_SERVER). The backend runs exactly the row's
    command with the row's environment, and the row's error is the server's own line."""
    from components.core.benchmark.config import TFServingOptions
    from components.core.benchmark.tfserving import TFServingEngine
    from components.core.errors import ServoptError

    binary = tmp_path / "bin" / "tensorflow_model_server"
    binary.parent.mkdir()
    binary.write_text(FAILING_SERVER)
    binary.chmod(0o755)
    (binary.parent / "log").write_text(FAILED_LOAD_LOG)
    model = tmp_path / "model"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"")
    config = CONFIGS["batching"]
    row = ServedRow("m", model, tuple(row_flags(config)), {"TF_ENABLE_ONEDNN_OPTS": "1"},
                    config.batching)
    with pytest.raises(ServoptError) as error:
        TFServingEngine(row, "serving_default", ["out"],
                        TFServingOptions(binary=str(binary), startup_timeout_s=30))
    assert str(error.value) == (f"TF Serving cannot load 'm' (tensorflow_model_server exited "
                                f"with code 255): Loading servable: {{name: m version: 1}} "
                                f"failed: {CAUSE}")
    argv = (binary.parent / "argv").read_text().splitlines()
    flags = parse_command(argv)
    assert argv == benchmark_command(str(binary), row, Path(flags["model_base_path"]),
                                     flags["port"], flags["rest_api_port"])[1:]
    assert (binary.parent / "env").read_text().strip() == "1"
    assert not Path(flags["model_base_path"]).exists()  # the scratch is cleaned up
