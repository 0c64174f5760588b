"""Writes the figures of README.md and docs/*.md from one recorded demo run (and zoo run).

    uv run python docs/gen_figures.py           # rewrite the blocks in place
    uv run python docs/gen_figures.py --check   # exit 1 if a committed block differs

A recorded run is a directory `docs/runs/<date>-<cpu>/` holding what one `servopt demo`
measured and decided (`docs/record_run.py` makes it from a demo's work directory):
`metrics.json` (the ServingBenchmark's), `decision.json` (the PusherGate's) and
`run.json` (date, command, the conditions it ran under). The newest directory, by name,
is the current one. Every figure block in the documentation lies between
`<!-- figures:NAME start -->` and `<!-- figures:NAME end -->`, is generated here from
that run, and names its CPU and date; `tests/test_docs.py` fails when a committed block
differs from what this script makes, so no figure goes stale silently. The blocks `zoo`
and `zoo-summary` come from the records of `servopt zoo run` in `docs/runs/zoo/` (its
`zoo.json`, copied there as DATE-TIME-CPU.json), each with its own caption; a model
measured again in a newer record shows only there. pipelines/zoo_table.py renders them.

The standard library and pipelines/zoo_table.py: the figures need nothing of TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
RUNS = DOCS / "runs"
BLOCK = re.compile(r"(<!-- figures:(?P<name>[a-z0-9-]+) start -->\n)(?P<body>.*?)"
                   r"(<!-- figures:(?P=name) end -->)", re.S)


@dataclass(frozen=True)
class RecordedRun:
    path: Path
    run: dict
    metrics: dict
    decision: dict

    @classmethod
    def load(cls, path: Path) -> RecordedRun:
        def read(name: str) -> dict:
            return json.loads((path / name).read_text())
        return cls(path, read("run.json"), read("metrics.json"), read("decision.json"))


def current_run(runs: Path = RUNS) -> RecordedRun:
    recorded = sorted(p for p in runs.iterdir() if (p / "run.json").is_file())
    if not recorded:
        raise SystemExit(f"{runs}: no recorded run; make one with docs/record_run.py")
    return RecordedRun.load(recorded[-1])


# ------------------------------------------------------------------ formatting

def ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} ms"


def size(num_bytes: int | None) -> str:
    return "" if num_bytes is None else f"{num_bytes / 1e6:.2f} MB"


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def speedup(batch: dict | None, key: str = "speedup_p50") -> str:
    if not batch or batch.get(key) is None:
        return "baseline" if batch else ""
    interval = batch.get(f"{key}_interval") or [None, None]
    if None in interval:
        return f"{batch[key]:.2f}x"
    return f"{batch[key]:.2f}x [{interval[0]:.2f}, {interval[1]:.2f}]"


def table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
              for row in rows]
    return "\n".join(lines) + "\n"


def machine_line(recorded: RecordedRun) -> str:
    machine = recorded.metrics["machine"]
    features = ", ".join(machine.get("cpu_features") or []) or "none of those that rank"
    return (f"**{machine['cpu_model']}**, {machine['cores']} cores (CPU features: "
            f"{features}), TensorFlow {machine['tensorflow_version']}, "
            f"{recorded.run['date']}")


def caption(recorded: RecordedRun) -> str:
    conditions = recorded.run.get("conditions", "")
    return (f"One `{recorded.run['command']}` with the configs/ defaults on "
            f"{machine_line(recorded)}" + (f"; {conditions}" if conditions else "") +
            f". Recorded run: `docs/runs/{recorded.path.name}/`.\n")


# ------------------------------------------------------------------ the rows

def runtime(model: dict) -> dict:
    return model.get("runtime") or {}


def version(name: str, model: dict) -> str:
    return runtime(model).get("version") or name.split("@")[0].split(":")[0]


def label(model: dict) -> str:
    return runtime(model).get("label", "default")


def server_rows(recorded: RecordedRun) -> list[str]:
    """The rows the gate judged: each version on the runtime its server uses, under TF
    Serving's defaults and the settings the search kept (the decision's candidates)."""
    judged = {c["row"] for c in recorded.decision["candidates"] if c.get("row")}
    return [name for name in recorded.metrics["models"] if name in judged]  # pipeline order


def batch_sizes(recorded: RecordedRun) -> list[str]:
    return [str(b) for b in recorded.metrics["settings"]["batch_sizes"]]


def pushed_line(recorded: RecordedRun) -> str:
    decision = recorded.decision
    if not decision.get("chosen"):
        return "PusherGate pushed nothing.\n"
    environment = [f"{key}={value}" for key, value in
                   sorted((decision.get("environment") or {}).items())]
    serve = " ".join([*environment, "tensorflow_model_server ...",
                      *(decision.get("server_flags") or [])])
    reason = decision.get("reason", "").strip().rstrip(".")
    return (f"PusherGate pushed **{decision['chosen']}** (configuration "
            f"`{decision.get('label') or 'default'}`, served as `{serve}`): {reason}.\n")


def demo_summary(recorded: RecordedRun) -> str:
    """README: every version the gate judged, as the server would run it."""
    models = recorded.metrics["models"]
    sizes = batch_sizes(recorded)
    primary = str(recorded.decision.get("primary_batch_size", sizes[-1]))
    chosen = recorded.decision.get("row")
    rows = []
    for name in server_rows(recorded):
        model = models[name]
        batches = model.get("batches", {})
        rows.append([
            f"**{version(name, model)}**" if name == chosen else version(name, model),
            runtime(model).get("runtime", ""), label(model), size(model.get("size_bytes")),
            percent((model.get("accuracy") or {}).get("accuracy")),
            *(ms((batches.get(b) or {}).get("p50_ms")) for b in sizes),
            speedup(batches.get(primary))])
    header = ["model", "runtime", "TF Serving settings", "size", "accuracy",
              *(f"p50 @{b}" for b in sizes), f"speedup p50 @{primary} [95%]"]
    return (caption(recorded) + "\n" +
            table(header, rows, right=set(range(3, len(header)))) + "\n" +
            pushed_line(recorded))


def demo_full(recorded: RecordedRun) -> str:
    """docs/demo.md: every row the benchmark measured, both runtimes, every batch size."""
    models = recorded.metrics["models"]
    sizes = batch_sizes(recorded)
    rows = []
    for name, model in models.items():
        batches = model.get("batches", {})
        row = [version(name, model), runtime(model).get("runtime", ""), label(model),
               size(model.get("size_bytes")),
               percent((model.get("accuracy") or {}).get("accuracy"))]
        for b in sizes:
            batch = batches.get(b)
            row += [ms((batch or {}).get("p50_ms")), ms((batch or {}).get("p99_ms")),
                    speedup(batch) if batch else ""]
        rows.append(row)
    header = ["model", "runtime", "TF Serving settings", "size", "accuracy"]
    for b in sizes:
        header += [f"p50 @{b}", f"p99 @{b}", f"speedup p50 @{b} [95%]"]
    return (caption(recorded) + "\n" + table(header, rows, right=set(range(3, len(header))))
            + "\n" + pushed_line(recorded))


def search_steps(recorded: RecordedRun) -> str:
    search = recorded.metrics.get("search")
    if not search:
        return caption(recorded) + "\nThe configuration search did not run.\n"
    rows = [[step["knob"], contender, outcome]
            for step in search.get("steps", [])
            for contender, outcome in step.get("outcomes", {}).items()]
    kept = [[contender, best] for contender, best in search.get("best", {}).items()]
    return (caption(recorded) +
            f"\nObjective {search['objective']} at batch {search['batch_size']}; "
            f"{search['elapsed_s']:.0f} s of its {search['budget_s']:.0f} s budget; "
            f"stopped: {search.get('stopped') or 'every knob tried'}.\n\n" +
            table(["knob", "contender", "outcome"], rows, right=set()) + "\n" +
            table(["contender", "kept"], kept, right=set()))


# ------------------------------------------------------------------ the model zoo

ZOO_RUNS = RUNS / "zoo"  # records of `servopt zoo run` (zoo.json), named by date and CPU


def zoo_records(runs: Path = ZOO_RUNS) -> list[dict]:
    """Each record with the models no newer record (by name) measured again, oldest
    first: a model measured again shows only its newest figures."""
    recorded = [json.loads(path.read_text()) for path in sorted(runs.glob("*.json"))]
    if not recorded:
        raise SystemExit(f"{runs}: no zoo record; copy one `servopt zoo run` wrote there")
    seen: set[str] = set()
    current = []
    for record in reversed(recorded):
        models = [entry for entry in record["models"] if entry["name"] not in seen]
        seen |= {entry["name"] for entry in record["models"]}
        if models:
            current.append({**record, "models": models})
    return current[::-1]


def _zoo_table():
    if str(ROOT) not in sys.path:  # run as a script: the repository's own modules
        sys.path.insert(0, str(ROOT))
    from pipelines import zoo_table

    return zoo_table


def zoo_tables(recorded: RecordedRun) -> str:
    """Every table of each zoo record (pipelines/zoo_table.py), as `servopt zoo table`."""
    return "\n".join(_zoo_table().render(record) for record in zoo_records())


def zoo_summary(recorded: RecordedRun) -> str:
    zoo_table, parts = _zoo_table(), []
    for record in zoo_records():
        parts += [zoo_table.caption(record), "", *zoo_table.summary_table(record), ""]
    return "\n".join(parts)


BLOCKS = {"demo": demo_summary, "demo-full": demo_full, "search": search_steps,
          "zoo": zoo_tables, "zoo-summary": zoo_summary}


# ------------------------------------------------------------------ the files

def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def render(text: str, recorded: RecordedRun, source: str = "") -> str:
    """text with every figures block regenerated from the recorded run."""
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise SystemExit(f"{source}: unknown figures block {name!r}; known: "
                             f"{', '.join(BLOCKS)}")
        return match.group(1) + BLOCKS[name](recorded) + match.group(4)
    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a block differs from the run")
    args = parser.parse_args(argv)
    recorded = current_run()
    stale = []
    for path in documents():
        text = path.read_text()
        new = render(text, recorded, str(path))
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new)
    verb = "differ from" if args.check else "rewritten from"
    for path in stale:
        print(f"{path}: figures {verb} docs/runs/{recorded.path.name}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
