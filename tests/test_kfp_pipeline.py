"""The Kubeflow / Vertex AI pipeline: compiled, run here for real, submitted.

Local runs use kfp.local's SubprocessRunner in this environment: every step runs in its
own Python process on the seed CNN and the digits eval examples, with small benchmark
settings (batch 8, short windows, no concurrency sweep). One full run, blessed, is shared
by the session (fixture `kfp_blessed_run`, tests/pipeline_runs.py); a second, blocked by
its thresholds, runs through `servopt kfp run-local` with the variants and the search off.
Nothing is mocked,
except Vertex AI's PipelineJob in the one test that says so (a cloud API cannot be
reached from here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from kfp.local import io as kfp_io

from components.cli import main
from components.core.bf16 import bf16_unavailable_reason
from components.core.config import QuantizerSettings
from components.core.errors import ServoptError
from components.core.gate import versions
from components.core.identity import MODEL_OUTPUTS, QUANTIZER_OUTPUTS, TFLITE_OUTPUTS
from components.kfp import steps
from components.kfp.local_conditions import evaluate_condition
from components.kfp.pipeline import (
    DEFAULT_SETTINGS,
    compile_pipeline,
    default_thresholds,
    run_local,
)
from components.kfp.steps import IMAGE
from tests.pipeline_runs import BF16, QUICK_BENCHMARK, TFLITE

STEPS = ["freeze", "optimize", "quantize", "benchmark", "gate", "push"]
PARAMETERS = {"model_uri", "eval_examples_uri", "push_destination", "label_key",
              "thresholds", "batch_sizes", "benchmark_settings", "graph_optimizer", "quantizer",
              "verification", "keep_last"}
# The TFX pipeline's names: the baseline, then each candidate by its producer's identity.
VERSIONS = ["trainer", "Freezer", "GraphOptimizer", "Quantizer", *BF16, *TFLITE]
ROWS = ["trainer", "Freezer", "GraphOptimizer", "Quantizer", *BF16,
        *(f"{name}@{runtime}" for name in TFLITE for runtime in ("tflite", "tensorflow"))]
BLESSED_CONDITION = "inputs.parameter_values['pipelinechannel--gate-blessed'] == true"


def kfp(*args: str):
    return CliRunner().invoke(main, ["kfp", *args])


def one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


# ------------------------------------------------------------------ compiled pipeline

@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    path = compile_pipeline(tmp_path_factory.mktemp("compiled") / "pipeline.yaml")
    return yaml.safe_load(path.read_text())


def tasks_by_dag(spec: dict) -> dict[str, dict]:
    """DAG name ('root' or a component such as 'comp-condition-1') -> its tasks."""
    dags = {"root": spec["root"]["dag"]["tasks"]}
    for name, component in spec["components"].items():
        if "dag" in component:
            dags[name] = component["dag"]["tasks"]
    return dags


def test_one_task_per_step(compiled):
    executed = {name: task for tasks in tasks_by_dag(compiled).values()
                for name, task in tasks.items() if "executorLabel" in
                compiled["components"][task["componentRef"]["name"]]}
    assert sorted(executed) == sorted(STEPS)
    assert sorted(compiled["deploymentSpec"]["executors"]) == sorted(
        f"exec-{step}" for step in STEPS)


def test_the_pipeline_takes_the_model_examples_destination_and_settings(compiled):
    parameters = compiled["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == PARAMETERS
    required = {name for name, p in parameters.items() if not p.get("isOptional")}
    assert required == {"model_uri", "eval_examples_uri", "push_destination"}
    assert parameters["label_key"]["defaultValue"] == "label"
    assert parameters["thresholds"]["defaultValue"] == default_thresholds()
    assert parameters["thresholds"]["defaultValue"]["vs_baseline"]["min_top1_agreement"] == 0.99
    assert parameters["batch_sizes"]["defaultValue"] == [1, 100]
    # The Quantizer's settings, as the TFX Quantizer and configs/optimization.yaml have them.
    quantizer = parameters["quantizer"]["defaultValue"]
    assert quantizer == DEFAULT_SETTINGS["quantizer"]
    assert quantizer["tflite"] == QuantizerSettings().tflite and quantizer["bfloat16"]


def test_the_steps_spell_out_the_producers_output_names(compiled):
    """KFP reads the steps' parameters from their source, so the names are written there;
    they are the TFX components' (components.core.producers), every variant included."""
    assert set(steps.quantize.component_spec.outputs) == set(QUANTIZER_OUTPUTS)
    for step in (steps.benchmark, steps.gate, steps.push):
        models = [name for name, spec in step.component_spec.inputs.items()
                  if spec.type == "system.Model@0.0.1"]
        assert models == list(MODEL_OUTPUTS), step.name
    outputs = compiled["root"]["outputDefinitions"]["artifacts"]
    assert set(MODEL_OUTPUTS) <= set(outputs)


def test_the_push_runs_only_when_the_gate_blesses_a_model(compiled):
    dags = tasks_by_dag(compiled)
    assert {"freeze", "optimize", "quantize", "benchmark", "gate"} <= set(dags["root"])
    assert not any("triggerPolicy" in task for name, task in dags["root"].items()
                   if name in STEPS)
    (branch,) = [name for name, tasks in dags.items() if "push" in tasks]
    (condition_task,) = [task for task in dags["root"].values()
                         if task["componentRef"]["name"] == branch]
    assert condition_task["triggerPolicy"]["condition"] == BLESSED_CONDITION
    assert "gate" in condition_task["dependentTasks"]
    assert dags[branch]["push"]["cachingOptions"] == {}  # never served from the cache


def test_every_step_runs_in_the_projects_image(compiled, tmp_path):
    images = {e["container"]["image"] for e in compiled["deploymentSpec"]["executors"].values()}
    assert images == {IMAGE}
    result = kfp("compile", "--output", str(tmp_path / "p.yaml"),
                 "--image", "europe-docker.pkg.dev/acme/ml/servopt:0.1.0")
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        "europe-docker.pkg.dev/acme/ml/servopt:0.1.0"}



def test_the_benchmark_task_can_be_given_the_serving_machines_cpus(tmp_path):
    """It ranks variants and TF Serving settings on its own CPU: on KFP / Vertex its
    resources are compile-time settings; the other tasks keep the cluster's default."""
    result = kfp("compile", "--output", str(tmp_path / "p.yaml"), "--benchmark-cpu", "4",
                 "--benchmark-memory", "16G")
    assert result.exit_code == 0, result.output
    executors = yaml.safe_load((tmp_path / "p.yaml").read_text())["deploymentSpec"][
        "executors"]
    sized = {name: e["container"]["resources"] for name, e in executors.items()
             if "resources" in e["container"]}
    (name, resources), = sized.items()
    assert "benchmark" in name
    assert resources["resourceCpuLimit"] == resources["resourceCpuRequest"] == "4"
    assert resources["resourceMemoryLimit"] == "16G"


# ------------------------------------------------------------------ local runs

# The blessed run is the session's `kfp_blessed_run` (conftest.py): configs/thresholds.yaml
# read at batch 8, the server serving model.tflite, the Quantizer's defaults.

@pytest.mark.e2e
def test_local_run_writes_the_tfx_quantizers_variants_verified(kfp_blessed_run):
    models = kfp_blessed_run.models
    for key in ("frozen_model", "optimized_model", "quantized_model",
                *TFLITE_OUTPUTS.values()):
        assert (models[key] / "saved_model.pb").is_file(), key
        assert kfp_blessed_run.model_metadata[key]["verification_passed"] == 1
    for mode, key in TFLITE_OUTPUTS.items():
        assert (models[key] / "model.tflite").is_file()
        tflite = kfp_blessed_run.model_metadata[key]
        assert tflite["servopt_component"] == "Quantizer"
        assert tflite["servopt_variant"] == f"tflite-{mode}"
        assert tflite["serving_flags"] == "--prefer_tflite_model=true"
        assert tflite["tflite_verification_top1_agreement"] >= 0.99
    bf16 = kfp_blessed_run.model_metadata["bfloat16_model"]
    reason = bf16_unavailable_reason()
    assert bf16["produced"] == (0 if reason else 1)
    if reason:  # this CPU: recorded, nothing published, as the TFX Quantizer does
        assert reason in bf16["skipped_reason"]
    size = {name: kfp_blessed_run.metrics()["models"][name]["size_bytes"] for name in VERSIONS[:4]}
    assert size["Freezer"] < 0.6 * size["trainer"]  # Keras 3 stores the weights twice
    assert size["Quantizer"] < 0.35 * size["GraphOptimizer"]  # int8 weights


@pytest.mark.e2e
def test_the_benchmark_measures_every_variant_by_the_tfx_name(kfp_blessed_run):
    metrics = kfp_blessed_run.metrics()
    assert metrics["baseline"] == "trainer"
    models = metrics["models"]
    default = [name for name, model in models.items()
               if (model.get("runtime") or {}).get("label", "default") == "default"]
    assert default == ROWS  # TF Serving's default settings: every row, in pipeline order
    for name in set(models) - set(default):  # the configuration search's settings
        row, label = name.split(":", 1)
        assert row.split("@")[0] in VERSIONS and models[name]["runtime"]["label"] == label, name
    for name, model in models.items():
        assert model["error"] is None, name
        if name in default:
            assert set(model["batches"]) == {"8"}, name
        else:  # searched: at batch 8, or (batching) under concurrent clients
            assert model["batches"] or model["concurrency"], name
        for batch in model["batches"].values():
            assert batch["p99_ms"] >= batch["p50_ms"] > 0
        assert model["accuracy"]["accuracy"] > 0.9
    for name in TFLITE:
        assert metrics["models"][f"{name}@tflite"]["runtime"]["runtime"] == "tflite"
    assert (kfp_blessed_run.results / "report.html").is_file()
    headline = kfp_blessed_run.headline
    for name in ROWS:
        assert headline[f"{name}_p50_ms_batch8"] > 0 and headline[f"{name}_p99_ms_batch8"] > 0
        assert headline[f"{name}_size_bytes"] > 0
    assert headline["Quantizer_speedup_p50_batch8"] > 0
    assert headline["Quantizer_top1_agreement"] >= 0.99


@pytest.mark.e2e
def test_the_gate_judges_every_variant_and_a_blessed_gate_pushes_its_choice(kfp_blessed_run):
    decision = kfp_blessed_run.decision
    # every (version, configuration) pair the benchmark measured on the server's runtime
    version_of = {c["name"]: c["version"] for c in decision["candidates"]}
    assert sorted(set(version_of.values())) == sorted(VERSIONS)
    judged = {c["name"]: c["row"] for c in decision["candidates"]}
    for name in TFLITE:
        assert judged[name] == f"{name}@tflite"  # prefer_tflite_model
    assert {c["candidate"] for c in decision["checks"]
            if c["threshold"] == "vs_baseline.min_speedup_p50"} == set(version_of)
    assert decision["blessed"] and decision["chosen"] in VERSIONS
    assert decision["first_push"] and decision["primary_batch_size"] == 8
    pushed = kfp_blessed_run.pushed
    assert pushed["pushed_model_name"] == decision["chosen"]
    assert pushed["pushed_configuration"] == decision["label"]
    assert pushed["server_command"] == decision["server_command"]
    assert f"--model_base_path={Path(pushed['base_dir'])}" in decision["server_command"]
    serving = Path(pushed["base_dir"])
    assert versions(serving) == [kfp_blessed_run.pushed_version]
    version_dir = serving / str(kfp_blessed_run.pushed_version)
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "assets.extra" / "tf_serving_warmup_requests").is_file()


@pytest.mark.e2e
@pytest.mark.slow  # a second KFP run (2.5 min on 2 cores): see docs/testing.md
def test_run_local_cli_with_failing_thresholds_pushes_nothing(seed_cnn_model, digits_examples,
                                                              tmp_path):
    thresholds = tmp_path / "impossible.yaml"
    thresholds.write_text("primary_batch_size: 8\nvalue:\n  max_p99_ms: 0.001\n")
    quick = tmp_path / "quick.yaml"
    quick.write_text(yaml.safe_dump({**QUICK_BENCHMARK, "search_budget_s": 0}))  # no pairs
    recipe = tmp_path / "recipe.yaml"  # the variants off: the Quantizer's weights only
    recipe.write_text("quantizer: {bfloat16: false, tflite: null}\n"
                      "verification: {num_examples: 64}\n")
    serving = tmp_path / "serving"
    result = kfp("run-local", "--model", str(seed_cnn_model), "--examples", str(digits_examples),
                 "--push-destination", str(serving), "--thresholds", str(thresholds),
                 "--batch-sizes", "8", "--benchmark-config", str(quick),
                 "--recipe", str(recipe),
                 "--pipeline-root", str(tmp_path / "root"))
    assert result.exit_code == 0, result.output
    assert "nothing pushed" in result.stdout
    assert not serving.exists() or versions(serving) == []
    (decision_file,) = (tmp_path / "root").glob("*/gate/decision/decision.json")
    decision = json.loads(decision_file.read_text())
    assert not decision["blessed"] and decision["chosen"] is None
    too_slow = {c["candidate"] for c in decision["checks"]
                if c["threshold"] == "value.max_p99_ms" and not c["passed"]}
    assert too_slow == {"trainer", "Freezer", "GraphOptimizer", "Quantizer"}  # no variants
    assert not list((tmp_path / "root").glob("*/*/push"))  # the push step never ran


def test_run_local_refuses_a_primary_batch_size_the_benchmark_does_not_measure(tmp_path):
    with pytest.raises(ServoptError, match="primary_batch_size 100 is not among"):
        run_local(tmp_path / "model", tmp_path / "examples", tmp_path / "serving",
                  tmp_path / "root", batch_sizes=[8])


# ------------------------------------------------------------------ the push's condition

def store(**task_outputs) -> kfp_io.IOStore:
    io_store = kfp_io.IOStore()
    io_store.put_parent_input("label_key", "label")
    for key, value in task_outputs.items():
        task, output = key.split("__")
        io_store.put_task_output(task, output, value)
    return io_store


@pytest.mark.parametrize(("blessed", "expected"), [(True, True), (False, False)])
def test_the_compiled_condition_is_evaluated_for_local_runs(blessed, expected):
    assert evaluate_condition(BLESSED_CONDITION, store(gate__blessed=blessed)) is expected


@pytest.mark.parametrize(("condition", "expected"), [
    ("inputs.parameter_values['pipelinechannel--label_key'] == 'label'", True),
    ("int(inputs.parameter_values['pipelinechannel--gate-count']) > 2", True),
    ("!(inputs.parameter_values['pipelinechannel--gate-blessed'] == true)", True),
    ("inputs.parameter_values['pipelinechannel--gate-blessed'] == true && "
     "inputs.parameter_values['pipelinechannel--gate-count'] >= 4", False),
    ("inputs.parameter_values['pipelinechannel--gate-chosen'] != 'quantized' || "
     "inputs.parameter_values['pipelinechannel--gate-count'] < 4", True),
])
def test_conditions_in_the_compilers_cel_subset(condition, expected):
    values = store(gate__blessed=False, gate__count=3, gate__chosen="frozen")
    assert evaluate_condition(condition, values) is expected


@pytest.mark.parametrize(("condition", "message"), [
    ("inputs.parameter_values['pipelinechannel--gate-missing'] == true", "neither"),
    ("inputs.parameter_values['pipelinechannel--gate-blessed'] in [true]", "cannot evaluate"),
])
def test_a_condition_that_cannot_be_evaluated_fails_loudly(condition, message):
    with pytest.raises(ServoptError, match=message):
        evaluate_condition(condition, store(gate__blessed=True))


# ------------------------------------------------------------------ submit

@pytest.fixture(scope="module")
def package(compiled, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("package") / "pipeline.yaml"
    path.write_text(yaml.safe_dump(compiled))
    return path


REQUIRED_ARGS = ["--model", "gs://acme/models/digits/1", "--examples",
                 "gs://acme/examples/digits", "--push-destination", "gs://acme/serving/digits"]


@pytest.mark.parametrize(("args", "message"), [
    ([], "nowhere to submit to: pass --host URL"),
    (["--host", "http://kfp.example", "--vertex"], "either --host"),
    (["--vertex"], "--vertex needs --project, --region, --pipeline-root"),
    (["--vertex", "--project", "acme", "--region", "us-central1"],
     "--vertex needs --pipeline-root"),
    (["--vertex", "--project", "acme", "--region", "us-central1", "--pipeline-root",
      "/tmp/root"], "give a gs://BUCKET/PATH"),
])
def test_submit_says_which_arguments_are_missing(package, args, message):
    one_line_error(kfp("submit", str(package), *REQUIRED_ARGS, *args), message)


def test_submit_without_the_pipelines_arguments_names_them(package):
    result = kfp("submit", str(package), "--host", "http://kfp.example")
    one_line_error(result, "missing pipeline argument(s)")
    assert all(name in result.stderr for name in ("model_uri", "eval_examples_uri",
                                                   "push_destination"))


def test_submit_of_a_file_that_is_not_a_compiled_pipeline(tmp_path):
    (tmp_path / "notes.yaml").write_text("hello: world\n")
    one_line_error(kfp("submit", str(tmp_path / "notes.yaml"), "--host", "http://x"),
                   "not a compiled KFP pipeline")
    one_line_error(kfp("submit", str(tmp_path / "missing.yaml"), "--host", "http://x"),
                   "compile the pipeline first")


def test_submit_to_an_unreachable_kfp_host_fails_in_one_line(package):
    one_line_error(kfp("submit", str(package), *REQUIRED_ARGS, "--host",
                       "http://127.0.0.1:9"),
                   "http://127.0.0.1:9: the Kubeflow Pipelines host did not accept the run")


def test_submit_to_vertex_creates_a_pipeline_job(package, monkeypatch):
    """Vertex AI cannot be reached from here: google.cloud.aiplatform.PipelineJob is
    replaced by a recorder; everything up to the API call is real."""
    from google.cloud import aiplatform

    calls = []

    class RecordingPipelineJob:
        name = "servopt-20260101000000"

        def __init__(self, **kwargs):
            calls.append(("init", kwargs))

        def submit(self, **kwargs):
            calls.append(("submit", kwargs))

    monkeypatch.setattr(aiplatform, "PipelineJob", RecordingPipelineJob)
    result = kfp("submit", str(package), *REQUIRED_ARGS, "--vertex", "--project", "acme",
                 "--region", "europe-west4", "--pipeline-root", "gs://acme/pipeline_root",
                 "--batch-sizes", "1,8", "--param", 'thresholds={"primary_batch_size": 8}',
                 "--service-account", "runner@acme.iam.gserviceaccount.com")
    assert result.exit_code == 0, result.output
    (_, init), (_, submitted) = calls
    assert init["template_path"] == str(package)
    assert init["project"] == "acme" and init["location"] == "europe-west4"
    assert init["pipeline_root"] == "gs://acme/pipeline_root"
    assert init["parameter_values"] == {
        "model_uri": "gs://acme/models/digits/1", "eval_examples_uri": "gs://acme/examples/digits",
        "push_destination": "gs://acme/serving/digits", "batch_sizes": [1, 8],
        "thresholds": {"primary_batch_size": 8}}
    assert submitted["service_account"] == "runner@acme.iam.gserviceaccount.com"
    assert "locations/europe-west4/pipelines/runs/servopt-20260101000000" in result.stdout
