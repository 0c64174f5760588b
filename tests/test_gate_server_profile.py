"""The gate judges each candidate on the runtime the destination's TF Serving will run it
on (the `server:` section of the thresholds), refuses what that server cannot run as
measured, and ends its decision with the tensorflow_model_server flags the pushed version
needs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from components.core.config import deep_merge
from components.core.errors import ServoptError
from components.core.gate import Thresholds, evaluate_gate, push_model
from components.core.requirements import (
    BF16_CPU_FEATURES,
    ServingRequirements,
    write_requirements,
)
from tests.model_zoo import tflite_variant
from tests.test_gate_decision import NO_LIMITS

TFLITE_FLAGS = ["--prefer_tflite_model=true", "--num_tflite_pools=2",
                "--num_tflite_interpreters_per_pool=1"]
THREAD_FLAGS = ["--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism=2"]


TRAINER_P50 = 20.0  # the baseline's p50 at batch 100


def batch(p50: float, paired_with_trainer: bool) -> dict:
    """A row at batch 100; measured with the trainer (every row but the trainer's own),
    its paired speedups are the trainer's figures over its own."""
    speedup = TRAINER_P50 / p50 if paired_with_trainer else None
    return {"p50_ms": p50, "p90_ms": p50, "p95_ms": p50, "p99_ms": p50 * 1.1,
            "mean_ms": p50, "std_ms": 0.1, "min_ms": p50, "max_ms": p50 * 1.2,
            "throughput": 100_000 / p50, "stable": True, "windows": 8, "requests": 30,
            "speedup_p50": speedup, "speedup_p99": speedup, "confidence": 0.95,
            **{f"speedup_{q}_interval": None if speedup is None else [speedup * 0.97,
                                                                     speedup * 1.03]
               for q in ("p50", "p99")}}


def row(version: str, runtime: str, p50: float, flags: list[str], servable: bool = True,
        role: str = "candidate") -> dict:
    return {"path": f"/models/{version}", "role": role, "error": None,
            "runtime": {"runtime": runtime, "version": version, "settings": {},
                        "server_flags": flags, "servable": servable},
            "size_bytes": 1_000_000, "batches": {"100": batch(p50, role != "baseline")},
            "concurrency": [], "accuracy": None}


def metrics() -> dict:
    """A benchmark of the Trainer's model, a plain optimized SavedModel, a TFLite variant
    (two rows: its model.tflite and its saved_model.pb) and a bare .tflite file."""
    return {"schema_version": 1, "baseline": "trainer", "settings": {},
            "machine": {"cpu_model": "test", "cores": 2, "tensorflow_version": "2.21.0",
                        "python_version": "3.11", "platform": "linux"}, "models": {
        "trainer": row("trainer", "tensorflow", TRAINER_P50, THREAD_FLAGS,
                       role="baseline"),
        "optimized": row("optimized", "tensorflow", 15.0, THREAD_FLAGS),
        "variant@tflite": row("variant", "tflite", 8.0, TFLITE_FLAGS),
        "variant@tensorflow": row("variant", "tensorflow", 19.5,
                                  ["--prefer_tflite_model=false", *THREAD_FLAGS]),
        "edge": row("edge", "tflite", 7.0, [], servable=False),
    }}


@pytest.fixture(scope="module")
def model_dirs(two_signature_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("server_profile")
    variant = tflite_variant(two_signature_model, root / "variant")
    bf16 = root / "bf16"
    shutil.copytree(two_signature_model, bf16)
    write_requirements(bf16, ServingRequirements(precision="bfloat16",
                                                 cpu_features=BF16_CPU_FEATURES))
    return {"optimized": two_signature_model, "variant": variant, "bf16": bf16}


def gate(model_dirs, server: dict, names=("optimized", "variant"), data=None):
    thresholds = Thresholds.from_dict(deep_merge(NO_LIMITS, {
        "vs_baseline": {"min_speedup_p50": 0.95}, "objective": ["p50_ms"], "server": server}))
    return evaluate_gate(data or metrics(), thresholds, {n: model_dirs[n] for n in names})


def test_without_prefer_tflite_model_the_variant_is_judged_by_its_saved_model_pb(model_dirs):
    decision = gate(model_dirs, {"prefer_tflite_model": False})
    assert decision.candidate("variant").row == "variant@tensorflow"
    assert decision.candidate("variant").objective == {"weighted_p50_ms": 19.5, "p50_ms": 19.5}
    assert decision.chosen == "optimized"  # 15 ms beats the variant's 19.5 ms pb path
    assert decision.server_flags == THREAD_FLAGS
    assert "--prefer_tflite_model" not in decision.summary_lines()[-1]


def test_with_prefer_tflite_model_it_is_judged_by_its_tflite_row_and_the_flag_is_printed(
        model_dirs):
    decision = gate(model_dirs, {"prefer_tflite_model": True})
    assert decision.candidate("variant").row == "variant@tflite"
    assert decision.chosen == "variant"
    assert decision.server_flags == TFLITE_FLAGS
    assert decision.to_dict()["server_flags"] == TFLITE_FLAGS
    assert decision.summary_lines()[-1] == (
        "  serve 'variant' with: tensorflow_model_server --port=8500 --rest_api_port=8501 "
        "--model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH} "
        + " ".join(TFLITE_FLAGS))


def test_the_pushed_version_carries_model_tflite_when_the_flag_is_needed(model_dirs,
                                                                        tmp_path):
    decision = gate(model_dirs, {"prefer_tflite_model": True})
    pushed = Path(push_model(decision.chosen_path, tmp_path / "serving").path)
    assert (pushed / "model.tflite").read_bytes() == (
        model_dirs["variant"] / "model.tflite").read_bytes()
    assert (pushed / "saved_model.pb").is_file()  # TF Serving's fallback without the flag


def test_a_bare_tflite_file_is_not_eligible_and_the_decision_says_why(model_dirs, tmp_path):
    bare = tmp_path / "edge.tflite"
    bare.write_bytes((model_dirs["variant"] / "model.tflite").read_bytes())
    decision = evaluate_gate(metrics(), Thresholds.from_dict(deep_merge(NO_LIMITS, {
        "server": {"prefer_tflite_model": True}})),
        {"edge": bare, "optimized": model_dirs["optimized"]})
    assert not decision.candidate("edge").passed
    assert any("server: a bare .tflite file: TF Serving serves TFLite only as model.tflite"
               in reason for reason in decision.candidate("edge").blocked_by)
    assert decision.chosen == "optimized"


def test_a_candidate_needing_cpu_features_the_serving_nodes_lack_is_not_eligible(model_dirs):
    data = metrics()
    data["models"]["bf16"] = row("bf16", "tensorflow", 5.0, THREAD_FLAGS)
    blocked = gate(model_dirs, {"cpu_features": ["avx2", "fma"]}, ("optimized", "bf16"), data)
    [reason] = [r for r in blocked.candidate("bf16").blocked_by if r.startswith("server")]
    assert reason == ("server: needs one of the CPU features avx512_bf16, amx_bf16 (bfloat16 "
                      "on tensorflow), which the serving nodes lack (server.cpu_features: "
                      "avx2, fma); serve it on such nodes or list their features in "
                      "server.cpu_features")
    assert blocked.chosen == "optimized"
    allowed = gate(model_dirs, {"cpu_features": ["avx2", "avx512_bf16"]},
                   ("optimized", "bf16"), data)
    assert allowed.chosen == "bf16"


def test_the_server_profile_defaults_to_tf_servings_own_defaults_and_this_machine():
    server = Thresholds.from_dict({}).server
    assert server.prefer_tflite_model is False and server.cpu_features is None
    assert "avx2" in server.cpu_flags()  # this machine's /proc/cpuinfo


@pytest.mark.parametrize(("server", "message"), [
    ({"prefer_tflite_model": "yes"}, "'server.prefer_tflite_model' must be true or false"),
    ({"cpu_features": "avx2"}, "'server.cpu_features' must be a list"),
    ({"prefer_tflite": True}, "unknown key 'server.prefer_tflite' (did you mean "
                              "'prefer_tflite_model'?)"),
])
def test_a_bad_server_section_fails_with_one_line_naming_the_key(server, message):
    with pytest.raises(ServoptError, match=re.escape(message)):
        Thresholds.from_dict({"server": server}, source="thresholds.yaml")
