"""KFP components (kfp 2.x `dsl.component`) for the optimization steps, gate and push.

Each function only maps KFP artifacts and parameters onto the library; the bodies import
inside because KFP ships each function's source to its container on its own. They run in
the project's image (see Dockerfile), which has the package installed, hence
`install_kfp_package=False` (and `kfp.local` runs them in this very environment).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Model, Output

IMAGE = os.environ.get("SERVOPT_IMAGE", "servopt:0.1.0")


def servopt_component(func):
    return dsl.component(base_image=IMAGE, install_kfp_package=False)(func)


@servopt_component
def freeze(model_uri: str, eval_examples_uri: str, frozen: Output[Model]):
    """Freezes the SavedModel at `model_uri` (any layout servopt resolves)."""
    import json
    from pathlib import Path

    from components.core.steps import OptimizeConfig, optimize_model, parse_steps

    config = OptimizeConfig(examples=Path(eval_examples_uri) if eval_examples_uri else None)
    report = optimize_model(model_uri, frozen.path, parse_steps("freeze"), config)
    frozen.metadata.update(json.loads(json.dumps({
        "size_bytes_total": report.after.size_bytes.total,
        "node_count": report.after.node_count,
        "variable_count": report.after.variable_count,
        "verification_max_abs_diff": report.verification.max_abs_diff})))


@servopt_component
def optimize(model: Input[Model], eval_examples_uri: str, passes: str,
             optimized: Output[Model]):
    """Grappler passes (comma-separated names; empty: all) on a frozen model."""
    from pathlib import Path

    from components.core.optimize import DEFAULT_PASSES
    from components.core.steps import OptimizeConfig, Step, optimize_model

    chosen = [p.strip() for p in passes.split(",") if p.strip()] or list(DEFAULT_PASSES)
    config = OptimizeConfig(examples=Path(eval_examples_uri) if eval_examples_uri else None)
    report = optimize_model(model.path, optimized.path, [Step("optimize", "+".join(chosen))],
                            config)
    optimized.metadata.update({"size_bytes_total": report.after.size_bytes.total,
                               "node_count": report.after.node_count,
                               "verification_max_abs_diff":
                                   report.verification.max_abs_diff})


@servopt_component
def quantize(model: Input[Model], eval_examples_uri: str, mode: str,
             quantized: Output[Model]):
    """int8 / float16 weights, verified (top-1 agreement for classifiers)."""
    from pathlib import Path

    from components.core.steps import OptimizeConfig, Step, optimize_model

    config = OptimizeConfig(examples=Path(eval_examples_uri) if eval_examples_uri else None)
    report = optimize_model(model.path, quantized.path, [Step("quantize", mode)], config)
    quantized.metadata.update({"size_bytes_total": report.after.size_bytes.total,
                               "node_count": report.after.node_count,
                               "verification_top1_agreement":
                                   report.verification.top1_agreement})


@servopt_component
def gate(benchmark: Input[Artifact], thresholds: dict, decision: Output[Artifact]
         ) -> NamedTuple("GateOutputs", [("blessed", bool), ("chosen", str), ("reason", str)]):
    """Checks every benchmarked model against the thresholds; chooses the one to push."""
    import json
    from collections import namedtuple
    from pathlib import Path

    from components.core.gate import Thresholds, evaluate_gate, load_metrics

    metrics = load_metrics(Path(benchmark.path) / "metrics.json")
    candidates = {name: entry["path"] for name, entry in metrics["models"].items()}
    result = evaluate_gate(metrics, Thresholds.from_dict(thresholds), candidates)
    Path(decision.path).mkdir(parents=True, exist_ok=True)
    (Path(decision.path) / "decision.json").write_text(json.dumps(result.to_dict(), indent=2))
    for line in result.summary_lines():
        print(line)
    decision.metadata.update({"blessed": result.blessed, "chosen": result.chosen or ""})
    outputs = namedtuple("GateOutputs", ["blessed", "chosen", "reason"])
    return outputs(result.blessed, result.chosen or "", result.reason)


@servopt_component
def push(benchmark: Input[Artifact], chosen: str, push_destination: str
         ) -> NamedTuple("PushOutputs", [("pushed_version", int), ("pushed_destination", str)]):
    """Publishes the chosen model as a new TF Serving version, atomically."""
    from collections import namedtuple
    from pathlib import Path

    from components.core.gate import load_metrics, push_model

    metrics = load_metrics(Path(benchmark.path) / "metrics.json")
    result = push_model(metrics["models"][chosen]["path"], push_destination)
    print(f"pushed {chosen} as version {result.version} to {result.path}")
    outputs = namedtuple("PushOutputs", ["pushed_version", "pushed_destination"])
    return outputs(result.version, result.path)


__all__ = ["HTML", "Metrics", "freeze", "gate", "optimize", "push", "quantize"]
