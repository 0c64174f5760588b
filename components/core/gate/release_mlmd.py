"""Record a release operation in ML Metadata: one execution of type `ServoptRelease` per
push, label move, promotion, rollback or prune, with which version held each label
before and after, and the versions served before and after (custom properties, in the
vocabulary of TFX's Pusher: `pushed_version`, `pushed_destination`)."""

from __future__ import annotations

import json
from pathlib import Path

from components.core.errors import ServoptError
from components.core.gate.release import ReleaseResult

EXECUTION_TYPE = "ServoptRelease"


def release_properties(result: ReleaseResult, destination: str) -> dict[str, int | str]:
    """The result as MLMD custom properties: ints and strings only."""
    props: dict[str, int | str] = {
        "operation": result.operation, "model_name": result.model_name,
        "model_config": result.model_config, "pushed_destination": str(destination),
        "labels_before": json.dumps(result.labels_before, sort_keys=True),
        "labels_after": json.dumps(result.labels_after, sort_keys=True),
        "served_before": json.dumps(result.served_before),
        "served_after": json.dumps(result.served_after),
        "steps_written": result.steps_written, "pending": result.pending,
        "removed_versions": json.dumps(result.removed_versions), "note": result.note}
    if result.version is not None:
        props["version"] = result.version
    for label, version in result.labels_before.items():
        props[f"{label}_before"] = version
    for label, version in result.labels_after.items():
        props[f"{label}_after"] = version
    return props


def artifact_properties(result: ReleaseResult) -> dict[str, int | str]:
    """The release recorded on a PushedModel artifact (TFX or KFP): `release_*` keys."""
    return {f"release_{key}": value
            for key, value in release_properties(result, "").items()
            if key not in ("pushed_destination", "model_name")}


def record_release(sqlite_path: str | Path, result: ReleaseResult, destination: str) -> int:
    """Writes one COMPLETE execution into the MLMD SQLite database (created if missing);
    returns its id."""
    try:
        import ml_metadata as mlmd
        from ml_metadata.proto import metadata_store_pb2
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise ServoptError(f"ml-metadata is not installed ({err})") from None
    path = Path(sqlite_path)
    if not path.parent.is_dir():
        raise ServoptError(f"{path}: its directory does not exist; give an MLMD SQLite path "
                           "in an existing directory")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
    try:
        store = mlmd.MetadataStore(config)
        type_id = store.put_execution_type(metadata_store_pb2.ExecutionType(
            name=EXECUTION_TYPE))
        execution = metadata_store_pb2.Execution(
            type_id=type_id, last_known_state=metadata_store_pb2.Execution.COMPLETE)
        for key, value in release_properties(result, destination).items():
            if isinstance(value, int):
                execution.custom_properties[key].int_value = value
            else:
                execution.custom_properties[key].string_value = value
        [execution_id] = store.put_executions([execution])
    except Exception as err:  # MLMD raises its own error types for a bad database
        raise ServoptError(f"{path}: cannot record the release in ML Metadata "
                           f"({type(err).__name__}: {err})") from None
    return execution_id
