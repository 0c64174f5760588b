"""`servopt`: the command line over the optimization library.

Errors end as one line and an exit code (see cli_support); never a traceback. Nothing
heavy is imported before a command runs: `servopt --help` needs only click and rich;
TensorFlow, TFX and KFP are imported inside the commands, and `pipelines/` only by `demo`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from components.cli_support import LazyConsole, ServoptGroup, op_list
from components.core.keras_deferred import defer_keras
from components.core.requirements import TFLITE_MODEL_FILE

if TYPE_CHECKING:
    from components.core.table import Table

stdout = LazyConsole()
stderr = LazyConsole(stderr=True)


@click.group(cls=ServoptGroup)
def main() -> None:
    """Make trained TensorFlow models cheaper and safer to serve."""


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def _print_json(data: dict) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _description_table(description) -> Table:
    from components.core.table import Column, Table

    table = Table(title=f"servopt describe: {description.path}",
                  columns=(Column(""), Column("", numeric=True)), show_header=False)
    table.add_row("signatures", ", ".join(description.signatures))
    for label, value in (("nodes", description.node_count),
                         ("Const", description.const_count),
                         ("variables", description.variable_count),
                         ("Identity", description.identity_count),
                         ("graph size", _mb(description.size_bytes.graph)),
                         ("variables size", _mb(description.size_bytes.variables)),
                         ("total size", _mb(description.size_bytes.total))):
        table.add_row(label, str(value))
    return table


def _stages_table(report) -> Table:
    """One row per stage: the source, then the model each applied step produced."""
    from components.core.table import Column, Table

    table = Table(title=f"servopt optimize: {report.source} -> {report.output}",
                  columns=(Column("stage"), *(Column(c, numeric=True) for c in (
                      "nodes", "variables", "size", "max abs diff", "top-1 agreement"))))
    before = report.before
    table.add_row("source", str(before.node_count), str(before.variable_count),
                  _mb(before.size_bytes.total))
    for record in report.steps:
        if record.status != "applied":
            continue
        model = record.model
        table.add_row(record.step, str(model.node_count), str(model.variable_count),
                      _mb(model.size_bytes.total), *_check_cells(record.verification))
        if record.tflite_verification is not None:
            table.add_row(f"{record.step}: {TFLITE_MODEL_FILE}", "", "",
                          _mb(record.details["tflite_size_bytes"]),
                          *_check_cells(record.tflite_verification))
    return table


def _check_cells(check) -> tuple[str, str]:
    """(max abs diff, top-1 agreement); a step verified only through the last one: '-'."""
    if check is None:
        return ("-", "-")
    top1 = "" if check.top1_agreement is None else f"{check.top1_agreement:.2%}"
    return (f"{check.max_abs_diff:.2e}", top1)


@main.command("describe")
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def describe_command(model: str, as_json: bool) -> None:
    """Describe MODEL: signatures, node and op counts, sizes on disk."""
    from components.core.describe import describe

    description = describe(model)
    if as_json:
        _print_json(description.to_dict())
        return
    from components.core.table import Paragraph

    stdout.print(_description_table(description))
    for name, sig in description.signatures.items():
        ins = ", ".join(f"{k}:{t.dtype}{t.shape}" for k, t in sig.inputs.items())
        outs = ", ".join(f"{k}:{t.dtype}{t.shape}" for k, t in sig.outputs.items())
        stdout.print(Paragraph(f"{name}({ins}) -> {outs}"))
    top = list(description.op_counts.items())[:10]
    stdout.print(Paragraph("top ops: " + ", ".join(f"{op} {n}" for op, n in top)))


@main.command("optimize")
@click.argument("model", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--steps", "steps_text", default=None,
              help="Comma-separated steps (default: freeze,optimize,quantize=MODE, MODE "
                   "the quantizer's default, configs/optimization.yaml): freeze, "
                   "optimize[=pass+pass], "
                   "quantize[=int8|float16|bfloat16], "
                   "tflite[=float32|float16|dynamic_int8|full_int8] (last).")
@click.option("--passes", default=None,
              help="Comma-separated optimization passes for the optimize step "
                   "(default: all).")
@click.option("--inputs", "inputs_path", type=click.Path(), default=None,
              help="Real verification inputs: TFRecords of tf.Example (file, directory or "
                   "TFX Examples artifact) or an .npz keyed by input name. Default: "
                   "generated from the signatures.")
@click.option("--num-examples", type=int, default=None,
              help="How many inputs verification runs (default: OptimizeConfig.num_examples).")
@click.option("--verify-each-step", is_flag=True,
              help="Verify every intermediate model too, not only the one written to OUT "
                   "(a per-step error table; one more model run per step).")
@click.option("--allow-unsafe-ops", "allowed_ops", default="",
              help="Comma-separated op types (e.g. ReadFile) the model may run although "
                   "they read or write files, run Python or open the network. Without it "
                   "such a model is refused before anything runs it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def optimize_command(model: str, out: str, steps_text: str | None, passes: str | None,
                     inputs_path: str | None, num_examples: int | None,
                     verify_each_step: bool, allowed_ops: str, as_json: bool) -> None:
    """Optimize MODEL and write a verified, servable SavedModel to OUT."""
    from components.core.choices import DEFAULT_PASSES, validate_passes
    from components.core.optimize import PassResult
    from components.core.steps import OptimizeConfig, optimize_model, parse_steps

    if steps_text is None:
        from components.core.config import QuantizerSettings

        steps_text = f"freeze,optimize,quantize={QuantizerSettings.mode}"
    steps = parse_steps(steps_text)
    chosen = validate_passes(p.strip() for p in passes.split(",")) if passes else DEFAULT_PASSES
    given = {"num_examples": num_examples} if num_examples is not None else {}
    config = OptimizeConfig(passes=tuple(chosen), **given,
                            examples=Path(inputs_path) if inputs_path else None,
                            verify_each_step=verify_each_step,
                            allowed_ops=op_list(allowed_ops))
    with stderr.status(f"optimizing {model} ({steps_text})"):
        report = optimize_model(model, out, steps, config)
    if as_json:
        _print_json(report.to_dict())
        return
    from components.core.table import Paragraph

    stdout.print(_stages_table(report))
    for record in report.steps:
        if record.status == "skipped":
            stdout.print(Paragraph(f"  {record.step}: skipped: {record.reason}"))
        for result in record.details.get("passes", []):
            stdout.print(Paragraph(f"  {PassResult(**result).summary()}"))
    if report.requirements.server_flags or report.requirements.cpu_features:
        needs = report.requirements
        stdout.print(Paragraph(f"serve with: {' '.join(needs.server_flags) or 'default flags'}"
                               + (f"; needs a CPU with {' or '.join(needs.cpu_features)}"
                                  if needs.cpu_features else "")))
    stdout.print(Paragraph(f"verified on {report.verification.num_examples} inputs; written "
                           f"to {report.output}"))


@main.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("servopt-demo"),
              show_default=True, help="Where the MLMD database and pipeline root go.")
@click.option("--runner", type=click.Choice(["beam", "local"]), default="beam",
              show_default=True, help="BeamDagRunner or LocalDagRunner.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML overlaying configs/: any of the sections graph_optimizer, "
                   "quantizer, verification, trainer, benchmark, thresholds.")
@click.option("--verbose", is_flag=True,
              help="Show TFX's own logging and what the benchmark's worker processes print "
                   "(otherwise kept in benchmark-workers/ in the ServingBenchmark artifact).")
def demo_command(workdir: Path, runner: str, config_path: Path | None, verbose: bool) -> None:
    """Run the digits pipeline end to end on the embedded defaults (SQLite MLMD)."""
    import components.core.tf_setup  # noqa: F401  (before TFX imports TensorFlow loudly)

    from components.benchmark_cli import search_table
    from components.core.benchmark.worker_log import worker_output
    from components.core.gate import pairs_table
    from components.core.table import Paragraph
    from pipelines.demo import (
        benchmark_result,
        gate_decision,
        push_summary,
        run_demo,
        stage_table,
    )
    from pipelines.digits.config import load_pipeline_config

    config = load_pipeline_config(config_path)  # a bad config fails before anything runs
    stdout.print(Paragraph(f"traffic profile: {config.thresholds.traffic.describe()} "
                           "(the thresholds' traffic:, judged on by the search and the gate)"))
    with worker_output(verbose=verbose):
        result = run_demo(workdir, runner, config_path, console=stderr.get(), verbose=verbose)
    stdout.print(stage_table(result))
    measured = benchmark_result(result)
    search = search_table(measured) if measured is not None else None
    if search is not None:
        stdout.print(search)
    decision = gate_decision(result)
    if decision is not None:
        stdout.print(pairs_table(decision))
        if decision.blessed:
            stdout.print(Paragraph(f"serve it with: {decision.serving_command()}"))
    for line in (push_summary(result), f"ML Metadata:   {result.metadata_path}",
                 f"artifacts:     {result.pipeline_root}", f"TF Serving:    {result.serving_dir}"):
        stdout.print(Paragraph(line))


def _register_commands() -> None:
    from components.benchmark_cli import benchmark_command
    from components.gate_cli import gate_command, push_command
    from components.kfp_cli import kfp_group
    from components.release_cli import COMMANDS as RELEASE_COMMANDS
    from components.zoo_cli import zoo_group

    main.add_command(benchmark_command, "benchmark")
    main.add_command(gate_command, "gate")
    main.add_command(push_command, "push")
    main.add_command(kfp_group, "kfp")
    for name, command in RELEASE_COMMANDS.items():
        main.add_command(command, name)
    main.add_command(zoo_group, "zoo")


_register_commands()

# Commands whose process trains or builds Keras models (the demo's Trainer). Every other
# command loads and runs models as TF Serving does, and its process skips TensorFlow's
# eager Keras import (keras_deferred: 6 s and 180 MB less at start).
KERAS_COMMANDS = frozenset({"demo"})


def run() -> None:
    """The `servopt` console script: `main` in a process of its own."""
    if not KERAS_COMMANDS & set(sys.argv[1:2]):
        defer_keras()
    main()


if __name__ == "__main__":
    run()
