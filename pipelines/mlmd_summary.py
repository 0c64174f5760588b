"""Read a pipeline run back from ML Metadata: what ran, what it produced, what it measured.

The demo's progress display and its closing table come from here, so what the user sees
is what MLMD recorded, not what the process believes it did.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import ml_metadata as mlmd
from ml_metadata.errors import AbortedError, InternalError, UnavailableError
from ml_metadata.proto import metadata_store_pb2

Execution = metadata_store_pb2.Execution
DONE_STATES = {Execution.COMPLETE, Execution.CACHED}
STATE_NAMES = {Execution.COMPLETE: "ran", Execution.CACHED: "cached",
               Execution.FAILED: "failed", Execution.RUNNING: "running",
               Execution.NEW: "new", Execution.CANCELED: "canceled"}


def open_store(sqlite_path: Path, read_only: bool = False) -> mlmd.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(sqlite_path)
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READONLY if read_only
        else metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
    return mlmd.MetadataStore(config)


def custom_properties(item) -> dict:
    values = {}
    for key, value in item.custom_properties.items():
        kind = value.WhichOneof("value")
        values[key] = getattr(value, kind) if kind else None
    return values


@dataclass
class ExecutionRecord:
    id: int
    component: str  # the node id in the pipeline, e.g. "Freezer"
    state: str
    outputs: dict[str, list[metadata_store_pb2.Artifact]] = field(default_factory=dict)
    inputs: dict[str, list[metadata_store_pb2.Artifact]] = field(default_factory=dict)


def _run_contexts(store: mlmd.MetadataStore) -> list[metadata_store_pb2.Context]:
    return sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)


def latest_run_id(store: mlmd.MetadataStore) -> int | None:
    runs = _run_contexts(store)
    return runs[-1].id if runs else None


def _node_name(store: mlmd.MetadataStore, execution_id: int) -> str:
    for context in store.get_contexts_by_execution(execution_id):
        if store.get_context_types_by_id([context.type_id])[0].name == "node":
            return context.name.split(".", 1)[-1]
    return "?"


def run_executions(store: mlmd.MetadataStore, run_context_id: int) -> list[ExecutionRecord]:
    """The run's executions in order, with their input and output artifacts by key."""
    executions = sorted(store.get_executions_by_context(run_context_id), key=lambda e: e.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    artifact_ids = sorted({event.artifact_id for event in events})
    artifacts = {a.id: a for a in store.get_artifacts_by_id(artifact_ids)}
    records = []
    for execution in executions:
        record = ExecutionRecord(execution.id, _node_name(store, execution.id),
                                 STATE_NAMES.get(execution.last_known_state, "unknown"))
        for event in events:
            if event.execution_id != execution.id:
                continue
            key = event.path.steps[0].key if event.path.steps else ""
            side = record.outputs if event.type == metadata_store_pb2.Event.OUTPUT else (
                record.inputs if event.type == metadata_store_pb2.Event.INPUT else None)
            if side is not None:
                side.setdefault(key, []).append(artifacts[event.artifact_id])
        records.append(record)
    return records


def completed_components(store: mlmd.MetadataStore, run_context_id: int) -> list[str]:
    """Components of the run that finished (ran or were cached); tolerant of a busy DB."""
    with contextlib.suppress(AbortedError, InternalError, UnavailableError):
        return [_node_name(store, e.id)
                for e in sorted(store.get_executions_by_context(run_context_id),
                                key=lambda e: e.id)
                if e.last_known_state in DONE_STATES]
    return []
