"""`servopt kfp`: compile, run locally and submit the Kubeflow / Vertex AI pipeline.

Registered in the `servopt` group (components.cli); it also runs on its own. Errors the
user can fix end with a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from components.cli_support import LazyConsole, ServoptGroup
from components.core.errors import ServoptError

stdout = LazyConsole()
stderr = LazyConsole(stderr=True)


def _thresholds(path: Path | None) -> dict | None:
    if path is None:
        return None
    from components.core.gate import Thresholds
    from components.kfp.mapping import parameter_value

    return parameter_value(Thresholds.from_yaml(path).to_dict())


def _batch_sizes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    from components.core.benchmark import parse_int_list

    return list(parse_int_list(text, "--batch-sizes"))


def _benchmark(path: Path | None, batch_sizes: list[int] | None
               ) -> tuple[list[int] | None, dict | None]:
    """(batch sizes, other settings) from a benchmark YAML (configs/benchmark.yaml's keys);
    --batch-sizes wins over the file's."""
    if path is None:
        return batch_sizes, None
    from components.kfp.pipeline import default_benchmark

    from_file, _, settings = default_benchmark(path)
    return batch_sizes or from_file, settings


def _recipe(path: Path | None) -> dict:
    """The settings groups (graph_optimizer, quantizer, verification) of an optimization
    recipe YAML (configs/optimization.yaml's sections), as pipeline parameters."""
    if path is None:
        return {}
    from components.core.config import SETTINGS_GROUPS, OptimizationRecipe
    from components.kfp.mapping import settings_parameter

    recipe = OptimizationRecipe.from_yaml(path)
    return {name: settings_parameter(getattr(recipe, name)) for name in SETTINGS_GROUPS}


def _parameters(items: tuple[str, ...]) -> dict:
    """--param NAME=VALUE: VALUE is JSON when it parses as JSON, else a string."""
    parameters = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ServoptError(f"--param {item!r}: expected NAME=VALUE, e.g. "
                               "keep_last=3 or thresholds='{\"primary_batch_size\": 1}'")
        try:
            parameters[name] = json.loads(value)
        except json.JSONDecodeError:
            parameters[name] = value
    return parameters


@click.group("kfp", cls=ServoptGroup)
def kfp_group() -> None:
    """The pipeline on Kubeflow Pipelines and Vertex AI Pipelines:
    freeze -> optimize -> quantize -> benchmark -> gate -> push."""


@kfp_group.command("compile")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True,
              help="Where the pipeline goes, as KFP IR YAML (PIPELINE.yaml).")
@click.option("--image", default=None,
              help="The container image every step runs in (default: env SERVOPT_IMAGE, "
                   "else servopt:0.1.0); build it from the Dockerfile.")
@click.option("--benchmark-cpu", default=None,
              help="CPUs of the benchmark task (request = limit), e.g. 4: it ranks "
                   "variants and TF Serving settings on its own CPU, so give it the serving "
                   "machine's (default: the cluster's).")
@click.option("--benchmark-memory", default=None,
              help="Memory of the benchmark task (request = limit), e.g. 16G.")
def compile_command(output: Path, image: str | None, benchmark_cpu: str | None,
                    benchmark_memory: str | None) -> None:
    """Compile the pipeline for KFP and Vertex AI Pipelines."""
    from components.kfp.pipeline import compile_pipeline
    from components.kfp.resources import TaskResources
    from components.kfp.steps import IMAGE

    resources = TaskResources(cpu_request=benchmark_cpu, cpu_limit=benchmark_cpu,
                              memory_request=benchmark_memory, memory_limit=benchmark_memory)
    path = compile_pipeline(output, image, resources if resources.is_set() else None)
    stdout.print(f"compiled the pipeline to {path} (image {image or IMAGE})")


_BENCHMARK_OPTIONS = [
    click.option("--label-key", default=None,
                 help="The label feature of the examples (default: label)."),
    click.option("--batch-sizes", default=None,
                 help="Comma-separated benchmark batch sizes (default: "
                      "configs/benchmark.yaml's); must include the thresholds' "
                      "primary_batch_size."),
    click.option("--benchmark-config", type=click.Path(path_type=Path), default=None,
                 help="Benchmark settings YAML (the keys of configs/benchmark.yaml)."),
    click.option("--thresholds", "thresholds_path", type=click.Path(path_type=Path),
                 default=None, help="Gate thresholds YAML (default: configs/thresholds.yaml)."),
    click.option("--recipe", "recipe_path", type=click.Path(path_type=Path), default=None,
                 help="Optimization recipe YAML: its graph_optimizer, quantizer and "
                      "verification sections (default: configs/optimization.yaml)."),
]


def _benchmark_options(command):
    for option in reversed(_BENCHMARK_OPTIONS):
        command = option(command)
    return command


@kfp_group.command("run-local")
@click.option("--model", required=True, help="The trained model (a SavedModel, a TFX "
              "Model artifact or a TF Serving base directory).")
@click.option("--examples", required=True,
              help="Labelled eval examples: TFRecords of tf.Example (file, directory, or a "
                   "TFX Examples artifact: its eval split).")
@click.option("--push-destination", required=True,
              help="TF Serving model base directory the gate's choice is pushed to.")
@click.option("--pipeline-root", type=click.Path(path_type=Path),
              default=Path("servopt-kfp"), show_default=True,
              help="Where the run's artifacts go.")
@_benchmark_options
def run_local_command(model: str, examples: str, push_destination: str, pipeline_root: Path,
                      label_key: str | None, batch_sizes: str | None,
                      benchmark_config: Path | None, thresholds_path: Path | None,
                      recipe_path: Path | None) -> None:
    """Run the pipeline on this machine with kfp.local (each step in its own process)."""
    from components.core.gate import pairs_table
    from components.kfp.pipeline import run_local

    sizes, settings = _benchmark(benchmark_config, _batch_sizes(batch_sizes))
    run = run_local(model, examples, push_destination, pipeline_root,
                    label_key=label_key, thresholds=_thresholds(thresholds_path),
                    batch_sizes=sizes, benchmark_settings=settings, **_recipe(recipe_path))
    decision = run.gate_decision()
    stdout.print(pairs_table(decision))
    if run.pushed:
        stdout.print(f"pushed '{run.pushed['pushed_model_name']}' as version "
                     f"{run.pushed_version} to {run.pushed['path']}")
    else:
        stdout.print(f"nothing pushed: {run.decision['reason']}")
    stdout.print(f"artifacts:     {run.run_dir}")
    stdout.print(f"benchmark:     {run.results / 'report.html'}")


@kfp_group.command("submit")
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--host", default=None, help="Kubeflow Pipelines host URL.")
@click.option("--vertex", is_flag=True, help="Submit to Vertex AI Pipelines.")
@click.option("--project", default=None, help="Vertex AI: the Google Cloud project.")
@click.option("--region", default=None, help="Vertex AI: the region, e.g. us-central1.")
@click.option("--pipeline-root", default=None,
              help="Where the run's artifacts go (gs://BUCKET/PATH; required for Vertex).")
@click.option("--model", default=None, help="model_uri: the trained model, as the steps "
              "see it (gs://... on Vertex AI).")
@click.option("--examples", default=None, help="eval_examples_uri: labelled eval examples.")
@click.option("--push-destination", default=None,
              help="push_destination: the TF Serving model base directory.")
@_benchmark_options
@click.option("--param", "params", multiple=True,
              help="Any other pipeline parameter as NAME=VALUE (VALUE as JSON), e.g. "
                   "keep_last=3; repeatable.")
@click.option("--run-name", default=None, help="Display name of the run.")
@click.option("--experiment", default=None, help="Experiment to file the run under.")
@click.option("--service-account", default=None,
              help="Service account the steps run as.")
def submit_command(package: Path, host: str | None, vertex: bool, project: str | None,
                   region: str | None, pipeline_root: str | None, model: str | None,
                   examples: str | None, push_destination: str | None,
                   label_key: str | None, batch_sizes: str | None,
                   benchmark_config: Path | None, thresholds_path: Path | None,
                   recipe_path: Path | None, params: tuple[str, ...], run_name: str | None,
                   experiment: str | None, service_account: str | None) -> None:
    """Submit a compiled PACKAGE to a KFP host (--host) or to Vertex AI (--vertex)."""
    from components.kfp.pipeline import submit

    sizes, settings = _benchmark(benchmark_config, _batch_sizes(batch_sizes))
    named = {"model_uri": model, "eval_examples_uri": examples,
             "push_destination": push_destination, "label_key": label_key,
             "thresholds": _thresholds(thresholds_path), "batch_sizes": sizes,
             "benchmark_settings": settings, **_recipe(recipe_path)}
    arguments = {**{k: v for k, v in named.items() if v is not None}, **_parameters(params)}
    run = submit(package, arguments, host=host, vertex=vertex, project=project,
                 region=region, pipeline_root=pipeline_root, run_name=run_name,
                 experiment=experiment, service_account=service_account)
    where = "Vertex AI Pipelines" if run.backend == "vertex" else "Kubeflow Pipelines"
    stdout.print(f"submitted to {where}: run {run.run_id}")
    if run.url:
        click.echo(run.url)  # unwrapped, so that it stays clickable


if __name__ == "__main__":
    kfp_group()
