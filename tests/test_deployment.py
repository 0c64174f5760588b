"""What runs on Kubeflow / Vertex: the TFX Vertex compilation and the image definition.

Docker cannot build here, so the Dockerfile is checked against the project: the files it
copies exist, the modules and commands it runs are real, its versions match uv.lock.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from pathlib import Path

import pytest

from components.core.errors import ServoptError

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
IMAGE = "us-docker.pkg.dev/example/servopt/servopt:0.1.0"


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == package)


def test_dockerfile_copies_only_files_that_exist():
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), source


def test_dockerfile_imports_real_modules_and_runs_real_entry_points():
    project_modules = re.findall(r"\b((?:components|pipelines)(?:\.\w+)+)", DOCKERFILE)
    assert project_modules
    for module in project_modules:
        importlib.import_module(module)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "servopt --help" in DOCKERFILE and "servopt" in scripts


def test_dockerfile_pins_what_uv_lock_pins():
    serving = re.search(r"ARG TF_SERVING_VERSION=(\S+)", DOCKERFILE).group(1)
    assert serving == locked_version("tensorflow-serving-api")
    assert "uv export --frozen" in DOCKERFILE  # every other package as uv.lock pins it
    assert f"tfx=={locked_version('tfx')}" in DOCKERFILE
    assert "python:3.11" in DOCKERFILE  # the project's requires-python


def test_the_tfx_pipeline_compiles_for_vertex(tmp_path):
    from pipelines import vertex_runner

    try:
        vertex_runner.kubeflow_v2_runner_module()
    except ServoptError as err:
        pytest.skip(str(err))
    output = vertex_runner.compile_for_vertex(IMAGE, "gs://bucket/root",
                                              "gs://bucket/serving/digits",
                                              tmp_path / "digits.json")
    spec = json.loads(output.read_text())["pipelineSpec"]
    assert sorted(spec["root"]["dag"]["tasks"]) == sorted([
        "DigitsExampleGen", "DigitsTrainer", "Freezer", "GraphOptimizer", "Quantizer",
        "ServingBenchmark", "PusherGate"])
    gate_inputs = spec["components"]["PusherGate"]["inputDefinitions"]["artifacts"]
    assert "components.ServingBenchmarkResult" in (
        gate_inputs["benchmark"]["artifactType"]["instanceSchema"])
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}
    freezer = executors["Freezer_executor"]["container"]
    assert "components.freezer.executor.Executor" in freezer["args"]
    importlib.import_module(freezer["command"][-1])  # the Vertex entrypoint module


def test_custom_artifact_types_follow_vertex_rules():
    """TYPE_NAME is `<module>.<ClassName>`, importable by that path, with no PROPERTIES."""
    from components.artifacts import CUSTOM_ARTIFACT_TYPES

    title = re.compile(r"^[a-z][a-z0-9-_]{2,20}[.][A-Z][a-zA-Z0-9-_]{2,49}$")  # KFP's rule
    for cls in CUSTOM_ARTIFACT_TYPES:
        assert title.fullmatch(cls.TYPE_NAME), cls.TYPE_NAME
        module, name = cls.TYPE_NAME.rsplit(".", 1)
        assert getattr(importlib.import_module(module), name) is cls
        assert not cls.PROPERTIES
