"""The benchmark's result and its metrics.json form (schema_version 1).

Other components (the PusherGate, the TFX executor) read metrics.json, so the key names
here are a contract: change them only with a new `SCHEMA_VERSION`. A model that failed
has `error` set and null for what could not be measured.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from components.core.benchmark.stats import LatencySummary

SCHEMA_VERSION = 1
BASELINE = "baseline"
CANDIDATE = "candidate"


@dataclass
class MachineInfo:
    cpu_model: str
    cores: int
    tensorflow_version: str
    python_version: str
    platform: str


@dataclass
class Settings:
    backend: str  # "session": in-process, each model on its own runtime; or "tfserving"
    batch_sizes: list[int]
    concurrency: list[int]
    warmup_requests: int
    window_requests: int
    window_seconds: float | None
    max_windows: int
    stability_percent: float
    intra_op_threads: int
    inter_op_threads: int
    signature: str
    tflite_pools: int = 1
    tflite_interpreters_per_pool: int = 1


@dataclass
class BatchResult(LatencySummary):
    """Latency (ms) and throughput (examples/s) of one model at one batch size."""

    throughput: float
    stable: bool
    windows: int
    requests: int
    achieved_flops_per_s: float | None = None
    speedup_p50: float | None = None  # candidates only: median per-round ratio
    speedup_p99: float | None = None
    speedup_stable: bool | None = None  # the per-round p50 ratio of the last 3 rounds settled

    def to_dict(self, role: str) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in _CANDIDATE_ONLY}
        if role == CANDIDATE:
            data.update({name: getattr(self, name) for name in _CANDIDATE_ONLY})
        return data

    @classmethod
    def from_dict(cls, data: dict) -> BatchResult:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


_CANDIDATE_ONLY = ("speedup_p50", "speedup_p99", "speedup_stable")


@dataclass
class ConcurrencyResult:
    """N clients issuing requests at once against one loaded model."""

    concurrency: int
    batch_size: int
    throughput: float
    p50_ms: float
    p99_ms: float


@dataclass
class AccuracyResult:
    accuracy: float | None  # against the labels; None without labels or a classifier
    top1_agreement: float | None  # candidates: same top-1 class as the baseline
    max_abs_diff: float | None  # candidates: largest output difference to the baseline
    num_examples: int


@dataclass
class RuntimeInfo:
    """How a row was run, and the TF Serving flags that run it the same way."""

    runtime: str  # "tensorflow" (saved_model.pb in a Session) or "tflite"
    version: str  # the model this row measures; a TFLite variant has two rows of one version
    settings: dict  # the runtime's settings as measured (threads, interpreter pools)
    server_flags: list[str]  # tensorflow_model_server flags selecting this runtime
    servable: bool = True  # False: a bare .tflite file, which TF Serving cannot serve


@dataclass
class ModelResult:
    path: str
    role: str
    error: str | None = None
    runtime: RuntimeInfo | None = None  # None: measured on a live TF Serving (tfserving)
    size_bytes: int | None = None
    load_time_s: float | None = None
    first_request_ms: float | None = None
    peak_memory_bytes: int | None = None
    flops_per_example: int | None = None
    batches: dict[int, BatchResult] = field(default_factory=dict)
    concurrency: list[ConcurrencyResult] = field(default_factory=list)
    accuracy: AccuracyResult | None = None

    def to_dict(self) -> dict:
        return {
            "path": self.path, "role": self.role, "error": self.error,
            "runtime": vars(self.runtime).copy() if self.runtime else None,
            "size_bytes": self.size_bytes, "load_time_s": self.load_time_s,
            "first_request_ms": self.first_request_ms,
            "peak_memory_bytes": self.peak_memory_bytes,
            "flops_per_example": self.flops_per_example,
            "batches": {str(size): batch.to_dict(self.role)
                        for size, batch in sorted(self.batches.items())},
            "concurrency": [vars(point).copy() for point in self.concurrency],
            "accuracy": vars(self.accuracy).copy() if self.accuracy else None,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelResult:
        accuracy, runtime = data.get("accuracy"), data.get("runtime")
        return cls(
            path=data["path"], role=data["role"], error=data.get("error"),
            runtime=RuntimeInfo(**runtime) if runtime else None,
            size_bytes=data.get("size_bytes"), load_time_s=data.get("load_time_s"),
            first_request_ms=data.get("first_request_ms"),
            peak_memory_bytes=data.get("peak_memory_bytes"),
            flops_per_example=data.get("flops_per_example"),
            batches={int(k): BatchResult.from_dict(v)
                     for k, v in data.get("batches", {}).items()},
            concurrency=[ConcurrencyResult(**p) for p in data.get("concurrency", [])],
            accuracy=AccuracyResult(**accuracy) if accuracy else None)


@dataclass
class BenchmarkResult:
    machine: MachineInfo
    settings: Settings
    baseline: str
    models: dict[str, ModelResult]  # in command-line order, the baseline first

    @property
    def candidates(self) -> list[str]:
        return [name for name, model in self.models.items() if model.role == CANDIDATE]

    def failed(self) -> dict[str, str]:
        """Model name -> error, for every model that could not be measured."""
        return {name: model.error for name, model in self.models.items() if model.error}

    def to_dict(self) -> dict:
        """The metrics.json form; non-finite numbers (JSON has none) become null."""
        return _finite({
            "schema_version": SCHEMA_VERSION,
            "machine": vars(self.machine).copy(),
            "settings": vars(self.settings).copy(),
            "baseline": self.baseline,
            "models": {name: model.to_dict() for name, model in self.models.items()},
        })

    @classmethod
    def from_dict(cls, data: dict) -> BenchmarkResult:
        from components.core.errors import ServoptError

        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ServoptError(f"metrics.json schema_version {version!r} is not supported "
                               f"(this version reads {SCHEMA_VERSION}); run the benchmark "
                               "again with this version")
        return cls(machine=MachineInfo(**data["machine"]),
                   settings=Settings(**{"window_seconds": None, **data["settings"]}),
                   baseline=data["baseline"],
                   models={name: ModelResult.from_dict(m) for name, m in data["models"].items()})

    def write_json(self, path: str | os.PathLike) -> Path:
        from components.core.errors import ServoptError

        target = Path(path)
        try:
            target.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        except OSError as err:
            raise ServoptError(f"{target}: cannot write the metrics ({err.strerror}); choose "
                               "a writable path") from None
        return target

    @classmethod
    def read_json(cls, path: str | os.PathLike) -> BenchmarkResult:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _finite(value):
    """JSON has no NaN or infinity: such values are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
