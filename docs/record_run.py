"""Records a `servopt demo` run as the documentation's figures source, then regenerates them.

    uv run servopt demo --workdir /tmp/demo
    uv run python docs/record_run.py /tmp/demo [--conditions "quiet machine"]

Copies the ServingBenchmark's metrics.json and the PusherGate's decision.json of the
latest run in which the benchmark ran (not served from TFX's cache) into
`docs/runs/<date>-<cpu>/`, with `run.json` (date, command, conditions), and rewrites every
figures block from it (docs/gen_figures.py). Commit the new directory with the rewritten
pages; delete the directory of the run it replaces, since only the newest is read.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gen_figures  # noqa: E402  (docs/, beside this script)

from pipelines.mlmd_summary import open_store, run_executions  # noqa: E402


def benchmark_run(workdir: Path) -> tuple[Path, Path]:
    """The metrics.json and decision.json of the newest run whose benchmark ran."""
    store = open_store(workdir / "metadata.sqlite", read_only=True)
    runs = sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)
    for run in reversed(runs):
        executions = {r.component: r for r in run_executions(store, run.id)}
        benchmark, gate = executions.get("ServingBenchmark"), executions.get("PusherGate")
        if benchmark and gate and benchmark.state == "ran":
            return (Path(benchmark.outputs["benchmark"][0].uri) / "metrics.json",
                    Path(gate.outputs["blessing"][0].uri) / "decision.json")
    raise SystemExit(f"{workdir}: no run whose ServingBenchmark ran; run `servopt demo "
                     f"--workdir {workdir}` on a new work directory first")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="the demo's --workdir")
    parser.add_argument("--conditions", default="nothing else running",
                        help="what else ran on the machine, in a few words")
    parser.add_argument("--date", default=datetime.datetime.now(datetime.UTC).date()
                        .isoformat())
    args = parser.parse_args(argv)
    if not (args.workdir / "metadata.sqlite").is_file():
        raise SystemExit(f"{args.workdir}: no metadata.sqlite; give the work directory of a "
                         "`servopt demo` run")
    metrics, decision = benchmark_run(args.workdir)
    cpu = json.loads(metrics.read_text())["machine"]["cpu_model"]
    target = gen_figures.RUNS / f"{args.date}-{slug(cpu)}"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(metrics, target / "metrics.json")
    shutil.copyfile(decision, target / "decision.json")
    (target / "run.json").write_text(json.dumps(
        {"date": args.date, "command": "servopt demo", "conditions": args.conditions},
        indent=2) + "\n")
    print(f"recorded {target.relative_to(gen_figures.ROOT)}")
    return gen_figures.main([])


if __name__ == "__main__":
    sys.exit(main())
