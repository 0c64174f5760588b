"""Compile the TFX digits pipeline for Vertex AI Pipelines with KubeflowV2DagRunner.

    python -m pipelines.vertex_runner --image IMAGE --pipeline-root gs://BUCKET/root \
        --serving-dir gs://BUCKET/serving/digits --output digits_vertex.json

Then submit the JSON with google-cloud-aiplatform (`aiplatform.PipelineJob`) or the Vertex
console. KubeflowV2DagRunner imports `tfx.components`, which needs TFDV and so glibc
>= 2.38: run this inside the project's image (see Dockerfile), not on Debian 12.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from components.core.errors import ServoptError

IMPORT_HINT = ("KubeflowV2DagRunner cannot be imported here: it needs the full TFX stack "
               "(tensorflow-data-validation, ml-metadata 1.21), which needs glibc >= 2.38; "
               "run inside the project's Docker image")


def kubeflow_v2_runner_module():
    try:
        from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner
    except ImportError as err:
        raise ServoptError(f"{IMPORT_HINT} ({err})") from None
    return kubeflow_v2_dag_runner


def compile_for_vertex(image: str, pipeline_root: str, serving_dir: str, output: Path,
                       config_path: Path | None = None) -> Path:
    """Compiles the digits pipeline. Vertex runs only TFX's built-in resolver strategies,
    so the served-model lookup is left out: the gate treats every push as a first push
    (its decision says so) and the regression thresholds against the served model apply
    on the local runners."""
    runner_module = kubeflow_v2_runner_module()
    from pipelines.digits.pipeline import create_pipeline

    tfx_pipeline = create_pipeline(pipeline_root, None, serving_dir, config_path,
                                   served_model_lookup=False)
    runner = runner_module.KubeflowV2DagRunner(
        config=runner_module.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=str(output.parent), output_filename=output.name)
    runner.run(tfx_pipeline)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="the project's container image")
    parser.add_argument("--pipeline-root", required=True, help="e.g. gs://bucket/root")
    parser.add_argument("--serving-dir", required=True,
                        help="TF Serving model base directory to push to, e.g. "
                             "gs://bucket/serving/digits")
    parser.add_argument("--output", type=Path, default=Path("digits_vertex.json"))
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args()
    print(compile_for_vertex(args.image, args.pipeline_root, args.serving_dir, args.output,
                             args.config))


if __name__ == "__main__":
    main()
