"""Shared fixtures: real models are built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import model_zoo


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
