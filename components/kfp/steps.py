"""KFP components (kfp 2.x `dsl.component`): freeze, optimize, quantize, benchmark, gate, push.

Each function only maps KFP artifacts and parameters onto the library; the bodies import
inside because KFP ships each function's source to its container on its own. They run in
the project's image (see Dockerfile; env SERVOPT_IMAGE at import, default
`servopt:0.1.0`), which has the package installed, hence `install_kfp_package=False`
(and `kfp.local.SubprocessRunner(use_venv=False)` runs them in this very environment).

Models are named as in the TFX pipeline: `trainer` (the model the pipeline was given, the
baseline), `Freezer`, `GraphOptimizer`, `Quantizer`, `Quantizer-bfloat16`,
`Quantizer-tflite-<mode>` (components.kfp.mapping, from the identity each producing step
records in its artifacts' metadata); outputs have the TFX components' output names
(components.core.producers: MODEL_OUTPUTS, spelled out in the signatures below because KFP
reads them from the source; tests/test_kfp_pipeline.py holds them equal). Each task sees
artifacts at its own local paths, so the gate and the push receive the model artifacts as
inputs and use their own paths; the paths recorded in metrics.json are the benchmark
task's and are never used by another task. Model artifacts hold the SavedModel at the
artifact's root (what Vertex AI's model upload and TF Serving's version directories
expect).
"""


import os
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Model, Output

IMAGE = os.environ.get("SERVOPT_IMAGE", "servopt:0.1.0")


def servopt_component(func):
    return dsl.component(base_image=IMAGE, install_kfp_package=False)(func)


@servopt_component
def freeze(model_uri: str, eval_examples_uri: str, verification: dict,
           frozen_model: Output[Model]):
    """Freezer: freezes the SavedModel at `model_uri` (any layout servopt resolves)."""
    from components.core.keras_deferred import defer_keras

    defer_keras()  # before TensorFlow: this step runs no Keras (keras_deferred)
    from components.core.identity import FREEZER
    from components.core.steps import Step
    from components.kfp.mapping import produce_outputs

    produce_outputs(FREEZER, model_uri, eval_examples_uri, {"frozen_model": frozen_model},
                    verification, {"frozen_model": Step("freeze")})


@servopt_component
def optimize(model: Input[Model], eval_examples_uri: str, graph_optimizer: dict,
             verification: dict, optimized_model: Output[Model]):
    """GraphOptimizer: the passes of `graph_optimizer` (GraphOptimizerSettings)."""
    from components.core.keras_deferred import defer_keras

    defer_keras()  # before TensorFlow: this step runs no Keras (keras_deferred)
    from components.core.identity import GRAPH_OPTIMIZER
    from components.core.steps import Step
    from components.kfp.mapping import produce_outputs, settings_from_parameter

    passes = settings_from_parameter("graph_optimizer", graph_optimizer).passes
    produce_outputs(GRAPH_OPTIMIZER, model.path, eval_examples_uri,
                    {"optimized_model": optimized_model}, verification,
                    {"optimized_model": Step("optimize", "+".join(passes))})


@servopt_component
def quantize(model: Input[Model], eval_examples_uri: str, quantizer: dict,
             verification: dict, quantized_model: Output[Model],
             bfloat16_model: Output[Model], tflite_float32_model: Output[Model],
             tflite_float16_model: Output[Model], tflite_dynamic_int8_model: Output[Model],
             tflite_full_int8_model: Output[Model]):
    """Quantizer, with the TFX Quantizer's outputs and settings (QuantizerSettings):
    int8 / float16 weights (fails the task if it leaves the tolerance), and the bfloat16
    and TFLite variants (one per mode), each recorded as not produced, with the reason,
    when it is not asked for, cannot apply here (bf16 without bf16 units) or leaves the
    tolerance."""
    given = dict(locals())  # the parameters by name: the outputs are named in producers
    from components.core.identity import QUANTIZER, QUANTIZER_OUTPUTS
    from components.core.producers import quantizer_steps
    from components.kfp.mapping import produce_outputs, settings_from_parameter

    settings = settings_from_parameter("quantizer", quantizer)
    produce_outputs(QUANTIZER, model.path, eval_examples_uri,
                    {name: given[name] for name in QUANTIZER_OUTPUTS},
                    verification, quantizer_steps(settings), settings)


@servopt_component
def benchmark(model_uri: str, frozen_model: Input[Model], optimized_model: Input[Model],
              quantized_model: Input[Model], bfloat16_model: Input[Model],
              tflite_float32_model: Input[Model], tflite_float16_model: Input[Model],
              tflite_dynamic_int8_model: Input[Model], tflite_full_int8_model: Input[Model],
              eval_examples_uri: str, label_key: str,
              batch_sizes: list, benchmark_settings: dict, results: Output[Artifact],
              metrics: Output[Metrics], report: Output[HTML]):
    """The ServingBenchmark: `trainer` (the baseline) and every produced candidate side by
    side (a TFLite variant on both of its runtimes).

    results: a directory with metrics.json (the gate's input) and report.html.
    metrics: the headline figures, shown in the KFP / Vertex AI UI. report: the HTML page.
    """
    given = dict(locals())
    import shutil
    from pathlib import Path

    from components.core.keras_deferred import defer_keras

    defer_keras()  # before TensorFlow: this step runs no Keras (keras_deferred)
    from components.core.benchmark import ModelSpec, run_benchmark
    from components.core.benchmark.outputs import metrics_checkpoint, write_results
    from components.core.benchmark.worker_log import WORKERS_DIR, worker_output
    from components.core.identity import MODEL_OUTPUTS
    from components.kfp.mapping import (
        METRICS_FILE,
        REPORT_FILE,
        headline_metrics,
        local_path,
        model_paths,
    )
    from components.kfp.mapping import benchmark_settings as settings_for

    examples = local_path(eval_examples_uri)
    settings = settings_for(batch_sizes, benchmark_settings, label_key, examples)
    paths = model_paths(model_uri, [given[name] for name in MODEL_OUTPUTS])
    out = Path(results.path)
    out.mkdir(parents=True, exist_ok=True)
    with worker_output(out / WORKERS_DIR):  # the workers' logs, beside metrics.json
        result = run_benchmark(
            [ModelSpec(name, Path(path)) for name, path in paths.items()],
            settings.for_run(Path(examples) if examples else None),
            progress=lambda line: print(f"ServingBenchmark: {line}", flush=True),
            checkpoint=metrics_checkpoint(out / METRICS_FILE))
    failure = write_results(result, out / METRICS_FILE, out / REPORT_FILE)
    data = result.to_dict()
    if failure is None:
        shutil.copyfile(out / REPORT_FILE, report.path)
    else:  # the measurements stand; the UI's page says why there is no report
        print(f"ServingBenchmark: the report failed: {failure}", flush=True)
        Path(report.path).write_text(f"<p>The report could not be made: {failure}</p>")
    for name, value in headline_metrics(result).items():
        metrics.log_metric(name, value)
    failed = result.failed()
    for name, error in failed.items():
        print(f"ServingBenchmark: {name} failed: {error}", flush=True)
    results.metadata.update({"baseline": data["baseline"], "models": ",".join(data["models"]),
                             "failed": ",".join(failed)})


@servopt_component
def gate(results: Input[Artifact], thresholds: dict, model_uri: str,
         frozen_model: Input[Model], optimized_model: Input[Model],
         quantized_model: Input[Model], bfloat16_model: Input[Model],
         tflite_float32_model: Input[Model], tflite_float16_model: Input[Model],
         tflite_dynamic_int8_model: Input[Model], tflite_full_int8_model: Input[Model],
         push_destination: str, decision: Output[Artifact]
         ) -> NamedTuple("GateOutputs", [("blessed", bool), ("chosen", str), ("reason", str)]):
    """Checks every (benchmarked model, TF Serving configuration) pair (each model at this
    task's own path: the safety scan reads it) against the thresholds and chooses the one
    to push; decision.json records why, and the command that serves it from
    `push_destination`."""
    from components.core.keras_deferred import defer_keras

    defer_keras()  # before TensorFlow: this step runs no Keras (keras_deferred)
    given = dict(locals())
    import json
    from collections import namedtuple
    from pathlib import Path

    from components.core.gate import evaluate_gate, load_metrics, log_lines
    from components.core.identity import MODEL_OUTPUTS
    from components.kfp.mapping import (
        DECISION_FILE,
        METRICS_FILE,
        model_paths,
        thresholds_from_parameter,
    )

    metrics = load_metrics(Path(results.path) / METRICS_FILE)
    candidates = model_paths(model_uri, [given[name] for name in MODEL_OUTPUTS])
    judged = thresholds_from_parameter(thresholds)
    result = evaluate_gate(metrics, judged, candidates).with_destination(push_destination)
    if result.blessed and judged.release.mode == "labels":
        from dataclasses import replace

        from components.core.gate.release import config_path, server_command

        result = replace(result, server_command=server_command(
            result.server_command, config_path(push_destination, judged.release),
            judged.release))
    Path(decision.path).mkdir(parents=True, exist_ok=True)
    (Path(decision.path) / DECISION_FILE).write_text(json.dumps(result.to_dict(), indent=2))
    for line in log_lines(result):
        print(line, flush=True)
    decision.metadata.update({"blessed": int(result.blessed), "chosen": result.chosen or "",
                              "configuration": result.label or "",
                              "server_command": " ".join(result.server_command),
                              "reason": result.reason})
    outputs = namedtuple("GateOutputs", ["blessed", "chosen", "reason"])
    return outputs(result.blessed, result.chosen or "", result.reason)


@servopt_component
def push(chosen: str, model_uri: str, frozen_model: Input[Model],
         optimized_model: Input[Model], quantized_model: Input[Model],
         bfloat16_model: Input[Model], tflite_float32_model: Input[Model],
         tflite_float16_model: Input[Model], tflite_dynamic_int8_model: Input[Model],
         tflite_full_int8_model: Input[Model], push_destination: str,
         eval_examples_uri: str,
         keep_last: int, decision: Input[Artifact], pushed: Output[Artifact]
         ) -> NamedTuple("PushOutputs", [("pushed_version", int), ("pushed_destination", str)]):
    """Publishes the chosen model (from this task's own inputs) as a new TF Serving version
    under `push_destination`, atomically, with warm-up requests from the eval examples and
    the TF Serving configuration the gate chose (`decision`: its decision.json).
    keep_last: keep only the newest N versions (0: keep all)."""
    from components.core.keras_deferred import defer_keras

    defer_keras()  # before TensorFlow: this step runs no Keras (keras_deferred)
    given = dict(locals())
    import json
    from collections import namedtuple
    from pathlib import Path

    from components.core.gate import GateDecision, push_model
    from components.core.gate.release import ReleaseConfig, check_release, release_pushed
    from components.core.gate.release_mlmd import artifact_properties
    from components.core.identity import MODEL_OUTPUTS
    from components.kfp.mapping import (
        DECISION_FILE,
        PUSH_FILE,
        chosen_path,
        local_path,
        model_paths,
    )

    paths = model_paths(model_uri, [given[name] for name in MODEL_OUTPUTS])
    examples = local_path(eval_examples_uri)
    gate_decision = GateDecision.from_dict(
        json.loads((Path(decision.path) / DECISION_FILE).read_text()))
    # The gate config's release: section, as the gate recorded it (one source).
    release = ReleaseConfig.from_dict(gate_decision.thresholds.get("release"), DECISION_FILE)
    labels = release.mode == "labels"
    if labels:
        check_release(push_destination, release)  # a config TF Serving refuses: no push
    result = push_model(chosen_path(paths, chosen), push_destination,
                        keep_last=None if labels else keep_last or None,
                        warmup_examples=examples or None,
                        serving_runtime=gate_decision.runtime,
                        configuration=gate_decision.configuration,
                        server_command=gate_decision.server_command)
    released = {}
    if labels:
        released = artifact_properties(release_pushed(push_destination, result.version,
                                                      release, keep_last=keep_last or None))
        print(f"release: {released['release_note']}; {released['release_pending']}",
              flush=True)
    record = {"pushed": 1, "pushed_model_name": chosen,
              "pushed_configuration": gate_decision.label or "default",
              "server_command": gate_decision.server_command, **result.to_dict(), **released}
    Path(pushed.path).mkdir(parents=True, exist_ok=True)
    (Path(pushed.path) / PUSH_FILE).write_text(json.dumps(record, indent=2))
    pushed.metadata.update({**released, "pushed": 1, "pushed_version": result.version,
                            "pushed_destination": result.path,
                            "pushed_base_directory": result.base_dir,
                            "pushed_model_name": chosen})
    print(f"pushed {chosen} as version {result.version} to {result.path}", flush=True)
    outputs = namedtuple("PushOutputs", ["pushed_version", "pushed_destination"])
    return outputs(result.version, result.path)


@servopt_component
def release(push_destination: str, operation: str, thresholds: dict, model_config: str,
            check_promotion: bool, eval_examples_uri: str, released: Output[Artifact]
            ) -> NamedTuple("ReleaseOutputs", [("stable", int), ("canary", int)]):
    """A release step on the TF Serving model config of `push_destination`: `label`
    (step 2 of a labels push, once the version is loaded), `promote` (after the gate's
    paired check when `check_promotion`), `rollback` or `rollback_canary`. `thresholds`:
    the gate config (its release: section; promote's thresholds); `model_config`: ''
    for the section's file. Outputs: the versions holding the labels afterwards (-1:
    none); `released` records the labels before and after."""
    import json
    from collections import namedtuple
    from dataclasses import replace
    from pathlib import Path

    from components.core.gate import release as rel
    from components.core.gate.release_mlmd import artifact_properties
    from components.kfp.mapping import local_path, thresholds_from_parameter

    judged = thresholds_from_parameter(thresholds)
    config = judged.release if not model_config else replace(judged.release,
                                                             model_config=model_config)
    if operation == "label":
        result = rel.label(push_destination, config)
    elif operation == "promote":
        check = None
        if check_promotion and config.check_promotion:
            from components.core.gate.release_check import promotion_check

            check = promotion_check(push_destination, judged,
                                    examples=local_path(eval_examples_uri) or None)
        result = rel.promote(push_destination, config, check=check)
    elif operation in ("rollback", "rollback_canary"):
        result = rel.rollback(push_destination, config,
                              canary_only=operation == "rollback_canary")
    else:
        from components.core.errors import ServoptError

        raise ServoptError(f"release operation {operation!r}: use label, promote, rollback "
                           "or rollback_canary")
    properties = artifact_properties(result)
    Path(released.path).mkdir(parents=True, exist_ok=True)
    (Path(released.path) / "release.json").write_text(json.dumps(result.to_dict(), indent=2))
    released.metadata.update(properties)
    print(f"{operation}: {result.labels_before} -> {result.labels_after}", flush=True)
    outputs = namedtuple("ReleaseOutputs", ["stable", "canary"])
    return outputs(result.labels_after.get(config.stable_label, -1),
                   result.labels_after.get(config.canary_label, -1))


__all__ = ["HTML", "IMAGE", "Metrics", "benchmark", "freeze", "gate", "optimize", "push",
           "quantize", "release"]
