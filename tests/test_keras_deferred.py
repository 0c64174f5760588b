"""Keras is deferred in processes that run models as TF Serving does (the benchmark's
workers, the oneDNN-off child; components/core/keras_deferred.py), and loads again for a
package that needs it (TF Text). Each check runs in a fresh interpreter: TensorFlow is
imported once per process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.core.benchmark.config import BenchmarkConfig, ModelSpec
from components.core.benchmark.run import run_benchmark
from pipelines import zoo_text

REPO = Path(__file__).resolve().parents[1]

DEFERRED_THEN_ALLOWED = """
import sys
from components.core.keras_deferred import defer_keras
defer_keras()
import tensorflow as tf
assert "keras.src" not in sys.modules, "Keras was loaded at import"
from components.core.safety.libraries import TF_TEXT, load
assert load(TF_TEXT) is None, load(TF_TEXT)  # TF Text uses tf.keras at import
assert tf.keras.layers.Dense(2)(tf.ones([1, 3])).shape == (1, 2)
print("deferred, then allowed")
"""


def test_tensorflow_imports_without_keras_and_keras_loads_for_tf_text():
    done = subprocess.run([sys.executable, "-c", DEFERRED_THEN_ALLOWED], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "deferred, then allowed" in done.stdout


@pytest.mark.e2e
def test_a_benchmark_worker_without_keras_serves_a_text_model(tmp_path):
    """The worker defers Keras; the text model's TF Text ops need it, and get it."""
    model = zoo_text.text_model(tmp_path / "text")
    config = BenchmarkConfig(batch_sizes=(1,), concurrency=(), window_seconds=None,
                             window_requests=10, max_windows=6, min_requests=1,
                             warmup_requests=2, decision_budget_s=0, search_budget_s=0)
    result = run_benchmark([ModelSpec("text", model)], config)
    measured = result.models["text"]
    assert measured.error is None, measured.error
    assert measured.at(1).p50_ms > 0
