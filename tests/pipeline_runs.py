"""The suite's two pipeline runs, each made once per session and read by every test that
needs one (fixtures `demo_run` and `kfp_blessed_run` in conftest.py).

A whole pipeline takes minutes on two cores, so the suite runs one `servopt demo` and one
blessed KFP local run, and every test that checks what they produced reads the same run.
The demo runs on the configs/ defaults (every variant, the demo's traffic profile, the
configuration search) measured with short windows and budgets (SUITE_BENCHMARK): the
tests check what the pipeline records and decides, not its timings, which are the
demo's own (docs/runs/, recorded on the defaults). Tests that rerun the demo with another
setting (the cache, impossible thresholds, a slower retrained model) append runs to the
same work directory, as a user would; readers of the first run find it by its MLMD run id,
not as "the latest", so the order the tests run in does not matter.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from click.testing import CliRunner

from components.cli import main
from components.core.bf16 import bf16_unavailable_reason
from components.core.choices import TFLITE_MODES
from pipelines.mlmd_summary import (
    ExecutionRecord,
    custom_properties,
    latest_run_id,
    open_store,
    run_executions,
)

COMPONENTS = ["DigitsExampleGen", "DigitsTrainer", "Freezer", "GraphOptimizer", "Quantizer",
              "ServingBenchmark", "PusherGate"]
# The Quantizer's variants under the defaults: the bf16 one only where this machine can make
# it (the rule the Quantizer itself applies, components/core/bf16.py), every TFLite mode.
BF16 = [] if bf16_unavailable_reason() else ["Quantizer-bfloat16"]
TFLITE = [f"Quantizer-tflite-{mode}" for mode in TFLITE_MODES]
VERSIONS = ["Freezer", "GraphOptimizer", "Quantizer", *BF16, *TFLITE]  # after the baseline


# The suite's measurement settings for the demo: quarter-second windows that end at 100
# requests, enough requests for the intervals the gate decides on, and a search budget
# that still covers the first knobs; the defaults would make each run last the demo's
# minutes.
SUITE_BENCHMARK = {"window_seconds": 0.25, "window_requests": 100, "min_requests": 100,
                   "decision_budget_s": 5, "search_budget_s": 40, "total_budget_s": 150}


def demo(workdir: Path, config: dict | None = None) -> str:
    """`servopt demo` into workdir with `config` (sections as in `--config`) over the
    suite's measurement settings; its output as a CI log holds it (80 columns, no tty)."""
    overlay = dict(config or {})
    overlay["benchmark"] = {**SUITE_BENCHMARK, **overlay.get("benchmark", {})}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "config.yaml"
        path.write_text(yaml.safe_dump(overlay))
        result = CliRunner().invoke(
            main, ["demo", "--workdir", str(workdir), "--config", str(path)],
            env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


def executions(workdir: Path, run_id: int | None = None) -> dict[str, ExecutionRecord]:
    """The demo components' executions in one run (default: the latest) of workdir."""
    store = open_store(workdir / "metadata.sqlite")
    run_id = latest_run_id(store) if run_id is None else run_id
    return {r.component: r for r in run_executions(store, run_id) if r.component in COMPONENTS}


def gate_outcome(workdir: Path, run_id: int | None = None) -> tuple[dict, dict]:
    """PusherGate's pushed_model properties and decision.json in one run of workdir."""
    gate = executions(workdir, run_id)["PusherGate"]
    pushed = custom_properties(gate.outputs["pushed_model"][0])
    decision = json.loads((Path(gate.outputs["blessing"][0].uri) / "decision.json")
                          .read_text())
    return pushed, decision


@dataclass(frozen=True)
class DemoRun:
    """The session's first `servopt demo` (BeamDagRunner, configs/ defaults)."""

    workdir: Path
    run_id: int  # its pipeline_run context in the work directory's MLMD
    stdout: str

    def executions(self) -> dict[str, ExecutionRecord]:
        return executions(self.workdir, self.run_id)

    def gate_outcome(self) -> tuple[dict, dict]:
        return gate_outcome(self.workdir, self.run_id)

    def metrics(self) -> dict:
        result = self.executions()["ServingBenchmark"].outputs["benchmark"][0]
        return json.loads((Path(result.uri) / "metrics.json").read_text())


def first_demo(workdir: Path) -> DemoRun:
    stdout = demo(workdir)
    return DemoRun(workdir, latest_run_id(open_store(workdir / "metadata.sqlite")), stdout)


# The KFP local run's benchmark: batch 8, short windows, no concurrency sweep, a short
# configuration search; what the steps pass between them does not depend on the timings.
# Windows of 10 requests (window_seconds null), the fewest rounds an interval needs, and
# a few seconds of measuring on where a speedup's interval straddles the gate's line.
QUICK_BENCHMARK = {"concurrency": [], "window_seconds": None, "window_requests": 10,
                   "max_windows": 6, "min_requests": 1, "decision_budget_s": 10,
                   "warmup_requests": 2, "search_budget_s": 10}
