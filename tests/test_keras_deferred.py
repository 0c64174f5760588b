"""Keras is deferred in processes that run models as TF Serving does (the benchmark's
workers, the oneDNN-off child; components/core/keras_deferred.py), and loads again for a
package that needs it (TF Text). The first check reads a fresh interpreter's facts
(tests/fresh_process.py): TensorFlow is imported once per process."""

from __future__ import annotations

import pytest

from components.core.benchmark.config import BenchmarkConfig, ModelSpec
from components.core.benchmark.run import run_benchmark
from pipelines import zoo_text
from tests.fresh_process import fresh_process_facts


def test_tensorflow_imports_without_keras_and_keras_loads_for_tf_text():
    facts = fresh_process_facts()  # a fresh interpreter that deferred Keras
    assert not facts.keras_at_import, "Keras was loaded at `import tensorflow`"
    assert facts.text_load is None, facts.text_load  # TF Text uses tf.keras at import
    assert facts.keras_works_after_text


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
