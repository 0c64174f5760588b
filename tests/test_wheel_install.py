"""The built wheel, installed with its locked dependencies into a fresh virtual environment
outside the repository, runs a TFX pipeline of Freezer, GraphOptimizer, Quantizer,
ServingBenchmark and PusherGate with their defaults (tests/wheel/run_pipeline.py).

Slow (a 2.6 GB environment from uv's cache, then the pipeline): `pytest -m slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = [os.environ.get("UV") or shutil.which("uv") or "uv"]  # `uv run` sets UV to itself


def run(args: list, cwd: Path, env: dict | None = None, timeout: int = 1800) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_the_installed_wheel_runs_the_five_components_outside_the_repository(tmp_path):
    if not Path(UV[0]).exists() and not shutil.which(UV[0]):
        pytest.skip("uv is not installed (pip install uv); the test builds and installs with it")
    started = time.perf_counter()
    run([*UV, "build", "--wheel", "--out-dir", tmp_path / "dist"], cwd=ROOT)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"components/configs/{n}.yaml" for n in ("benchmark", "optimization",
                                                      "thresholds")} <= set(names)
    requirements = tmp_path / "requirements.txt"
    run([*UV, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project",
         "--format", "requirements-txt", "-o", requirements], cwd=ROOT)
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    run([*UV, "venv", "--python", sys.executable, venv], cwd=tmp_path)
    # The export is the whole resolved set (with the project's overrides, which a fresh
    # resolution would not apply): installed as it is, without resolving again.
    run([*UV, "pip", "install", "--python", python, "--no-deps", "-r", requirements],
        cwd=tmp_path)
    run([*UV, "pip", "install", "--python", python, "--no-deps", wheel], cwd=tmp_path)
    installed = time.perf_counter()

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    script = work / "run_pipeline.py"
    script.write_text((ROOT / "tests" / "wheel" / "run_pipeline.py").read_text())
    out = run([python, script], cwd=work, env=env)
    result = json.loads(out.strip().splitlines()[-1])
    ran = time.perf_counter()
    print(f"wheel + venv {installed - started:.0f} s, pipeline {ran - installed:.0f} s; "
          f"decision: {result['decision']}")
    assert result["components"].startswith(str(venv))
    assert len(result["versions"]) == 1, result
    # The baseline is named after the Importer's directory; the candidates after their
    # components.
    assert {"Freezer", "GraphOptimizer", "Quantizer"} < set(result["models"])
    default_rows = [name for name in result["models"] if ":" not in name]  # not searched
    assert len(default_rows) == 4, result["models"]
    help_started = time.perf_counter()
    run([venv / "bin" / "servopt", "--help"], cwd=work, env=env)
    print(f"installed servopt --help {time.perf_counter() - help_started:.2f} s")
