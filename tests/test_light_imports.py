"""What the pipeline orchestrators import stays free of TensorFlow, and the names they
read (components.core.choices) are exactly what the steps implement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# The parent of `servopt kfp run-local` (and KFP compilation) imports these: with
# TensorFlow it held 0.75 GB for the whole run, beside every step's own process.
ORCHESTRATOR_MODULES = ("components.kfp.pipeline", "components.core.config",
                        "components.core.choices", "components.core.identity",
                        "components.core.model_paths", "pipelines.zoo")


def test_the_orchestrator_imports_no_tensorflow():
    code = ("import json, sys, importlib\n"
            f"for name in {ORCHESTRATOR_MODULES!r}: importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'tflite_runtime'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_steps_implement_exactly_the_choices():
    from components.core import choices, tflite
    from components.core.optimize import PASSES

    assert tuple(PASSES) == choices.PASS_NAMES
    assert set(tflite.TFLITE_PRECISION) == set(choices.TFLITE_MODES)
