"""Run the digits pipeline locally on an embedded SQLite ML Metadata store.

    python -m pipelines.local_runner --workdir ./servopt-demo --runner beam

Layout under the work directory: `metadata.sqlite` (MLMD), `pipeline_root/` and the TF
Serving model directory the PusherGate pushes to, `serving/digits/`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from components.core.errors import ServoptError
from components.core.uris import absolute

RUNNERS = ("beam", "local")
METADATA_FILE = "metadata.sqlite"
PIPELINE_ROOT = "pipeline_root"
SERVING_DIR = Path("serving") / "digits"


def work_directory(workdir: Path) -> Path:
    """The work directory, absolute: ML Metadata records the artifact URIs under it as
    they are given, and a reader started in another directory (`servopt gate` on the
    benchmark's metrics.json, an ML Metadata client) must find them."""
    return Path(absolute(workdir))


def local_pipeline(workdir: Path, config_path: Path | None = None):
    from pipelines.digits.pipeline import create_pipeline

    workdir = work_directory(workdir)
    return create_pipeline(workdir / PIPELINE_ROOT, workdir / METADATA_FILE,
                           workdir / SERVING_DIR, config_path)


def run_pipeline(workdir: Path, runner: str = "beam", config_path: Path | None = None
                 ) -> None:
    """Runs the digits pipeline with BeamDagRunner (default) or LocalDagRunner."""
    workdir = work_directory(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run_tfx_pipeline(local_pipeline(workdir, config_path), runner)


def run_tfx_pipeline(tfx_pipeline, runner: str = "beam") -> None:
    if runner not in RUNNERS:
        raise ServoptError(f"unknown runner {runner!r}; use one of {', '.join(RUNNERS)}")
    if runner == "beam":
        from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

        BeamDagRunner().run(tfx_pipeline)
    else:
        from tfx.orchestration.local.local_dag_runner import LocalDagRunner

        LocalDagRunner().run(tfx_pipeline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("servopt-demo"))
    parser.add_argument("--runner", choices=RUNNERS, default="beam")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML overlaying configs/ (see pipelines/digits/config.py)")
    args = parser.parse_args()
    run_pipeline(args.workdir, args.runner, args.config)


if __name__ == "__main__":
    main()
