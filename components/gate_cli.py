"""`servopt gate` and `servopt push`: PusherGate's decision and atomic push, without TFX.

For teams with their own CI/CD: `servopt benchmark ... --json metrics.json`, then
`servopt gate metrics.json --thresholds T.yaml` (exit 0: a candidate passes, 1: blocked,
2: bad input, 3: a candidate passes but is not faster than the version served now, which
stays), then `servopt push CHOSEN_MODEL DESTINATION` on exit 0 only. Both run the same library
functions as the PusherGate component (components.core.gate).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from components.cli_support import LazyConsole, ServoptCommand, op_list
from components.core.errors import ServoptError
from components.release_cli import (
    mlmd_option,
    model_config_option,
    release_after_push,
    release_settings,
    server_option,
    thresholds_option,
)

BLOCKED_EXIT = 1
# A pair passed every check, but is not faster than the served version with confidence
# (GateDecision.served_stays): nothing to push, as PusherGate pushes nothing then. Not 0,
# so `servopt gate ... && servopt push ...` does not roll out a version on noise.
SERVED_STAYS_EXIT = 3
stdout = LazyConsole()
TRAFFIC_OBJECTIVES = ("weighted_p50_ms", "weighted_p99_ms", "throughput_per_core")


def traffic_options(command):
    """The traffic profile's flags, over the thresholds file's `traffic:` (shared by
    `servopt gate` and `servopt benchmark`)."""
    options = (
        click.option("--traffic", "traffic_requests", default=None,
                     help="The batch sizes clients send with their share of requests, "
                          "e.g. 1:0.9,100:0.1 (default: the thresholds' traffic.requests)."),
        click.option("--slo-p99-ms", "traffic_slo", default=None,
                     help="The p99 SLO per batch size in ms, e.g. 1:50,100:500."),
        click.option("--traffic-objective", type=click.Choice(TRAFFIC_OBJECTIVES),
                     default=None, help="What ranks the pairs that meet every SLO "
                                        "(default: the thresholds' traffic.objective)."),
        click.option("--clients", "traffic_clients", type=int, default=None,
                     help="Clients sending at once (default: the thresholds' "
                          "traffic.clients)."))
    for option in reversed(options):
        command = option(command)
    return command


def thresholds_with_flags(thresholds, requests: str | None = None, slo: str | None = None,
                          objective: str | None = None, clients: int | None = None):
    """The thresholds with the traffic flags applied."""
    import dataclasses

    from components.core.traffic import with_flags

    profile = with_flags(thresholds.traffic, requests, slo, objective, clients)
    return thresholds if profile is thresholds.traffic else dataclasses.replace(
        thresholds, traffic=profile)


def _served_metrics(path: Path):
    """One model's entry of a metrics.json (models.<name>), as the gate records at a push."""
    try:
        served = json.loads(path.read_text())
    except FileNotFoundError:
        raise ServoptError(f"{path}: no such served-metrics file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ServoptError(f"{path}: cannot read it as JSON ({err})") from None
    if not isinstance(served, dict) or "batches" not in served:
        raise ServoptError(f"{path}: expected one model's metrics (the object under "
                           "models.<name> in a metrics.json, or the 'chosen_metrics' of "
                           "`servopt gate --json`), with its 'batches'")
    from components.core.benchmark.schema import ModelResult

    return ModelResult.from_dict(served, str(path))


@click.command("gate", cls=ServoptCommand)
@click.argument("metrics_json", type=click.Path(path_type=Path))
@click.option("--thresholds", "thresholds_path", type=click.Path(path_type=Path),
              default=None, help="Thresholds YAML (default: the packaged "
                                 "configs/thresholds.yaml; start from a copy of it).")
@click.option("--served-metrics", type=click.Path(path_type=Path), default=None,
              help="The metrics of the model served now (one model's entry of a "
                   "metrics.json, e.g. the 'chosen_metrics' of an earlier `servopt gate "
                   "--json`), for the vs_served thresholds; without it they are not "
                   "applicable (a first push).")
@click.option("--allowed-op", "allowed_ops", multiple=True,
              help="An op type the safety scan accepts although it touches files, Python "
                   "or the network (repeat).")
@click.option("--destination", default=None,
              help="The TF Serving model base directory the chosen model will be pushed "
                   "to, for the whole tensorflow_model_server command line (without it: "
                   "${MODEL_BASE_PATH} and ${MODEL_NAME}).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@click.option("--report", "report_out", type=click.Path(path_type=Path), default=None,
              help="Write the benchmark's HTML report here, the pair the gate chose "
                   "highlighted in its figures.")
@traffic_options
def gate_command(metrics_json: Path, thresholds_path: Path | None,
                 served_metrics: Path | None,
                 allowed_ops: tuple[str, ...], destination: str | None,
                 as_json: bool, report_out: Path | None, traffic_requests: str | None = None,
                 traffic_slo: str | None = None, traffic_objective: str | None = None,
                 traffic_clients: int | None = None) -> None:
    """Decide which model of METRICS_JSON (a `servopt benchmark --json` or ServingBenchmark
    result) may be pushed. Exit 0 when one passes, 1 when blocked, 2 on bad input, 3 when
    one passes but is not faster than the served version (`servopt benchmark --served`)
    with confidence: the served version stays, nothing is to be pushed.

    Model paths are those metrics.json recorded: absolute ones (`servopt benchmark`, the
    pipelines) from anywhere; a relative one from the directory the benchmark ran in.
    Thresholds: --thresholds, else the packaged defaults (configs/thresholds.yaml)."""
    from components.core.gate import Thresholds, load_metrics

    metrics = load_metrics(metrics_json)  # bad input fails here, before TensorFlow loads
    thresholds = thresholds_with_flags(Thresholds.from_yaml(thresholds_path),
                                       traffic_requests, traffic_slo, traffic_objective,
                                       traffic_clients)
    served = _served_metrics(served_metrics) if served_metrics else None
    from components.core.gate import candidate_paths, evaluate_gate, pairs_table

    decision = evaluate_gate(metrics, thresholds, candidate_paths(metrics), served=served,
                             allowed_ops=allowed_ops)
    if destination:
        decision = decision.with_destination(destination)
    if report_out is not None:
        from components.core.benchmark.report import write_report

        write_report(metrics, report_out, chosen=decision.row if decision.blessed else None)
    if as_json:
        chosen = metrics.models[decision.row].to_dict() if decision.chosen else None
        json.dump({**decision.to_dict(), "chosen_metrics": chosen}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from components.core.table import Paragraph

        stdout.print(pairs_table(decision))
        for line in decision.summary_lines():
            stdout.print(Paragraph(line))
    if not decision.blessed:
        sys.exit(BLOCKED_EXIT)
    if decision.served_stays:
        sys.exit(SERVED_STAYS_EXIT)


@click.command("push", cls=ServoptCommand)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("destination")
@click.option("--keep-last", type=click.IntRange(min=1), default=None,
              help="Keep only the newest N versions in DESTINATION (default: keep all).")
@click.option("--warmup-examples", type=click.Path(path_type=Path), default=None,
              help="Eval examples (TFRecords of tf.Example, a TFX Examples artifact or "
                   ".npz) to write TF Serving warm-up requests from.")
@click.option("--allow-unsafe-ops", "allowed_ops", default="",
              help="Comma-separated op types the safety scan refuses that MODEL may run "
                   "anyway (TF Serving runs what is pushed; only for models you trust).")
@click.option("--release", "release_mode", type=click.Choice(["latest", "labels"]),
              default=None, help="latest: TF Serving serves the highest version (all the "
              "traffic at once); labels: also write the TF Serving model config, the "
              "version served as 'canary' beside 'stable' (docs/release.md). Default: the "
              "thresholds' release.mode (latest).")
@model_config_option
@thresholds_option
@server_option
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=300,
              show_default=True, help="With --server: seconds to wait for the version to "
              "load before the label moves.")
@mlmd_option
@click.option("--json", "as_json", is_flag=True, help="Print the push as JSON.")
def push_command(model: Path, destination: str, keep_last: int | None,
                 warmup_examples: Path | None, allowed_ops: str, release_mode: str | None,
                 model_config: Path | None, thresholds_path: Path | None,
                 server: str | None, wait_s: float, mlmd_path: Path | None,
                 as_json: bool) -> None:
    """Publish MODEL as a new TF Serving version under DESTINATION, atomically: the
    PusherGate's push (a version above every existing one, saved_model.pb last, renamed
    into place under a lock)."""
    from components.core.gate import push_model

    _, release = release_settings(thresholds_path, model_config, release_mode)
    labels = release.mode == "labels"
    if labels:
        from components.core.gate.release import check_release

        check_release(destination, release)  # a config TF Serving refuses: nothing pushed
    result = push_model(model, destination, keep_last=None if labels else keep_last,
                        warmup_examples=warmup_examples, allowed_ops=op_list(allowed_ops))
    if labels:
        release_after_push(destination, result, release, server, wait_s, mlmd_path,
                           as_json, keep_last)
        return
    if as_json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    from components.core.table import Paragraph

    stdout.print(Paragraph(f"pushed {model} as version {result.version} to {result.path}"))
    if result.warmup_requests:
        stdout.print(Paragraph(f"warm-up requests: {result.warmup_requests}"))
    if result.removed_versions:
        stdout.print(Paragraph(f"removed versions (keep_last={keep_last}): "
                               f"{', '.join(map(str, result.removed_versions))}"))
