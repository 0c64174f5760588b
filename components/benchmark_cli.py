"""`servopt benchmark`: latency, throughput, size and accuracy of a baseline and candidates.

Registered in the `servopt` group (components.cli) with `main.add_command(benchmark_command)`;
it also runs on its own. Errors the user can fix end with a one-line message on stderr
and exit code 2. When the baseline cannot be measured the command writes what it has
(--json, --report) and exits 2; when only candidates fail it prints one warning line per
failed candidate and exits 0 (the failures are recorded in the result's `error` fields).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TYPE_CHECKING

import click

from components.cli_support import LazyConsole, ServoptCommand, op_list
from components.core.benchmark.config import (
    BACKENDS,
    PROTOCOLS,
    SEARCH_OBJECTIVES,
    BenchmarkConfig,
    TFServingOptions,
)
from components.core.benchmark.worker_log import WORKERS_DIR
from components.core.errors import ServoptError
from components.gate_cli import thresholds_with_flags, traffic_options

if TYPE_CHECKING:
    from components.core.table import Cell, Table

stdout = LazyConsole()
stderr = LazyConsole(stderr=True)
# Every option defaults to None ("not given"): what is not given takes these defaults.
DEFAULTS = BenchmarkConfig()
TFSERVING_DEFAULTS = TFServingOptions()


def _with_default(text: str, value) -> str:
    """Help text ending in the library's default, e.g. '(default: 1,100)'."""
    shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
    return f"{text} (default: {shown})".lstrip()


def _stable(flag: bool) -> Cell:
    from components.core.table import Cell

    return Cell("yes", "green") if flag else Cell("no", "yellow")


def _speedup(value: float | None) -> Cell:
    from components.core.table import Cell

    if value is None:
        return Cell("")
    return Cell(f"{value:.2f}x", "green" if value >= 1.05 else "red" if value <= 0.95 else "")


def _results_table(result) -> Table:
    """`CI x p50`: the speedup's confidence interval (the benchmark's `confidence`)."""
    from components.core.benchmark.stats import interval_text
    from components.core.table import Column, Table

    table = Table(title=f"latency (ms), throughput (examples/s), speedup vs "
                        f"{result.baseline}: {result.settings.backend}, "
                        f"{result.machine.cores} cores, TF {result.machine.tensorflow_version}",
                  columns=(Column("model"), Column("runtime"),
                           *(Column(c, numeric=True) for c in (
                               "batch", "p50", "p90", "p99", "ex/s", "stable", "x p50",
                               "CI x p50", "x p99"))),
                  key_columns=3)
    for size in result.settings.batch_sizes:
        for name, model in result.models.items():
            batch = model.batches.get(size)
            if batch is None:
                continue
            table.add_row(name, model.runtime.runtime if model.runtime else "tf serving",
                          str(size), f"{batch.p50_ms:.2f}", f"{batch.p90_ms:.2f}",
                          f"{batch.p99_ms:.2f}", f"{batch.throughput:,.0f}",
                          _stable(batch.stable), _speedup(batch.speedup_p50),
                          interval_text(batch.speedup_p50_interval),
                          _speedup(batch.speedup_p99))
    return table


def search_table(result) -> Table | None:
    """The configuration search, best first; `*`: the best settings of each contender."""
    from components.core.benchmark.search_table import search_rows
    from components.core.benchmark.stats import interval_text
    from components.core.table import Column, Table

    rows = search_rows(result)
    if not rows:
        return None
    search = result.search
    judged = f"{search.objective} at batch {search.batch_size}"
    if search.traffic and len(search.traffic.get("requests") or ()) > 1:
        from components.core.traffic import TrafficProfile

        judged = ("the traffic profile "
                  + TrafficProfile.from_dict(search.traffic, "metrics").describe())
    tried = f"; knobs tried: {', '.join(search.tried) or 'none'}" if search.traffic else ""
    table = Table(title=f"configuration search: {judged}, best first "
                        f"({search.elapsed_s:.0f} s of {search.budget_s:g}; "
                        f"{search.stopped}{tried}); * = best of its version",
                  columns=(Column("model"), Column("runtime"), Column("configuration"),
                           *(Column(c, numeric=True) for c in (
                               "p50", "p99", "ex/s", "x p99", "CI x p99"))),
                  key_columns=3)
    for row in rows:
        table.add_row(("* " if row.best else "") + row.version, row.runtime, row.label,
                      f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}", f"{row.throughput:,.0f}",
                      _speedup(row.speedup_p99), interval_text(row.speedup_p99_interval))
    return table


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "" if value is None else format(value / scale, spec)


def _models_table(result) -> Table:
    from components.core.table import Cell, Column, Table

    table = Table(title="per model", columns=(Column("model"), *(Column(c, numeric=True) for c in (
        "size MB", "load s", "1st request ms", "peak MB", "MFLOP/example"))))
    for name, m in result.models.items():
        if m.error and not m.batches:
            table.add_row(name, _fmt(m.size_bytes, ".2f", 1e6), Cell("failed", "red"))
            continue
        table.add_row(name, _fmt(m.size_bytes, ".2f", 1e6), _fmt(m.load_time_s, ".2f"),
                      _fmt(m.first_request_ms, ".1f"), _fmt(m.peak_memory_bytes, ".0f", 1e6),
                      _fmt(m.flops_per_example, ".2f", 1e6))
    return table


def _accuracy_table(result) -> Table | None:
    from components.core.table import Column, Table

    measured = {n: m.accuracy for n, m in result.models.items() if m.accuracy is not None}
    if not measured:
        return None
    table = Table(title=f"accuracy ({next(iter(measured.values())).num_examples} examples; "
                        f"agreement and difference against {result.baseline})",
                  columns=(Column("model"), *(Column(c, numeric=True) for c in (
                      "accuracy", "top-1 agreement", "max abs diff"))))
    for name, a in measured.items():
        table.add_row(name, _fmt(a.accuracy, ".2%"), _fmt(a.top1_agreement, ".2%"),
                      _fmt(a.max_abs_diff, ".2e"))
    return table


def _gate_lines(settings: dict, thresholds_path: str | None, *traffic_flags) -> dict:
    """What the gate that reads this benchmark decides on (its thresholds: `--thresholds`,
    else the packaged ones): the speedup lines to measure until decided, and its traffic
    profile (its batch sizes measured, the search judged on it). Without --thresholds or
    a traffic flag, a profile whose batch sizes --batch-sizes leaves out is not searched
    on (the search then reads --search-objective at --search-batch-size)."""
    from components.core.gate import Thresholds

    thresholds = thresholds_with_flags(Thresholds.from_yaml(thresholds_path), *traffic_flags)
    lines = {key: value for key, value in thresholds.decision_lines().items()
             if key != "traffic"}
    profile = thresholds.traffic
    asked = thresholds_path is not None or any(f is not None for f in traffic_flags)
    sizes = tuple(settings.get("batch_sizes") or DEFAULTS.batch_sizes)
    if asked:
        lines["batch_sizes"] = sizes + tuple(b for b in profile.batch_sizes if b not in sizes)
    searched_as_asked = (settings.get("search_objective") is not None
                         or settings.get("search_batch_size") is not None)
    if not searched_as_asked and (asked or all(b in sizes for b in profile.batch_sizes)):
        lines["traffic"] = profile
    return lines


@click.command("benchmark", cls=ServoptCommand)
@click.argument("models", nargs=-1, required=True)
@click.option("--name", "names", multiple=True,
              help="Name of each model, in order (repeat). Or pass models as NAME=PATH. "
                   "Default: the directory name, made unique.")
@click.option("--batch-sizes", default=None,
              help=_with_default("Comma-separated batch sizes.", DEFAULTS.batch_sizes))
@click.option("--concurrency", default=None,
              help=_with_default("Comma-separated numbers of concurrent clients for the "
                                 "throughput sweep.", DEFAULTS.concurrency))
@click.option("--examples", type=click.Path(), default=None,
              help="Real inputs: TFRecords of tf.Example (file, directory or TFX Examples "
                   "artifact) or an .npz keyed by input name. Default: generated from the "
                   "signature.")
@click.option("--label-key", default=None,
              help="With --examples: the label feature; enables accuracy per model.")
@click.option("--output-key", default=None,
              help="The classifier output accuracy reads (default: the first "
                   "[batch, classes] float output).")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help=_with_default("session: in-process, each model on the runtime TF Serving "
                                 "would use (a Session; TfLiteSession's interpreters for a "
                                 ".tflite file or model.tflite beside saved_model.pb); "
                                 "tfserving: a real tensorflow_model_server.",
                                 DEFAULTS.backend))
@click.option("--signature", default=None, help=_with_default("", DEFAULTS.signature))
@click.option("--warmup-requests", type=int, default=None,
              help=_with_default("Requests per model and batch size before measuring (not "
                                 "counted).", DEFAULTS.warmup_requests))
@click.option("--window-seconds", type=float, default=None,
              help=_with_default("A measurement window is this time span, or shorter "
                                 "once it holds --window-requests; 0: windows of "
                                 "--window-requests.", DEFAULTS.window_seconds))
@click.option("--window-requests", type=int, default=None,
              help=_with_default("Requests that end a measurement window (all of it when "
                                 "--window-seconds is 0).", DEFAULTS.window_requests))
@click.option("--rewarm-requests", type=int, default=None,
              help=_with_default("Untimed requests before every window, after switching "
                                 "models.", DEFAULTS.rewarm_requests))
@click.option("--tflite-pools", type=int, default=None,
              help="TFLite rows: interpreters, as TF Serving's --num_tflite_pools "
                   "(default: the cores, its default).")
@click.option("--tflite-interpreters-per-pool", type=int, default=None,
              help=_with_default("TFLite rows: as TF Serving's "
                                 "--num_tflite_interpreters_per_pool; above 1 large batches "
                                 "are split across the interpreters.",
                                 DEFAULTS.tflite_interpreters_per_pool))
@click.option("--max-windows", type=int, default=None,
              help=_with_default("Windows to measure at most while waiting for stability.",
                                 DEFAULTS.max_windows))
@click.option("--stability-percent", type=float, default=None,
              help=_with_default("Stable when the last 3 windows' p50 spread at most this "
                                 "much.", DEFAULTS.stability_percent))
@click.option("--intra-op-threads", type=int, default=None,
              help="Threads per op, the same for every model (default: the cores).")
@click.option("--inter-op-threads", type=int, default=None,
              help="Ops run in parallel, the same for every model (default: the cores).")
@click.option("--search-budget", type=float, default=None,
              help=_with_default("Seconds the TF Serving configuration search may take after "
                                 "the default measurements (thread pools, TFLite batch "
                                 "splitting, bf16 where the CPU has it); 0: no search.",
                                 DEFAULTS.search_budget_s))
@click.option("--search-objective", type=click.Choice(SEARCH_OBJECTIVES), default=None,
              help=_with_default("What the search improves, at --search-batch-size.",
                                 DEFAULTS.search_metric()))
@click.option("--search-batch-size", type=int, default=None,
              help="The batch size the search reads its objective at (default: the "
                   "largest).")
@click.option("--search-contenders", type=int, default=None,
              help=_with_default("Candidate rows searched per runtime, the best by the "
                                 "objective.", DEFAULTS.search_contenders))
@click.option("--seed", type=int, default=None,
              help=_with_default("Seed for generated inputs.", DEFAULTS.seed))
@click.option("--tfserving-host", default=None,
              help="A running TF Serving that serves the models under their names "
                   "(default: start tensorflow_model_server per model).")
@click.option("--tfserving-grpc-port", type=int, default=None,
              help=_with_default("", TFSERVING_DEFAULTS.grpc_port))
@click.option("--tfserving-rest-port", type=int, default=None,
              help=_with_default("", TFSERVING_DEFAULTS.rest_port))
@click.option("--tfserving-protocol", type=click.Choice(PROTOCOLS), default=None,
              help=_with_default("", TFSERVING_DEFAULTS.protocol))
@click.option("--tfserving-binary", default=None,
              help=_with_default("", TFSERVING_DEFAULTS.binary))
@click.option("--beam-pipeline-arg", "beam_args", multiple=True,
              help="Apache Beam pipeline option for the accuracy pipeline (repeat), e.g. "
                   "--beam-pipeline-arg=--direct_num_workers=2.")
@click.option("--allow-unsafe-ops", "allowed_ops", default=None,
              help="Comma-separated op types (e.g. ReadFile) models may run although they "
                   "read or write files, run Python or open the network. Without it such a "
                   "model is not run, and reported with its error.")
@click.option("--served", type=click.Path(), default=None,
              help="The version served now (its version directory): measured as the row "
                   "'served' in the same rounds, so `servopt gate` compares the candidates "
                   "with it pairwise (vs_served).")
@click.option("--json", "json_out", type=click.Path(), default=None,
              help="Write metrics.json here ('-': print it instead of the tables).")
@click.option("--report", "report_out", type=click.Path(), default=None,
              help="Write a self-contained HTML report here.")
@click.option("--verbose", is_flag=True,
              help="Show what the worker processes print (TensorFlow's logs). Otherwise "
                   f"it is kept in {WORKERS_DIR}/ beside --json (or --report), and a failed "
                   "worker's last lines are shown.")
@click.option("--config", "config_path", type=click.Path(), default=None,
              help="A benchmark settings YAML (the keys of configs/benchmark.yaml, e.g. "
                   "total_budget_s, decision_budget_s, min_requests); the flags above "
                   "override it. Without it, the defaults the flags show.")
@click.option("--thresholds", "thresholds_path", type=click.Path(), default=None,
              help="The gate's thresholds YAML `servopt gate` will read (default: the "
                   "packaged configs/thresholds.yaml): the benchmark measures until its "
                   "speedup thresholds are decided, measures its traffic profile's batch "
                   "sizes and searches on the profile.")
@traffic_options
def benchmark_command(models: tuple[str, ...], names: tuple[str, ...],
                      batch_sizes: str | None, concurrency: str | None, examples: str | None,
                      label_key: str | None, output_key: str | None, backend: str | None,
                      signature: str | None, warmup_requests: int | None,
                      window_seconds: float | None, window_requests: int | None,
                      rewarm_requests: int | None, tflite_pools: int | None,
                      tflite_interpreters_per_pool: int | None, max_windows: int | None,
                      stability_percent: float | None, intra_op_threads: int | None,
                      inter_op_threads: int | None, search_budget: float | None,
                      search_objective: str | None, search_batch_size: int | None,
                      search_contenders: int | None, seed: int | None,
                      tfserving_host: str | None, tfserving_grpc_port: int | None,
                      tfserving_rest_port: int | None, tfserving_protocol: str | None,
                      tfserving_binary: str | None, beam_args: tuple[str, ...],
                      allowed_ops: str | None, served: str | None, json_out: str | None,
                      report_out: str | None, verbose: bool,
                      config_path: str | None = None, thresholds_path: str | None = None,
                      traffic_requests: str | None = None, traffic_slo: str | None = None,
                      traffic_objective: str | None = None,
                      traffic_clients: int | None = None) -> None:
    """Benchmark MODEL (the baseline) against each further MODEL (candidates)."""
    from pathlib import Path

    from components.core.benchmark.config import name_models, parse_int_list
    from components.core.benchmark.worker_log import worker_output

    given = {
        "backend": backend, "signature": signature, "label_key": label_key,
        "output_key": output_key, "seed": seed, "warmup_requests": warmup_requests,
        "window_requests": window_requests, "window_seconds": window_seconds,
        "rewarm_requests": rewarm_requests, "tflite_pools": tflite_pools,
        "tflite_interpreters_per_pool": tflite_interpreters_per_pool,
        "max_windows": max_windows, "stability_percent": stability_percent,
        "intra_op_threads": intra_op_threads, "inter_op_threads": inter_op_threads,
        "search_budget_s": search_budget, "search_objective": search_objective,
        "search_batch_size": search_batch_size, "search_contenders": search_contenders,
        "batch_sizes": parse_int_list(batch_sizes, "--batch-sizes") if batch_sizes else None,
        "concurrency": (parse_int_list(concurrency, "--concurrency")
                        if concurrency is not None else None),
        "allowed_ops": op_list(allowed_ops) if allowed_ops is not None else None}
    settings = {key: value for key, value in given.items() if value is not None}
    if window_seconds == 0:  # windows of --window-requests requests
        settings["window_seconds"] = None
    tfserving = {"host": tfserving_host, "grpc_port": tfserving_grpc_port,
                 "rest_port": tfserving_rest_port, "protocol": tfserving_protocol,
                 "binary": tfserving_binary}
    base = BenchmarkConfig.from_yaml(config_path) if config_path else DEFAULTS
    settings |= _gate_lines({**dataclasses.asdict(base), **settings}, thresholds_path,
                            traffic_requests, traffic_slo, traffic_objective,
                            traffic_clients)
    config = dataclasses.replace(
        base, **settings,
        tfserving=dataclasses.replace(base.tfserving,
                                      **{k: v for k, v in tfserving.items() if v is not None}),
        examples=Path(examples) if examples else None, beam_pipeline_args=tuple(beam_args))
    config.validate()
    specs = name_models(models, names)
    for option, out in (("--json", json_out), ("--report", report_out)):
        if out and out != "-" and not Path(out).parent.is_dir():
            raise ServoptError(f"{out}: the directory for {option} does not exist; create it "
                               "first")
    from components.core.benchmark.outputs import metrics_checkpoint
    from components.core.benchmark.run import run_benchmark  # TensorFlow: after validation

    checkpoint = metrics_checkpoint(json_out) if json_out and json_out != "-" else None
    beside = next((Path(out).parent for out in (json_out, report_out) if out and out != "-"),
                  None)  # None: a temporary directory
    with (worker_output(beside / WORKERS_DIR if beside else None, verbose),
          stderr.status("benchmark: starting") as status):
        result = run_benchmark(specs, config,
                               progress=lambda message: status.update(f"benchmark: {message}"),
                               served=Path(served) if served else None,
                               checkpoint=checkpoint)
    if json_out == "-":
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        stdout.print(_results_table(result))
        stdout.print(_models_table(result))
        search = search_table(result)
        if search is not None:
            stdout.print(search)
        accuracy = _accuracy_table(result)
        if accuracy is not None:
            stdout.print(accuracy)
        if json_out:
            result.write_json(json_out)
            stdout.print(f"metrics written to {json_out}")
    if report_out:
        from components.core.benchmark.outputs import write_results

        failure = write_results(result, json_out if json_out and json_out != "-" else None,
                                report_out)
        if failure:
            click.echo(f"servopt: warning: the report could not be written: {failure}",
                       err=True)
        elif json_out != "-":
            stdout.print(f"report written to {report_out}")
    failed = result.failed()
    if result.baseline in failed:
        raise ServoptError(f"the baseline '{result.baseline}' could not be measured, so no "
                           f"candidate was compared: {failed[result.baseline]}")
    for name, error in failed.items():
        click.echo(f"servopt: warning: candidate '{name}' could not be measured: {error}",
                   err=True)
