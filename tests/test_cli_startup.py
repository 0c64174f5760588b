"""`servopt --help` and every subcommand's help: fast, and nothing heavy imported."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

COMMANDS = [[], ["describe"], ["optimize"], ["benchmark"], ["gate"], ["push"], ["demo"],
            ["kfp"], ["kfp", "compile"], ["kfp", "run-local"], ["kfp", "submit"],
            ["zoo"], ["zoo", "run"], ["zoo", "table"]]
HEAVY = ("tensorflow", "tfx", "kfp", "apache_beam", "ml_metadata", "pipelines")


def test_help_imports_neither_tensorflow_tfx_kfp_nor_the_example_pipelines():
    code = ("import sys\nfrom components.cli import main\n"
            f"for args in {COMMANDS!r}:\n"
            "    try:\n        main([*args, '--help'])\n    except SystemExit:\n        pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "servopt")
def test_help_prints_in_under_two_seconds(args):
    servopt = os.path.join(os.path.dirname(sys.executable), "servopt")
    start = time.perf_counter()
    done = subprocess.run([servopt, *args, "--help"], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0 and "Usage: servopt" in done.stdout, done.stderr
    assert done.stderr == ""
    assert elapsed < 2.0, f"servopt {' '.join(args)} --help took {elapsed:.2f} s"


def test_benchmark_help_shows_the_librarys_defaults():
    from components.core.benchmark.config import BenchmarkConfig

    servopt = os.path.join(os.path.dirname(sys.executable), "servopt")
    text = " ".join(subprocess.run([servopt, "benchmark", "--help"], capture_output=True,
                                   text=True, check=True).stdout.split())
    defaults = BenchmarkConfig()
    assert f"(default: {defaults.warmup_requests})" in text
    assert f"(default: {','.join(map(str, defaults.batch_sizes))})" in text
    assert f"(default: {defaults.backend})" in text


@pytest.mark.parametrize("args", [
    ["benchmark", "A", "B", "--concurrency", "0"],
    ["benchmark", "A", "--batch-sizes", "1,0"],
    ["benchmark", "A", "--warmup-requests", "-1"],
    ["benchmark", "A", "B", "--name", "x"],
    ["benchmark", "A", "--config", "no-such-settings.yaml"],
    ["gate", "no-such-metrics.json"],
], ids=lambda a: " ".join(a))
def test_a_bad_argument_is_refused_in_one_line_before_tensorflow_loads(args):
    code = ("import sys\nfrom components.cli import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit as exit:\n"
            "    print(exit.code, sorted(m for m in ('tensorflow',) if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "2 []", done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("servopt: error: "), done.stderr


def test_model_paths_on_the_command_line_are_recorded_absolute(tmp_path, monkeypatch):
    from components.core.benchmark.config import name_models

    monkeypatch.chdir(tmp_path)
    specs = name_models(["models/base", "opt=../elsewhere/opt"])
    assert [(s.name, s.path) for s in specs] == [
        ("base", tmp_path / "models" / "base"), ("opt", tmp_path.parent / "elsewhere" / "opt")]


def test_the_demos_work_directory_and_pipeline_root_are_absolute(tmp_path, monkeypatch):
    """ML Metadata records artifact URIs under the pipeline root as given: absolute, so a
    reader started in another directory finds them."""
    from components.core.uris import absolute
    from pipelines.local_runner import PIPELINE_ROOT, work_directory

    monkeypatch.chdir(tmp_path)
    assert work_directory(Path("servopt-demo")) == tmp_path / "servopt-demo"
    assert work_directory(Path("a/../servopt-demo")) / PIPELINE_ROOT == (
        tmp_path / "servopt-demo" / PIPELINE_ROOT)
    assert work_directory(tmp_path / "w") == tmp_path / "w"
    assert absolute("gs://bucket/root") == "gs://bucket/root"  # a URI is left as it is
