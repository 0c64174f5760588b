"""`servopt --help` and every subcommand's help: fast, and nothing heavy imported."""

from __future__ import annotations

import os
import subprocess
import sys
import time

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
