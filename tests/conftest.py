"""Shared fixtures: real models, the demo run and the KFP run are made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import model_zoo, pipeline_runs


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def seed_cnn_model(models_dir) -> Path:
    return model_zoo.export_seed_cnn(models_dir / "seed_cnn")


@pytest.fixture(scope="session")
def mobilenet_model(models_dir) -> Path:
    return model_zoo.export_mobilenet_v2(models_dir / "mobilenet_v2")


@pytest.fixture(scope="session")
def example_vocab_model(models_dir) -> Path:
    return model_zoo.export_example_vocab_model(models_dir / "example_vocab")


@pytest.fixture(scope="session")
def two_signature_model(models_dir) -> Path:
    return model_zoo.export_two_signature_model(models_dir / "two_signatures")


@pytest.fixture(scope="session")
def demo_cnn_model(models_dir) -> Path:
    return model_zoo.export_demo_cnn(models_dir / "demo_cnn")


@pytest.fixture(scope="session")
def resnet50_model(models_dir) -> Path:
    return model_zoo.export_resnet50(models_dir / "resnet50")


@pytest.fixture(scope="session")
def tf1_vocab_model(models_dir) -> Path:
    return model_zoo.export_tf1_vocab_model(models_dir / "tf1_vocab")


# ------------------------------------------------------------------ the shared pipeline runs
# Minutes each on two cores: one of each per session, read by every test that needs it
# (tests/pipeline_runs.py says why and how).

@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> pipeline_runs.DemoRun:
    """`servopt demo` with BeamDagRunner and the configs/ defaults, run once."""
    return pipeline_runs.first_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def digits_examples(tmp_path_factory) -> Path:
    """The digits TFRecords the demo's DigitsExampleGen writes (train and eval splits)."""
    from pipelines.digits.example_gen import write_examples

    root = tmp_path_factory.mktemp("digits_examples")
    write_examples(root)
    return root


@pytest.fixture(scope="session")
def kfp_blessed_run(seed_cnn_model, digits_examples, tmp_path_factory):
    """The KFP pipeline run here with kfp.local, once: configs/thresholds.yaml read at batch
    8, with the server serving model.tflite as the demo's does; the trainer's model is a
    candidate too, so at least one candidate passes and the gate blesses. The Quantizer's
    settings are the defaults (all its variants)."""
    from components.kfp.pipeline import DEFAULT_THRESHOLDS, run_local

    work = tmp_path_factory.mktemp("kfp_blessed")
    return run_local(seed_cnn_model, digits_examples, work / "serving", work / "pipeline_root",
                     label_key="label",
                     thresholds={**DEFAULT_THRESHOLDS, "primary_batch_size": 8,
                                 "server": {"prefer_tflite_model": True}},
                     batch_sizes=[8], benchmark_settings=pipeline_runs.QUICK_BENCHMARK,
                     verification={"num_examples": 64})


def _export_tiny(out: Path, seed: int) -> Path:
    """A real 4 -> 3 softmax classifier SavedModel (different weights per seed)."""
    from components.core.tf_setup import tf

    weights = tf.constant(tf.random.stateless_normal((4, 3), seed=(seed, 0)))

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"scores": tf.nn.softmax(tf.matmul(x, weights))}

    module = Tiny()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Four real tiny classifiers, for tests of the benchmark's bookkeeping."""
    root = tmp_path_factory.mktemp("tiny")
    return {name: _export_tiny(root / name, seed)
            for seed, name in enumerate(("base", "slow", "fast", "mid"))}
