"""`servopt describe` and `servopt optimize`: JSON contracts and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from components.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_describe_json_has_the_documented_keys(seed_cnn_model):
    result = run("describe", str(seed_cnn_model), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"signatures", "node_count", "op_counts", "const_count", "variable_count",
            "identity_count", "size_bytes"} <= data.keys()
    assert set(data["size_bytes"]) == {"graph", "variables", "total"}
    assert data["variable_count"] > 0
    image = data["signatures"]["serving_default"]["inputs"]["image"]
    assert image["dtype"] == "float32" and image["shape"] == [None, 28, 28, 1]


def test_optimize_json_reports_before_after_steps_and_verification(two_signature_model,
                                                                   tmp_path):
    out = tmp_path / "out"
    result = run("optimize", str(two_signature_model), str(out),
                 "--steps", "freeze,optimize,quantize=float16", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"before", "after", "steps", "verification"} <= data.keys()
    assert data["after"]["variable_count"] == 0
    assert [s["status"] for s in data["steps"]] == ["applied"] * 3
    assert "max_abs_diff" in data["verification"]
    assert data["verification"]["top1_agreement"] >= 0.99
    assert (out / "saved_model.pb").is_file()


def test_a_step_that_cannot_apply_is_skipped_with_its_reason(two_signature_model, tmp_path):
    frozen, again = tmp_path / "frozen", tmp_path / "again"
    assert run("optimize", str(two_signature_model), str(frozen), "--steps", "freeze"
               ).exit_code == 0
    result = run("optimize", str(frozen), str(again), "--steps", "freeze", "--json")
    step = json.loads(result.stdout)["steps"][0]
    assert step["status"] == "skipped" and "frozen already" in step["reason"]
    assert (again / "saved_model.pb").is_file()  # the model passes through, still servable


@pytest.mark.parametrize(("make_args", "message"), [
    (lambda m, t: ["describe", str(t / "missing")], "no such file or directory"),
    (lambda m, t: ["describe", str(t)], "no SavedModel found"),
    (lambda m, t: ["optimize", str(m), str(t / "o"), "--steps", "freeze,shrink"],
     "unknown step 'shrink'"),
    (lambda m, t: ["optimize", str(m), str(t / "o"), "--passes", "fold_everything"],
     "unknown optimization pass 'fold_everything'"),
    (lambda m, t: ["optimize", str(m), str(t)], "already exists"),
    (lambda m, t: ["optimize", str(m), str(t / "file.txt" / "o")], "does not exist"),
])
def test_bad_input_exits_2_with_one_line(two_signature_model, tmp_path, make_args, message):
    (tmp_path / "file.txt").write_text("not a directory")
    result = CliRunner().invoke(main, make_args(two_signature_model, tmp_path))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "o").exists()


def test_a_verification_failure_exits_3_and_publishes_nothing(seed_cnn_model, tmp_path):
    """Verification on noise inputs with an impossible top-1 bound cannot pass."""
    from components.core.errors import VerificationError
    from components.core.steps import OptimizeConfig, optimize_model, parse_steps
    from components.core.verify import Tolerance

    config = OptimizeConfig(quantized_tolerance=Tolerance(0.0, 0.0, min_top1_agreement=1.01))
    with pytest.raises(VerificationError) as error:
        optimize_model(seed_cnn_model, tmp_path / "o", parse_steps("quantize=int8"), config)
    assert error.value.exit_code == 3 and "quantize=int8" in str(error.value)
    assert list(tmp_path.iterdir()) == []  # no output, no staging directory left behind


# TF_ENABLE_ONEDNN_OPTS=1 makes TensorFlow start as it does by default on CPUs with
# AVX512_VNNI / AVX512_BF16 / AMX (tensorflow/core/util/port.cc, DefaultOneDnnPolicy), where
# it logs "oneDNN custom operations are on ..." at import; this machine has none of them.
@pytest.mark.parametrize("onednn", ["default", "1"], ids=["onednn-default", "onednn-on"])
def test_the_installed_command_prints_no_traceback(tmp_path, onednn):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if onednn != "default":
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    done = subprocess.run([sys.executable, "-m", "components.cli", "describe",
                           str(tmp_path / "missing")], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    # One line: TensorFlow's start-up (cudart_stub, cuInit on a machine without CUDA,
    # the CPU-instructions banner, the oneDNN banner) is not shown.
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("servopt: error: ")


def test_the_onednn_banner_is_dropped_and_its_warning_is_kept():
    """The banner's exact text (TF 2.21, port.cc) is start-up noise; the warning TF logs
    beside it for a malformed TF_ENABLE_ONEDNN_OPTS, and any other line, are not."""
    from components.core.tf_setup import without_noise

    banner = ("I0000 00:00:1796235104.668884    6159 port.cc:153] oneDNN custom operations "
              "are on. You may see slightly different numerical results due to "
              "floating-point round-off errors from different computation orders. To turn "
              "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n")
    warning = ("W0000 00:00:1796235104.668884    6159 port.cc:148] TF_ENABLE_ONEDNN_OPTS is "
               "not set to either '0', 'false', '1', or 'true'. Using the default setting: "
               "false\n")
    error = "E0000 00:00:1796235104.668884    6159 some_op.cc:12] a real error\n"
    assert without_noise(banner + warning + error) == warning + error
