"""`servopt label | promote | rollback | prune`: releasing pushed versions through TF
Serving's model config (components.core.gate.release), and the release step of
`servopt push --release labels`.

Each prints what TF Serving will serve (the labels and versions before and after) and,
with `--mlmd PATH`, records it in ML Metadata. Exit 0: done; 2: bad input or a change TF
Serving would refuse (one line, nothing written); 4: a promotion the gate blocked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from components.cli_support import LazyConsole, ServoptCommand, op_list

stdout = LazyConsole()


def model_config_option(func):
    return click.option(
        "--model-config", type=click.Path(path_type=Path), default=None,
        help="The TF Serving model config file (text ModelServerConfig; default: the "
             "thresholds' release.model_config, else models.config in DESTINATION's "
             "parent directory).")(func)


def thresholds_option(func):
    return click.option(
        "--thresholds", "thresholds_path", type=click.Path(path_type=Path), default=None,
        help="The gate's YAML (its release: section and, for promote, its thresholds; "
             "default: the packaged configs/thresholds.yaml).")(func)


def server_option(func):
    return click.option(
        "--server", default=None, metavar="HOST:PORT",
        help="TF Serving's REST address (--rest_api_port): a label moves only onto a "
             "version it reports AVAILABLE (GET /v1/models/NAME). Without it you state that "
             "the version is loaded.")(func)


def mlmd_option(func):
    return click.option(
        "--mlmd", "mlmd_path", type=click.Path(path_type=Path), default=None,
        help="Record the operation in this ML Metadata SQLite database.")(func)


def release_settings(thresholds_path: Path | None, model_config: Path | None,
                     mode: str | None = None):
    """(Thresholds, ReleaseConfig): the gate's config, with the command line's choices."""
    from dataclasses import replace

    from components.core.gate import Thresholds

    thresholds = Thresholds.from_yaml(thresholds_path)
    release = thresholds.release
    if mode is not None:
        release = replace(release, mode=mode)
    if model_config is not None:
        release = replace(release, model_config=str(model_config))
    return thresholds, release


def _server(address: str | None):
    from components.core.gate.release import RestServerStatus

    return RestServerStatus(address) if address else None


def base_server_command(release, model_config: str) -> str:
    """The tensorflow_model_server command that serves the model config."""
    from components.core.gate.decision import GRPC_PORT, REST_API_PORT, SERVER_BINARY
    from components.core.gate.release import server_command

    return " ".join(server_command([SERVER_BINARY, f"--port={GRPC_PORT}",
                                    f"--rest_api_port={REST_API_PORT}"],
                                   model_config, release))


def report(result, destination: str, release, mlmd_path: Path | None,
           as_json: bool, pushed: dict | None = None) -> None:
    """Prints a release result (and records it in MLMD when asked)."""
    from components.core.table import Paragraph

    execution = None
    if mlmd_path is not None:
        from components.core.gate.release_mlmd import record_release

        execution = record_release(mlmd_path, result, destination)
    if as_json:
        data = {**result.to_dict(), "mlmd_execution": execution}
        if pushed is not None:
            data["pushed"] = pushed
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return

    def labels(values: dict) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "none"

    lines = [f"{result.operation} '{result.model_name}' in {result.model_config}"
             + (f": {result.note}" if result.note else ""),
             f"  labels: {labels(result.labels_before)} -> {labels(result.labels_after)}",
             f"  served: {result.served_before or 'latest'} -> {result.served_after or '-'}"]
    if result.removed_versions or result.operation == "prune":
        removed = ", ".join(map(str, result.removed_versions)) or "none"
        lines.append(f"  would remove: {removed}" if "dry run" in result.note
                     else f"  removed versions: {removed}")
    if result.pending:
        lines.append(f"  next step: {result.pending}")
    if result.operation in ("push", "label") and result.steps_written:
        lines.append(f"  serve with: {base_server_command(release, result.model_config)}")
        lines.append("  clients: /v1/models/NAME/labels/LABEL:predict (gRPC "
                     "ModelSpec.version_label); a request without a version gets the "
                     "highest served version, the canary while one is in flight")
    if execution is not None:
        lines.append(f"  ML Metadata: execution {execution} in {mlmd_path}")
    for line in lines:
        stdout.print(Paragraph(line))


def release_after_push(destination: str, pushed, release, server: str | None,
                       wait_s: float, mlmd_path: Path | None, as_json: bool,
                       keep_last: int | None = None) -> None:
    """`servopt push --release labels`, after push.py published `pushed` (a PushResult):
    the model config steps, then retention (never what is served: keep_last counts only
    versions nothing else keeps)."""
    from components.core.gate.release import release_pushed

    result = release_pushed(destination, pushed.version, release, keep_last=keep_last,
                            server=_server(server), wait_s=wait_s)
    report(result, destination, release, mlmd_path, as_json, pushed.to_dict())


@click.command("label", cls=ServoptCommand)
@click.argument("destination")
@click.option("--version", type=int, default=None,
              help="The version to label (default: the newest served, unlabelled one).")
@model_config_option
@thresholds_option
@server_option
@mlmd_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def label_command(destination: str, version: int | None, model_config: Path | None,
                  thresholds_path: Path | None, server: str | None,
                  mlmd_path: Path | None, as_json: bool) -> None:
    """Step 2 of `servopt push --release labels`: move the labels onto the version the
    push served (first version: stable and canary; later ones: canary), once TF Serving
    has loaded it (TF Serving refuses a label on a version it has not loaded)."""
    from components.core.gate.release import label

    _, release = release_settings(thresholds_path, model_config)
    result = label(destination, release, version=version, server=_server(server))
    report(result, destination, release, mlmd_path, as_json)


@click.command("promote", cls=ServoptCommand)
@click.argument("destination")
@model_config_option
@thresholds_option
@server_option
@mlmd_option
@click.option("--examples", type=click.Path(path_type=Path), default=None,
              help="Eval examples for the paired benchmark (labelled ones for accuracy).")
@click.option("--benchmark-config", type=click.Path(path_type=Path), default=None,
              help="Benchmark settings YAML (default: the packaged benchmark.yaml, "
                   "without the configuration search).")
@click.option("--no-check", is_flag=True,
              help="Promote without the gate's checks (release.check_promotion: false).")
@click.option("--allow-unsafe-ops", "allowed_ops", default="",
              help="Comma-separated op types the safety scan accepts.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def promote_command(destination: str, model_config: Path | None,
                    thresholds_path: Path | None, server: str | None,
                    mlmd_path: Path | None, examples: Path | None,
                    benchmark_config: Path | None, no_check: bool, allowed_ops: str,
                    as_json: bool) -> None:
    """The canary becomes stable (both labels on it; the old stable stays served,
    unlabelled, for a rollback). First the gate's checks: the canary's warm-up replayed,
    then canary and stable benchmarked in one run and the canary judged against the
    stable version by the thresholds; exit 4 when they block it."""
    from components.core.gate.release import promote

    thresholds, release = release_settings(thresholds_path, model_config)
    check = None
    if release.check_promotion and not no_check:
        from dataclasses import replace

        from components.core.benchmark.config import BenchmarkConfig
        from components.core.gate.release_check import promotion_check

        bench = (replace(BenchmarkConfig.from_yaml(benchmark_config), search_budget_s=0)
                 if benchmark_config else None)
        check = promotion_check(destination, thresholds, bench, examples,
                                op_list(allowed_ops))
    result = promote(destination, release, server=_server(server), check=check)
    report(result, destination, release, mlmd_path, as_json)


@click.command("rollback", cls=ServoptCommand)
@click.argument("destination")
@click.option("--canary-only", is_flag=True,
              help="Only withdraw the canary (its label back on stable); stable stays.")
@model_config_option
@thresholds_option
@server_option
@mlmd_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def rollback_command(destination: str, canary_only: bool, model_config: Path | None,
                     thresholds_path: Path | None, server: str | None,
                     mlmd_path: Path | None, as_json: bool) -> None:
    """Stable back on the previous stable version; the canary withdrawn (its label with
    stable). The versions left are unloaded but never deleted."""
    from components.core.gate.release import rollback

    _, release = release_settings(thresholds_path, model_config)
    result = rollback(destination, release, canary_only=canary_only,
                      server=_server(server))
    report(result, destination, release, mlmd_path, as_json)


@click.command("prune", cls=ServoptCommand)
@click.argument("destination")
@click.option("--keep-last", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also keep the newest N versions on disk.")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@model_config_option
@thresholds_option
@mlmd_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def prune_command(destination: str, keep_last: int, dry_run: bool,
                  model_config: Path | None, thresholds_path: Path | None,
                  mlmd_path: Path | None, as_json: bool) -> None:
    """Remove old versions that nothing keeps: no label, no specific{versions} entry, not
    newer than stable, not served, not among the newest --keep-last."""
    from components.core.gate.release import prune

    _, release = release_settings(thresholds_path, model_config)
    result = prune(destination, release, keep_last=keep_last, dry_run=dry_run)
    report(result, destination, release, mlmd_path, as_json)


COMMANDS = {"label": label_command, "promote": promote_command,
            "rollback": rollback_command, "prune": prune_command}
