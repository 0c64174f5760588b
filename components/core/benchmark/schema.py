"""The benchmark's result and its metrics.json form (schema_version 1), and its one reader.

Other components (the PusherGate, the KFP gate step, `servopt gate`) read metrics.json
through `load_metrics`, which returns the typed `BenchmarkResult`: no reader indexes the
JSON itself. The key names here are a contract: change them only with a new
`SCHEMA_VERSION`. A model that failed has `error` set and null for what could not be
measured. `settings` holds the run's BenchmarkConfig (`to_dict`), threads resolved.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from components.core.benchmark.config import BenchmarkConfig
from components.core.benchmark.stats import LatencySummary
from components.core.errors import ServoptError

SCHEMA_VERSION = 1
BASELINE = "baseline"
CANDIDATE = "candidate"
# The version served now at the push destination, measured in the same rounds as the
# candidates (run.BenchmarkSession's `served`): never a candidate itself.
SERVED = "served"


@dataclass
class MachineInfo:
    cpu_model: str
    cores: int
    tensorflow_version: str
    python_version: str
    platform: str
    # The CPU features that change which variant and configuration win (VNNI, bf16,
    # AVX-512, AMX), as /proc/cpuinfo names them; None in results of earlier versions.
    cpu_features: list[str] | None = None


@dataclass
class BatchResult(LatencySummary):
    """Latency (ms) and throughput (examples/s) of one model at one batch size."""

    throughput: float
    stable: bool
    windows: int
    requests: int
    achieved_flops_per_s: float | None = None
    # Share of the machine's CPU other processes took per window (median), and the windows
    # where it passed load.BUSY_SHARE; None where unknown (not Linux, a remote server).
    other_cpu: float | None = None
    busy_windows: int | None = None
    # Candidates only: medians of the per-round ratios to the baseline, each with its
    # confidence interval [low, high] ([null, null]: too few rounds for `confidence`).
    speedup_p50: float | None = None
    speedup_p99: float | None = None
    speedup_stable: bool | None = None  # the per-round p50 ratio of the last 3 rounds settled
    speedup_p50_interval: list[float | None] | None = None
    speedup_p99_interval: list[float | None] | None = None
    throughput_ratio: float | None = None  # candidate / baseline throughput
    throughput_ratio_interval: list[float | None] | None = None
    confidence: float | None = None
    # Candidates, where the served version was measured in the same rounds: medians of the
    # per-round ratios served / candidate latency (above 1: faster than what is served),
    # with their `confidence` intervals: the paired comparison the gate's vs_served reads.
    served_speedup_p50: float | None = None
    served_speedup_p50_interval: list[float | None] | None = None
    served_speedup_p99: float | None = None
    served_speedup_p99_interval: list[float | None] | None = None

    def to_dict(self, role: str) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in _CANDIDATE_ONLY}
        if role in (CANDIDATE, SERVED):
            data.update({name: getattr(self, name) for name in _CANDIDATE_ONLY})
        return data

    @classmethod
    def from_dict(cls, data: dict) -> BatchResult:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


_CANDIDATE_ONLY = ("speedup_p50", "speedup_p99", "speedup_stable", "speedup_p50_interval",
                   "speedup_p99_interval", "throughput_ratio", "throughput_ratio_interval",
                   "confidence", "served_speedup_p50", "served_speedup_p50_interval",
                   "served_speedup_p99", "served_speedup_p99_interval")


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
    # The TF Serving configuration (serving_config.ServingConfig.to_dict()) and its label:
    # "default", or what the configuration search changed, e.g. "interpreters_per_pool=10".
    configuration: dict | None = None
    label: str = "default"
    # The row whose measurements this row shares: its runtime loads the same files byte for
    # byte (runtimes.plan_rows), so they were measured once.
    measured_as: str | None = None
    # The tfserving backend: the tensorflow_model_server command it measured the row with
    # (environment first; serving_config.server_command, as the gate prints it).
    command: list[str] | None = None
    # What the reader should know about how the figures were measured (e.g. an in-process
    # TFLite int8 figure on a CPU whose kernels TF Serving's build leaves out).
    notes: list[str] = field(default_factory=list)


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
    # Late steps that failed for this row only: step ("flops", "accuracy", "memory",
    # "concurrency") -> the error. What that step measures stays null; the rest stands.
    step_errors: dict[str, str] = field(default_factory=dict)

    def at(self, batch_size: int) -> BatchResult | None:
        """The measurements at `batch_size`, None where it was not measured."""
        return self.batches.get(batch_size)

    def accuracy_value(self, key: str) -> float | None:
        """`accuracy`, `top1_agreement` or `max_abs_diff`; None when not measured."""
        return getattr(self.accuracy, key) if self.accuracy else None

    def runtime_name(self) -> str | None:
        """"tensorflow" or "tflite"; None when a live TF Serving chose (tfserving)."""
        return self.runtime.runtime if self.runtime else None

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
            "step_errors": dict(self.step_errors),
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "metrics") -> ModelResult:
        """One model's entry of metrics.json (also what the gate records for a pushed
        model); a malformed one is refused naming `source`."""
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ServoptError(f"{source}: not a benchmark result of one model "
                               f"({type(err).__name__}: {err}); pass what the "
                               "ServingBenchmark wrote") from None

    @classmethod
    def _from_dict(cls, data: dict) -> ModelResult:
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
            accuracy=AccuracyResult(**accuracy) if accuracy else None,
            step_errors=dict(data.get("step_errors") or {}))


@dataclass
class SearchStep:
    """One knob tried on every contender whose runtime has it, measured side by side."""

    knob: str  # a ServingConfig field, e.g. "tflite_interpreters_per_pool"
    rows: list[str]  # the rows this step measured (each a contender under a new setting)
    outcomes: dict[str, str]  # contender -> what the step found, in words


@dataclass
class SearchRecord:
    """What the configuration search did: see benchmark.search."""

    objective: str  # the metric it minimises (latency) or maximises (throughput)
    batch_size: int  # where it reads the objective
    budget_s: float
    elapsed_s: float
    contenders: list[str]  # the default rows it searched from, best first
    best: dict[str, str]  # contender -> its best row (itself when nothing beat it)
    steps: list[SearchStep] = field(default_factory=list)
    stopped: str = ""  # why it ended
    traffic: dict | None = None  # the traffic profile it judged on (TrafficProfile.to_dict)
    tried: list[str] = field(default_factory=list)  # the knobs it measured settings of

    def to_dict(self) -> dict:
        data = dict(vars(self))
        data["steps"] = [vars(step).copy() for step in self.steps]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SearchRecord:
        values = dict(data)
        values["steps"] = [SearchStep(**step) for step in data.get("steps", [])]
        return cls(**values)


@dataclass
class BudgetRecord:
    """How the total time budget (settings.total_budget_s) was spent: see budget."""

    budget_s: float | None  # None: no limit
    elapsed_s: float  # of measuring (workers, rows, sweep, search), when it ended
    order: list[str]  # the rows, most promising first: the order they are kept in
    not_measured: dict[str, str] = field(default_factory=dict)  # row -> what and why
    stopped: str = ""  # why measuring ended early; "" when everything fitted
    # The candidates measured together, in order, where the memory budget split them
    # (see memory); each group's rounds held the baseline and the served version. Empty:
    # every row ran at once.
    memory_groups: list[list[str]] = field(default_factory=list)
    memory_budget_bytes: float | None = None  # what the workers could hold; None: no limit

    def to_dict(self) -> dict:
        return {"budget_s": self.budget_s, "elapsed_s": self.elapsed_s,
                "order": list(self.order), "not_measured": dict(self.not_measured),
                "stopped": self.stopped,
                "memory_groups": [list(group) for group in self.memory_groups],
                "memory_budget_bytes": self.memory_budget_bytes}

    @classmethod
    def from_dict(cls, data: dict) -> BudgetRecord:
        return cls(budget_s=data.get("budget_s"), elapsed_s=data["elapsed_s"],
                   order=list(data.get("order", [])),
                   not_measured=dict(data.get("not_measured") or {}),
                   stopped=data.get("stopped", ""),
                   memory_groups=[list(g) for g in data.get("memory_groups") or []],
                   memory_budget_bytes=data.get("memory_budget_bytes"))


@dataclass
class BenchmarkResult:
    machine: MachineInfo
    settings: BenchmarkConfig
    baseline: str
    models: dict[str, ModelResult]  # in command-line order, the baseline first
    search: SearchRecord | None = None  # None: no configuration search ran
    budget: BudgetRecord | None = None  # None: results of earlier versions
    # Steps of the whole run that failed ("search", "report"): step -> the error; what was
    # measured before and besides them stands.
    step_errors: dict[str, str] = field(default_factory=dict)

    def version_of(self, row: str) -> str:
        """The model (version) a row measured: a TFLite variant has two rows,
        `NAME@tflite` and `NAME@tensorflow`, of one version NAME."""
        runtime = self.models[row].runtime
        return runtime.version if runtime else row

    def rows_of(self, version: str) -> dict[str, ModelResult]:
        """Row name -> result of every row that measured `version`, in benchmark order."""
        return {row: model for row, model in self.models.items()
                if self.version_of(row) == version}

    def paths(self) -> dict[str, str]:
        """Version -> the model path the benchmark measured, for every version (the
        served one, measured for comparison only, left out)."""
        return {self.version_of(row): model.path for row, model in self.models.items()
                if model.role != SERVED}

    @property
    def served(self) -> str | None:
        """The row of the version served now, where it was measured in this run."""
        return next((name for name, model in self.models.items() if model.role == SERVED),
                    None)

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
            "settings": self.settings.to_dict(),
            "baseline": self.baseline,
            "models": {name: model.to_dict() for name, model in self.models.items()},
            "search": self.search.to_dict() if self.search else None,
            "budget": self.budget.to_dict() if self.budget else None,
            "step_errors": dict(self.step_errors),
        })

    @classmethod
    def from_dict(cls, data: dict, source: str = "metrics") -> BenchmarkResult:
        """The one parser of metrics.json's form, checked (a malformed one is refused with
        `source` named)."""
        validate_metrics(data, source)
        try:
            machine = MachineInfo(**data["machine"])
        except (KeyError, TypeError) as err:
            raise ServoptError(f"{source}: 'machine' is not what the benchmark records "
                               f"({type(err).__name__}: {err}); run the benchmark "
                               "again") from None
        return cls(machine=machine,
                   settings=BenchmarkConfig.from_dict(data.get("settings") or {}, source,
                                                      "settings"),
                   baseline=data.get("baseline"),
                   models={name: ModelResult.from_dict(m, f"{source}: models.{name}")
                           for name, m in data["models"].items()},
                   search=_search(data.get("search"), source),
                   budget=_budget(data.get("budget"), source),
                   step_errors=dict(data.get("step_errors") or {}))

    def write_json(self, path: str | os.PathLike) -> Path:
        """Writes metrics.json atomically (a temporary file renamed over it), so a reader
        never sees half a file while the benchmark rewrites it as rows complete."""
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")
        try:
            partial.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
            os.replace(partial, target)
        except OSError as err:
            raise ServoptError(f"{target}: cannot write the metrics ({err.strerror}); choose "
                               "a writable path") from None
        return target

    @classmethod
    def read_json(cls, path: str | os.PathLike) -> BenchmarkResult:
        return load_metrics(path)


def _search(data, source: str) -> SearchRecord | None:
    if data is None:
        return None
    try:
        return SearchRecord.from_dict(data)
    except (TypeError, AttributeError) as err:
        raise ServoptError(f"{source}: 'search' is not what the benchmark records "
                           f"({type(err).__name__}: {err}); run the benchmark again") from None


def _budget(data, source: str) -> BudgetRecord | None:
    if data is None:
        return None
    try:
        return BudgetRecord.from_dict(data)
    except (KeyError, TypeError, AttributeError) as err:
        raise ServoptError(f"{source}: 'budget' is not what the benchmark records "
                           f"({type(err).__name__}: {err}); run the benchmark again") from None


def load_metrics(path: str | os.PathLike) -> BenchmarkResult:
    """The one reader of metrics.json: the typed result, checked to be a benchmark result
    of this schema version."""
    path = Path(path)
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        raise ServoptError(f"{path}: no such metrics file; pass the metrics.json the "
                           "ServingBenchmark wrote") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ServoptError(f"{path}: cannot read the metrics file ({err})") from None
    except json.JSONDecodeError as err:
        raise ServoptError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}); run the "
                           "benchmark again") from None
    return BenchmarkResult.from_dict(metrics, str(path))


def validate_metrics(metrics, source: str = "metrics") -> None:
    """The top-level shape readers rely on; per-model gaps are the readers' business."""
    if not isinstance(metrics, dict):
        raise ServoptError(f"{source}: expected a JSON object of benchmark results, got "
                           f"{type(metrics).__name__}")
    version = metrics.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ServoptError(f"{source}: schema_version {version!r} is not supported (this "
                           f"version reads schema_version {SCHEMA_VERSION}); run the "
                           "benchmark of the same release")
    if not isinstance(metrics.get("models"), dict):
        raise ServoptError(f"{source}: no 'models' object; not a ServingBenchmark result")


def headline_figures(result: BenchmarkResult) -> dict[str, float | int | str | None]:
    """The figures worth a glance: per model its size and error, per batch size p50, p99,
    throughput, stability and (candidates) speedup; accuracy, top-1 agreement and largest
    difference against the baseline when examples were given. The TFX artifact's custom
    properties and the KFP UI's Metrics both show these."""
    figures: dict[str, float | int | str | None] = {}
    for name, model in result.models.items():
        figures[f"{name}_size_bytes"] = model.size_bytes
        figures[f"{name}_error"] = model.error
        for size, batch in sorted(model.batches.items()):
            for key in ("p50_ms", "p99_ms", "throughput", "speedup_p50", "speedup_p99"):
                figures[f"{name}_{key}_batch{size}"] = _finite(getattr(batch, key))
            figures[f"{name}_stable_batch{size}"] = int(bool(batch.stable))
        for key in ("accuracy", "top1_agreement", "max_abs_diff"):
            figures[f"{name}_{key}"] = _finite(model.accuracy_value(key))
    return figures


def _finite(value):
    """JSON has no NaN or infinity: such values are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
