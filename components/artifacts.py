"""This project's own TFX artifact types.

Vertex AI's rules for custom types (what KubeflowV2DagRunner compiles and its executor
entrypoint imports back): TYPE_NAME is `<module>.<ClassName>` with a one-word module,
importable by that path (`components.ServingBenchmarkResult` resolves through
`components/__init__.py`), and no declared PROPERTIES: measurements go into custom
properties. tests/test_deployment.py checks both.
"""

from __future__ import annotations

from tfx.types.artifact import Artifact


class ServingBenchmarkResult(Artifact):
    """ServingBenchmark's output: metrics.json and report.html; headline figures as custom
    properties."""

    TYPE_NAME = "components.ServingBenchmarkResult"


CUSTOM_ARTIFACT_TYPES = (ServingBenchmarkResult,)
