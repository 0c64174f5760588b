"""Run the digits pipeline locally on an embedded SQLite ML Metadata store.

    python -m pipelines.local_runner --workdir ./servopt-demo --runner beam

Layout under the work directory: `metadata.sqlite` (MLMD) and `pipeline_root/`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from components.core.config import DEFAULT_RECIPE
from components.core.errors import ServoptError

RUNNERS = ("beam", "local")
METADATA_FILE = "metadata.sqlite"
PIPELINE_ROOT = "pipeline_root"


def run_pipeline(workdir: Path, runner: str = "beam", config_path: Path = DEFAULT_RECIPE
                 ) -> None:
    """Runs the digits pipeline with BeamDagRunner (default) or LocalDagRunner."""
    if runner not in RUNNERS:
        raise ServoptError(f"unknown runner {runner!r}; use one of {', '.join(RUNNERS)}")
    from pipelines.digits.pipeline import create_pipeline

    workdir.mkdir(parents=True, exist_ok=True)
    tfx_pipeline = create_pipeline(workdir / PIPELINE_ROOT, workdir / METADATA_FILE,
                                   config_path)
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
    parser.add_argument("--config", type=Path, default=DEFAULT_RECIPE)
    args = parser.parse_args()
    run_pipeline(args.workdir, args.runner, args.config)


if __name__ == "__main__":
    main()
