"""`servopt benchmark`: latency, throughput, size and accuracy of a baseline and candidates.

Registered in the `servopt` group (components.cli) with `main.add_command(benchmark_command)`;
it also runs on its own. Errors the user can fix end with a one-line message on stderr
and exit code 2. When the baseline cannot be measured the command writes what it has
(--json, --report) and exits 2; when only candidates fail it prints one warning line per
failed candidate and exits 0 (the failures are recorded in the result's `error` fields).
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from components.cli_support import ServoptCommand, op_list
from components.core.benchmark.config import BACKENDS, PROTOCOLS
from components.core.errors import ServoptError

stdout = Console()
stderr = Console(stderr=True)


def _stable(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[yellow]no[/]"


def _speedup(value: float | None) -> str:
    if value is None:
        return ""
    color = "green" if value >= 1.05 else "red" if value <= 0.95 else "default"
    return f"[{color}]{value:.2f}x[/]"


def _results_table(result) -> Table:
    table = Table(title=f"latency (ms), throughput (examples/s), speedup vs "
                        f"{result.baseline}: {result.settings.backend}, "
                        f"{result.machine.cores} cores, TF {result.machine.tensorflow_version}")
    table.add_column("model", no_wrap=True)
    table.add_column("runtime", no_wrap=True)
    for column in ("batch", "p50", "p90", "p99", "ex/s", "stable", "x p50", "x p99"):
        table.add_column(column, justify="right", no_wrap=True)
    for size in result.settings.batch_sizes:
        for name, model in result.models.items():
            batch = model.batches.get(size)
            if batch is None:
                continue
            table.add_row(name, model.runtime.runtime if model.runtime else "tf serving",
                          str(size), f"{batch.p50_ms:.2f}", f"{batch.p90_ms:.2f}",
                          f"{batch.p99_ms:.2f}", f"{batch.throughput:,.0f}",
                          _stable(batch.stable), _speedup(batch.speedup_p50),
                          _speedup(batch.speedup_p99))
    return table


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "" if value is None else format(value / scale, spec)


def _models_table(result) -> Table:
    table = Table(title="per model")
    table.add_column("model", no_wrap=True)
    for column in ("size MB", "load s", "1st request ms", "peak MB", "MFLOP/example"):
        table.add_column(column, justify="right")
    for name, m in result.models.items():
        if m.error and not m.batches:
            table.add_row(name, _fmt(m.size_bytes, ".2f", 1e6), "[red]failed[/]")
            continue
        table.add_row(name, _fmt(m.size_bytes, ".2f", 1e6), _fmt(m.load_time_s, ".2f"),
                      _fmt(m.first_request_ms, ".1f"), _fmt(m.peak_memory_bytes, ".0f", 1e6),
                      _fmt(m.flops_per_example, ".2f", 1e6))
    return table


def _accuracy_table(result) -> Table | None:
    measured = {n: m.accuracy for n, m in result.models.items() if m.accuracy is not None}
    if not measured:
        return None
    table = Table(title=f"accuracy ({next(iter(measured.values())).num_examples} examples; "
                        f"agreement and difference against {result.baseline})")
    table.add_column("model", no_wrap=True)
    for column in ("accuracy", "top-1 agreement", "max abs diff"):
        table.add_column(column, justify="right")
    for name, a in measured.items():
        table.add_row(name, _fmt(a.accuracy, ".2%"), _fmt(a.top1_agreement, ".2%"),
                      _fmt(a.max_abs_diff, ".2e"))
    return table


@click.command("benchmark", cls=ServoptCommand)
@click.argument("models", nargs=-1, required=True)
@click.option("--name", "names", multiple=True,
              help="Name of each model, in order (repeat). Or pass models as NAME=PATH. "
                   "Default: the directory name, made unique.")
@click.option("--batch-sizes", default="1,100", show_default=True,
              help="Comma-separated batch sizes.")
@click.option("--concurrency", default="1,2", show_default=True,
              help="Comma-separated numbers of concurrent clients for the throughput sweep.")
@click.option("--examples", type=click.Path(), default=None,
              help="Real inputs: TFRecords of tf.Example (file, directory or TFX Examples "
                   "artifact) or an .npz keyed by input name. Default: generated from the "
                   "signature.")
@click.option("--label-key", default=None,
              help="With --examples: the label feature; enables accuracy per model.")
@click.option("--output-key", default=None,
              help="The classifier output accuracy reads (default: the first "
                   "[batch, classes] float output).")
@click.option("--backend", type=click.Choice(BACKENDS), default="session", show_default=True,
              help="session: in-process, each model on the runtime TF Serving would use "
                   "(a Session; TfLiteSession's interpreters for a .tflite file or "
                   "model.tflite beside saved_model.pb); tfserving: a real "
                   "tensorflow_model_server.")
@click.option("--signature", default="serving_default", show_default=True)
@click.option("--warmup-requests", default=10, show_default=True,
              help="Requests per model and batch size before measuring (not counted).")
@click.option("--window-seconds", type=float, default=1.0, show_default=True,
              help="A measurement window is this time span; 0: use --window-requests.")
@click.option("--window-requests", default=50, show_default=True,
              help="Requests per measurement window when --window-seconds is 0.")
@click.option("--rewarm-requests", default=3, show_default=True,
              help="Untimed requests before every window, after switching models.")
@click.option("--tflite-pools", type=int, default=None,
              help="TFLite rows: interpreters, as TF Serving's --num_tflite_pools "
                   "(default: the cores, its default).")
@click.option("--tflite-interpreters-per-pool", default=1, show_default=True,
              help="TFLite rows: as TF Serving's --num_tflite_interpreters_per_pool; above 1 "
                   "large batches are split across the interpreters.")
@click.option("--max-windows", default=10, show_default=True,
              help="Windows to measure at most while waiting for stability.")
@click.option("--stability-percent", default=10.0, show_default=True,
              help="Stable when the last 3 windows' p50 spread at most this much.")
@click.option("--intra-op-threads", type=int, default=None,
              help="Threads per op, the same for every model (default: the cores).")
@click.option("--inter-op-threads", type=int, default=None,
              help="Ops run in parallel, the same for every model (default: the cores).")
@click.option("--seed", default=0, show_default=True, help="Seed for generated inputs.")
@click.option("--tfserving-host", default=None,
              help="A running TF Serving that serves the models under their names "
                   "(default: start tensorflow_model_server per model).")
@click.option("--tfserving-grpc-port", default=8500, show_default=True)
@click.option("--tfserving-rest-port", default=8501, show_default=True)
@click.option("--tfserving-protocol", type=click.Choice(PROTOCOLS), default="grpc",
              show_default=True)
@click.option("--tfserving-binary", default="tensorflow_model_server", show_default=True)
@click.option("--beam-pipeline-arg", "beam_args", multiple=True,
              help="Apache Beam pipeline option for the accuracy pipeline (repeat), e.g. "
                   "--beam-pipeline-arg=--direct_num_workers=2.")
@click.option("--allow-unsafe-ops", "allowed_ops", default="",
              help="Comma-separated op types (e.g. ReadFile) models may run although they "
                   "read or write files, run Python or open the network. Without it such a "
                   "model is not run, and reported with its error.")
@click.option("--json", "json_out", type=click.Path(), default=None,
              help="Write metrics.json here ('-': print it instead of the tables).")
@click.option("--report", "report_out", type=click.Path(), default=None,
              help="Write a self-contained HTML report here.")
def benchmark_command(models: tuple[str, ...], names: tuple[str, ...], batch_sizes: str,
                      concurrency: str, examples: str | None, label_key: str | None,
                      output_key: str | None, backend: str, signature: str,
                      warmup_requests: int, window_requests: int,
                      window_seconds: float | None, rewarm_requests: int,
                      tflite_pools: int | None, tflite_interpreters_per_pool: int,
                      max_windows: int,
                      stability_percent: float, intra_op_threads: int | None,
                      inter_op_threads: int | None, seed: int, tfserving_host: str | None,
                      tfserving_grpc_port: int, tfserving_rest_port: int,
                      tfserving_protocol: str, tfserving_binary: str,
                      beam_args: tuple[str, ...], allowed_ops: str, json_out: str | None,
                      report_out: str | None) -> None:
    """Benchmark MODEL (the baseline) against each further MODEL (candidates)."""
    from pathlib import Path

    from components.core.benchmark.config import (
        BenchmarkConfig,
        TFServingOptions,
        available_cores,
        name_models,
        parse_int_list,
    )
    from components.core.benchmark.run import run_benchmark

    config = BenchmarkConfig(
        backend=backend, batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
        concurrency=parse_int_list(concurrency, "--concurrency"),
        warmup_requests=warmup_requests, window_requests=window_requests,
        window_seconds=window_seconds or None, rewarm_requests=rewarm_requests,
        tflite_pools=tflite_pools, tflite_interpreters_per_pool=tflite_interpreters_per_pool,
        max_windows=max_windows,
        stability_percent=stability_percent,
        intra_op_threads=intra_op_threads if intra_op_threads is not None else available_cores(),
        inter_op_threads=inter_op_threads if inter_op_threads is not None else available_cores(),
        signature=signature, examples=Path(examples) if examples else None,
        label_key=label_key, output_key=output_key, seed=seed,
        beam_pipeline_args=tuple(beam_args), allowed_ops=op_list(allowed_ops),
        tfserving=TFServingOptions(binary=tfserving_binary, host=tfserving_host,
                                   grpc_port=tfserving_grpc_port,
                                   rest_port=tfserving_rest_port, protocol=tfserving_protocol))
    config.validate()
    specs = name_models(models, names)
    for option, out in (("--json", json_out), ("--report", report_out)):
        if out and out != "-" and not Path(out).parent.is_dir():
            raise ServoptError(f"{out}: the directory for {option} does not exist; create it "
                               "first")
    with stderr.status("benchmark: starting") as status:
        result = run_benchmark(specs, config,
                               progress=lambda message: status.update(f"benchmark: {message}"))
    if json_out == "-":
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        stdout.print(_results_table(result))
        stdout.print(_models_table(result))
        accuracy = _accuracy_table(result)
        if accuracy is not None:
            stdout.print(accuracy)
        if json_out:
            result.write_json(json_out)
            stdout.print(f"metrics written to {json_out}")
    if report_out:
        from components.core.benchmark.report import write_report

        write_report(result, report_out)
        if json_out != "-":
            stdout.print(f"report written to {report_out}")
    failed = result.failed()
    if result.baseline in failed:
        raise ServoptError(f"the baseline '{result.baseline}' could not be measured, so no "
                           f"candidate was compared: {failed[result.baseline]}")
    for name, error in failed.items():
        click.echo(f"servopt: warning: candidate '{name}' could not be measured: {error}",
                   err=True)
