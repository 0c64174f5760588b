"""The optimization pipeline on Kubeflow Pipelines and Vertex AI Pipelines (kfp 2.x).

    freeze -> optimize -> quantize -> benchmark -> gate -> push (only when the gate passes)

Every step is a component of components.kfp.steps, run in the project's image (Dockerfile).
The pipeline takes a trained model (`model_uri`: any SavedModel layout servopt resolves,
e.g. a TFX Trainer's `Format-Serving/`), labelled eval examples (TFRecords of tf.Example;
a TFX Examples artifact: its eval split) and a TF Serving model base directory to push to.

- `compile_pipeline` writes the pipeline as KFP IR YAML, which KFP and Vertex AI accept.
- `submit` sends a compiled pipeline to a KFP host (kfp.Client) or to Vertex AI Pipelines
  (google.cloud.aiplatform.PipelineJob).
- `run_local` runs it here, for real, with kfp.local's SubprocessRunner in this
  environment (each step in its own Python process, artifacts under `pipeline_root`).

The model-producing steps offer what the TFX components do, under the same names: the
Quantizer's weight-quantized model and its bfloat16 and TFLite variants (one per mode),
with the settings groups `graph_optimizer`, `quantizer` and `verification`
(components.core.config, the sections of configs/optimization.yaml; null written as '').

Defaults: the settings groups' dataclasses; `thresholds` is the packaged
configs/thresholds.yaml (= Thresholds()); `batch_sizes`, `label_key` and
`benchmark_settings` come from the packaged configs/benchmark.yaml, read through
BenchmarkConfig (nulls dropped: KFP parameters cannot hold null, and an absent key means
the same). The gate's checks against the model served now
(`vs_served`) need ML Metadata's history of pushes, which only the TFX pipelines have:
here every push is judged as a first push, and the decision says so.
"""

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Metrics, Model

from components.core.benchmark.config import BenchmarkConfig
from components.core.config import SETTINGS_GROUPS
from components.core.errors import ServoptError, first_line
from components.core.gate import GateDecision, Thresholds
from components.core.identity import MODEL_OUTPUTS, QUANTIZER_OUTPUTS
from components.core.yaml_io import parse_yaml
from components.kfp import steps
from components.kfp.local_conditions import local_conditions
from components.kfp.mapping import (
    DECISION_FILE,
    METRICS_FILE,
    OWN_PARAMETERS,
    PUSH_FILE,
    benchmark_settings,
    parameter_value,
    settings_from_parameter,
    settings_parameter,
    thresholds_from_parameter,
)
from components.kfp.resources import TaskResources

PIPELINE_NAME = "servopt"
REQUIRED = ("model_uri", "eval_examples_uri", "push_destination")


def default_thresholds(path: Path | None = None) -> dict:
    """A thresholds YAML (default: the packaged one), validated and complete, as a KFP
    parameter value."""
    return parameter_value(Thresholds.from_yaml(path).to_dict())


def default_benchmark(path: Path | None = None) -> tuple[list[int], str, dict]:
    """(batch sizes, label key, the other settings) of a benchmark YAML (default: the
    packaged one), as KFP parameter values."""
    settings = BenchmarkConfig.from_yaml(path).to_dict()
    own = {key: settings.pop(key) for key in OWN_PARAMETERS}
    return own["batch_sizes"], own["label_key"] or "", parameter_value(settings)


DEFAULT_THRESHOLDS = default_thresholds()
DEFAULT_BATCH_SIZES, DEFAULT_LABEL_KEY, DEFAULT_BENCHMARK_SETTINGS = default_benchmark()
DEFAULT_SETTINGS = {name: settings_parameter(cls()) for name, cls in SETTINGS_GROUPS.items()}
# Every model output (a variant that was not made has `produced` 0 in its metadata), then
# results (metrics.json and report.html), headline (the benchmark's headline figures),
# report (the benchmark's HTML report) and decision (decision.json).
PipelineOutputs = NamedTuple("PipelineOutputs", [
    *((name, Model) for name in MODEL_OUTPUTS),
    ("results", Artifact), ("headline", Metrics), ("report", HTML), ("decision", Artifact)])


def build_pipeline(image: str = steps.IMAGE,
                   benchmark_resources: TaskResources | None = None):
    """The pipeline with every step's container image set to `image`, and the benchmark
    task's machine set by `benchmark_resources` (default: unset, the cluster's default)."""

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Freeze, optimize and quantize a trained TensorFlow model, "
                              "benchmark every variant against it, and push the best one "
                              "to TF Serving when it passes the thresholds.")
    def servopt_pipeline(model_uri: str, eval_examples_uri: str, push_destination: str,
                         label_key: str = DEFAULT_LABEL_KEY,
                         thresholds: dict = DEFAULT_THRESHOLDS,
                         batch_sizes: list = DEFAULT_BATCH_SIZES,
                         benchmark_settings: dict = DEFAULT_BENCHMARK_SETTINGS,
                         graph_optimizer: dict = DEFAULT_SETTINGS["graph_optimizer"],
                         quantizer: dict = DEFAULT_SETTINGS["quantizer"],
                         verification: dict = DEFAULT_SETTINGS["verification"],
                         keep_last: int = 0) -> PipelineOutputs:
        frozen = steps.freeze(model_uri=model_uri, eval_examples_uri=eval_examples_uri,
                              verification=verification)
        optimized = steps.optimize(model=frozen.outputs["frozen_model"],
                                   eval_examples_uri=eval_examples_uri,
                                   graph_optimizer=graph_optimizer, verification=verification)
        quantized = steps.quantize(model=optimized.outputs["optimized_model"],
                                   eval_examples_uri=eval_examples_uri, quantizer=quantizer,
                                   verification=verification)
        models = {"frozen_model": frozen.outputs["frozen_model"],
                  "optimized_model": optimized.outputs["optimized_model"],
                  **{key: quantized.outputs[key] for key in QUANTIZER_OUTPUTS}}
        measured = steps.benchmark(model_uri=model_uri, **models,
                                   eval_examples_uri=eval_examples_uri, label_key=label_key,
                                   batch_sizes=batch_sizes,
                                   benchmark_settings=benchmark_settings)
        gate = steps.gate(results=measured.outputs["results"], thresholds=thresholds,
                          model_uri=model_uri, **models, push_destination=push_destination)
        tasks = [frozen, optimized, quantized, measured, gate]
        with dsl.If(gate.outputs["blessed"] == True):  # noqa: E712 (a KFP condition)
            pushed = steps.push(chosen=gate.outputs["chosen"], model_uri=model_uri, **models,
                                push_destination=push_destination,
                                eval_examples_uri=eval_examples_uri, keep_last=keep_last,
                                decision=gate.outputs["decision"])
            pushed.set_caching_options(False)  # a push has an effect outside the pipeline
            tasks.append(pushed)
        for task in tasks:
            task.set_container_image(image)
        if benchmark_resources is not None:
            benchmark_resources.apply(measured)
        return PipelineOutputs(*(models[key] for key in MODEL_OUTPUTS),
                               measured.outputs["results"], measured.outputs["metrics"],
                               measured.outputs["report"], gate.outputs["decision"])

    return servopt_pipeline


servopt_pipeline = build_pipeline()


def compile_pipeline(output: Path, image: str | None = None,
                     benchmark_resources: TaskResources | None = None) -> Path:
    """Writes the pipeline as KFP IR YAML (what `kfp.Client` and Vertex AI's PipelineJob
    take); every step runs in `image` (default: env SERVOPT_IMAGE, else servopt:0.1.0).
    benchmark_resources: the benchmark task's CPU and memory requests and limits, so it
    measures on the serving machine type (components.kfp.resources); default unset."""
    from kfp import compiler

    output = Path(output)
    if output.suffix not in (".yaml", ".yml"):
        raise ServoptError(f"{output}: the compiled pipeline is YAML; name it *.yaml")
    if not output.parent.is_dir():
        raise ServoptError(f"{output.parent}: no such directory; create it first")
    resources = benchmark_resources if benchmark_resources and benchmark_resources.is_set() \
        else None
    pipeline = (servopt_pipeline if image in (None, steps.IMAGE) and resources is None
                else build_pipeline(image or steps.IMAGE, resources))
    compiler.Compiler().compile(pipeline, package_path=str(output))
    return output


# ---------------------------------------------------------------- arguments

def pipeline_arguments(model_uri: str, eval_examples_uri: str, push_destination: str,
                       **optional: Any) -> dict[str, Any]:
    """The pipeline's arguments; optional ones left out (None) take the defaults. A null
    inside a dict or list (e.g. `window_seconds: None` in benchmark_settings) is written
    as KFP parameters hold it ('')."""
    arguments = {"model_uri": str(model_uri), "eval_examples_uri": str(eval_examples_uri),
                 "push_destination": str(push_destination)}
    arguments.update({k: parameter_value(v) for k, v in optional.items() if v is not None})
    return arguments


def check_arguments(arguments: dict[str, Any]) -> None:
    """Fails in a second, not after minutes of freezing, on arguments the pipeline cannot
    run with: missing or unknown names, bad thresholds or benchmark settings, a primary
    batch size the benchmark does not measure."""
    known = set(servopt_pipeline.component_spec.inputs)
    unknown = sorted(set(arguments) - known)
    if unknown:
        raise ServoptError(f"unknown pipeline parameter(s) {', '.join(unknown)}; the "
                           f"pipeline takes {', '.join(sorted(known))}")
    missing = [name for name in REQUIRED if not arguments.get(name)]
    if missing:
        raise ServoptError(f"missing pipeline argument(s) {', '.join(missing)}; the model, "
                           "the eval examples and the push destination are required")
    thresholds = thresholds_from_parameter(arguments.get("thresholds", DEFAULT_THRESHOLDS))
    settings = benchmark_settings(arguments.get("batch_sizes", DEFAULT_BATCH_SIZES),
                                  arguments.get("benchmark_settings",
                                                DEFAULT_BENCHMARK_SETTINGS),
                                  arguments.get("label_key", DEFAULT_LABEL_KEY),
                                  arguments["eval_examples_uri"])
    settings.for_run().validate()
    thresholds.check_batch_sizes(settings.batch_sizes, "thresholds")
    for name in SETTINGS_GROUPS:
        settings_from_parameter(name, arguments.get(name, DEFAULT_SETTINGS[name]))


# ---------------------------------------------------------------- local run

@dataclass
class LocalRun:
    """What a local run produced, at its paths under the pipeline root."""

    run_dir: Path
    models: dict[str, Path]  # output name (MODEL_OUTPUTS) -> its path
    model_metadata: dict[str, dict]  # output name -> what its producer recorded
    results: Path  # directory: metrics.json, report.html
    headline: dict[str, float]  # the benchmark's Output[Metrics], as the KFP UI shows it
    decision: dict  # decision.json
    pushed: dict | None = None  # push.json (version, path, base_dir, pushed_model_name)
    outputs: dict = field(default_factory=dict)  # every pipeline output artifact, by name

    @property
    def blessed(self) -> bool:
        return bool(self.decision["blessed"])

    @property
    def chosen(self) -> str | None:
        return self.decision["chosen"]

    @property
    def pushed_version(self) -> int | None:
        return self.pushed["version"] if self.pushed else None

    def metrics(self) -> dict:
        import json

        return json.loads((self.results / METRICS_FILE).read_text())

    def gate_decision(self) -> GateDecision:
        return GateDecision.from_dict(self.decision)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_local(model_uri: str | Path, eval_examples_uri: str | Path,
              push_destination: str | Path, pipeline_root: str | Path,
              **optional: Any) -> LocalRun:
    """Runs the pipeline here with kfp.local (SubprocessRunner, this environment).

    optional: the pipeline's other parameters (label_key, thresholds, batch_sizes,
    benchmark_settings, graph_optimizer, quantizer, verification, keep_last); None takes
    the default.
    kfp 2.16's local runner cannot evaluate conditions (every condition counts as false),
    so the run uses components.kfp.local_conditions to evaluate the push's condition.
    """
    import json

    import kfp.local

    from components.core.model_paths import resolve_saved_model_dir
    from components.core.uris import absolute

    # Absolute: the steps record these paths (metrics.json, the decision) for readers
    # started in any directory.
    arguments = pipeline_arguments(absolute(model_uri), absolute(eval_examples_uri),
                                   absolute(push_destination), **optional)
    check_arguments(arguments)
    resolve_saved_model_dir(arguments["model_uri"])  # a wrong path fails now, with its reason
    if not Path(arguments["eval_examples_uri"]).exists():
        raise ServoptError(f"{eval_examples_uri}: no such file or directory; pass the eval "
                           "examples (TFRecords of tf.Example, or a TFX Examples artifact)")
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
                   raise_on_error=True)
    with local_conditions(), warnings.catch_warnings():
        # kfp.local warns that the project's image is not a Python image; here the steps
        # run in this environment, which is what that image holds.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        try:
            task = servopt_pipeline(**arguments)
        except RuntimeError as err:
            raise ServoptError(f"the local pipeline run failed: {_ANSI.sub('', str(err))} "
                               "(its log is above)") from None
    outputs = {name: Path(artifact.path) for name, artifact in task.outputs.items()}
    run_dir = outputs["decision"].parent.parent  # <root>/<run>/gate/decision
    pushed = sorted(run_dir.rglob(f"push/pushed/{PUSH_FILE}"))
    return LocalRun(run_dir=run_dir, models={key: outputs[key] for key in MODEL_OUTPUTS},
                    model_metadata={key: dict(task.outputs[key].metadata)
                                    for key in MODEL_OUTPUTS},
                    results=outputs["results"],
                    headline=dict(task.outputs["headline"].metadata),
                    decision=json.loads((outputs["decision"] / DECISION_FILE).read_text()),
                    pushed=json.loads(pushed[0].read_text()) if pushed else None,
                    outputs=outputs)


# ---------------------------------------------------------------- submit

@dataclass
class SubmittedRun:
    backend: str  # "kfp" or "vertex"
    run_id: str
    url: str | None = None


def read_package(package: Path) -> dict:
    """The compiled pipeline, checked to be KFP IR YAML."""
    package = Path(package)
    try:
        text = package.read_text()
    except FileNotFoundError:
        raise ServoptError(f"{package}: no such file; compile the pipeline first with "
                           "`servopt kfp compile --output PIPELINE.yaml`") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ServoptError(f"{package}: cannot read it as YAML ({type(err).__name__}); "
                           "compile it again with `servopt kfp compile`") from None
    spec = parse_yaml(text, package)
    if not isinstance(spec, dict) or not {"pipelineInfo", "root",
                                          "deploymentSpec"} <= spec.keys():
        raise ServoptError(f"{package}: not a compiled KFP pipeline (no pipelineInfo, root "
                           "and deploymentSpec); compile it with `servopt kfp compile`")
    return spec


def required_parameters(spec: dict) -> list[str]:
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return [name for name, p in parameters.items()
            if not p.get("isOptional") and "defaultValue" not in p]


def submit(package: str | Path, arguments: dict[str, Any], *, host: str | None = None,
           vertex: bool = False, project: str | None = None, region: str | None = None,
           pipeline_root: str | None = None, run_name: str | None = None,
           experiment: str | None = None, service_account: str | None = None,
           enable_caching: bool | None = None) -> SubmittedRun:
    """Submits a compiled pipeline to a KFP host (`host`) or to Vertex AI Pipelines
    (`vertex`, with `project`, `region` and a gs:// `pipeline_root`)."""
    if host and vertex:
        raise ServoptError("give either --host (Kubeflow Pipelines) or --vertex (Vertex AI "
                           "Pipelines), not both")
    if not host and not vertex:
        raise ServoptError("nowhere to submit to: pass --host URL for a Kubeflow Pipelines "
                           "host, or --vertex --project P --region R --pipeline-root "
                           "gs://BUCKET/ROOT for Vertex AI Pipelines")
    if vertex:
        missing = [option for option, value in (("--project", project), ("--region", region),
                                                ("--pipeline-root", pipeline_root))
                   if not value]
        if missing:
            raise ServoptError(f"--vertex needs {', '.join(missing)}: the Google Cloud "
                               "project, its region (e.g. us-central1) and a gs:// pipeline "
                               "root where Vertex AI writes the artifacts")
        if not pipeline_root.startswith("gs://"):
            raise ServoptError(f"--pipeline-root {pipeline_root}: Vertex AI Pipelines writes "
                               "artifacts to Cloud Storage; give a gs://BUCKET/PATH")
    spec = read_package(Path(package))
    missing = [name for name in required_parameters(spec) if not arguments.get(name)]
    if missing:
        raise ServoptError(f"missing pipeline argument(s) {', '.join(missing)} for "
                           f"{package}: pass --model, --examples and --push-destination "
                           "(or --param NAME=VALUE)")
    if spec["pipelineInfo"].get("name") == PIPELINE_NAME:
        check_arguments(arguments)
    if vertex:
        return _submit_vertex(Path(package), arguments, project, region, pipeline_root,
                              run_name, experiment, service_account, enable_caching)
    return _submit_kfp(Path(package), arguments, host, pipeline_root, run_name, experiment,
                       service_account, enable_caching)


def _submit_kfp(package: Path, arguments: dict, host: str, pipeline_root: str | None,
                run_name: str | None, experiment: str | None, service_account: str | None,
                enable_caching: bool | None) -> SubmittedRun:
    import kfp
    import kfp_server_api
    import urllib3

    try:
        with warnings.catch_warnings():  # kfp's note that it needs a KFP 2 backend
            warnings.filterwarnings("ignore", category=FutureWarning,
                                    message=".*only works with Kubeflow Pipeline.*")
            client = kfp.Client(host=host)
        result = client.create_run_from_pipeline_package(
            str(package), arguments=arguments, run_name=run_name, experiment_name=experiment,
            pipeline_root=pipeline_root, enable_caching=enable_caching,
            service_account=service_account)
    except (kfp_server_api.ApiException, urllib3.exceptions.HTTPError, OSError,
            ValueError) as err:
        raise ServoptError(f"{host}: the Kubeflow Pipelines host did not accept the run "
                           f"({type(err).__name__}: {first_line(err)}"
                           "); check --host and that you can reach it") from None
    return SubmittedRun("kfp", result.run_id, f"{host.rstrip('/')}/#/runs/details/"
                                              f"{result.run_id}")


def _submit_vertex(package: Path, arguments: dict, project: str, region: str,
                   pipeline_root: str, run_name: str | None, experiment: str | None,
                   service_account: str | None, enable_caching: bool | None) -> SubmittedRun:
    try:
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions
        from google.cloud import aiplatform
    except ImportError as err:
        raise ServoptError(f"Vertex AI needs the google-cloud-aiplatform package, which does "
                           f"not import here ({err}); install it (`uv add "
                           "google-cloud-aiplatform`) or submit to a KFP host with --host"
                           ) from None
    try:
        job = aiplatform.PipelineJob(
            display_name=run_name or PIPELINE_NAME, template_path=str(package),
            pipeline_root=pipeline_root, parameter_values=arguments,
            enable_caching=enable_caching, project=project, location=region)
        job.submit(service_account=service_account, experiment=experiment)
    except (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as err:
        raise ServoptError(f"Vertex AI did not accept the run in project {project}, region "
                           f"{region} ({type(err).__name__}: {err}); check the project, "
                           "region, credentials (gcloud auth application-default login) "
                           "and the pipeline root's permissions") from None
    job_id = job.name
    return SubmittedRun("vertex", job_id,
                        f"https://console.cloud.google.com/vertex-ai/locations/{region}/"
                        f"pipelines/runs/{job_id}?project={project}")
