"""What to benchmark and how: the models (named, in order) and the settings.

`BenchmarkConfig` is the one source of the benchmark's defaults: the YAML files
(configs/benchmark.yaml), the TFX and KFP parameters and the `servopt benchmark` options
all start from it and name only what they change. Every setting is validated before
anything starts, so a bad value (a batch size of 0, an unknown backend) fails in a
second, not after minutes of measuring.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.core.errors import ServoptError
from components.core.traffic import FROM_BATCH_METRIC, TrafficProfile
from components.core.uris import absolute

# session: every model in-process on the runtime TF Serving would use for it (a Session,
# or TfLiteSession's interpreters for model.tflite); tfserving: a live tensorflow_model_server.
BACKENDS = ("session", "tfserving")
PROTOCOLS = ("grpc", "rest")
DEFAULT_SIGNATURE = "serving_default"


# The figures of one batch size a search (or the gate) can rank by: True when lower is better.
BATCH_METRICS = {"p50_ms": True, "p90_ms": True, "p95_ms": True, "p99_ms": True,
                 "mean_ms": True, "max_ms": True, "throughput": False}
# Those the search can judge with a confidence interval over paired rounds (see search).
SEARCH_OBJECTIVES = ("p50_ms", "p99_ms", "throughput")
DEFAULT_SEARCH_OBJECTIVE = "p99_ms"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path


@dataclass(frozen=True)
class TFServingOptions:
    """How the `tfserving` backend reaches TF Serving.

    Without `host`, one `tensorflow_model_server` per model is started from `binary` (on
    PATH) on free ports, with the same thread settings for every model. With `host`, the
    models must already be served there under their benchmark names.
    """

    binary: str = "tensorflow_model_server"
    host: str | None = None
    grpc_port: int = 8500
    rest_port: int = 8501
    protocol: str = "grpc"  # how requests are sent: "grpc" (Predict) or "rest" (:predict)
    startup_timeout_s: float = 120.0


@dataclass(frozen=True)
class BenchmarkConfig:
    backend: str = "session"
    batch_sizes: tuple[int, ...] = (1, 100)
    concurrency: tuple[int, ...] = (1, 2)
    warmup_requests: int = 10
    # A measurement window is a time span (perf_analyzer's way; its default is 5 s) that
    # ends early once it holds `window_requests` requests; with window_seconds None, it is
    # `window_requests` requests. 300 requests (stats.MIN_REQUESTS_P99) give one window a
    # p99 of its own, so a fast row (TFLite at batch 1: 0.07 ms a request) is done in
    # 21 ms instead of spending the whole window on thousands that tell nothing more.
    # 0.5 s holds 25-90 requests of the demo CNN at batch 100 (5-19 ms each) on 2 idle
    # AMD EPYC cores, and two rows running the same graph (GraphOptimizer and a TFLite
    # variant's saved_model.pb) measured 1.21x and 1.17x over the baseline there, as
    # close as with 1 s windows (1.23x, 1.20x); 1 s windows made the demo last 8.5 min
    # instead of 6.7. A slower model's windows hold fewer requests: rounds go on until
    # each row has min_requests (below), and the gate's decision lines add rounds where
    # an interval is still open. (An earlier, heavily loaded machine, where batch 100 took
    # 80+ ms, left 0.5 s windows with 3-6 requests and identical models 11-18% apart.)
    window_requests: int = 300
    window_seconds: float | None = 0.5
    # Untimed requests before every window: the model's thread pools went idle while the
    # other models measured their windows, and the first requests after a switch pay
    # for waking them (see scheduler).
    rewarm_requests: int = 3
    max_windows: int = 10
    stability_percent: float = 10.0
    # Every speedup carries a distribution-free interval of this confidence (see stats);
    # rounds go on until it can be reached (at least 6 rounds for 0.95).
    confidence: float = 0.95
    # The speedups the gate decides at (its vs_baseline.min_speedup_p50 / _p99): a
    # candidate whose interval still straddles one after max_windows rounds is measured
    # for more rounds, for at most decision_budget_s seconds per batch size, so that the
    # gate gets an answer instead of "inconclusive". None: stop as the stability rule says.
    decide_speedup_p50: float | None = None
    decide_speedup_p99: float | None = None
    decision_budget_s: float = 60.0
    # Requests a batch size's p99 needs (stats.MIN_REQUESTS_P99, why there): rounds go on,
    # up to max_windows, until every model has this many at that batch size.
    min_requests: int = 300
    intra_op_threads: int | None = None  # None: every core, as TF Serving's default
    inter_op_threads: int | None = None
    # TFLite rows, as TF Serving's flags set them: --num_tflite_pools (None: the cores,
    # TF Serving's default) and --num_tflite_interpreters_per_pool (default 1).
    tflite_pools: int | None = None
    tflite_interpreters_per_pool: int = 1
    signature: str = DEFAULT_SIGNATURE
    examples: Path | None = None  # TFRecords of tf.Example (file, dir, Examples artifact)
    label_key: str | None = None  # with examples: accuracy against this feature
    output_key: str | None = None  # the output accuracy reads (default: the classifier one)
    seed: int = 0
    input_pool: int = 4  # distinct input batches per batch size, cycled through
    beam_pipeline_args: tuple[str, ...] = ()
    tfserving: TFServingOptions = TFServingOptions()
    # The configuration search (see search): after the default rows are measured, the
    # `search_contenders` best candidate rows by `search_objective` at `search_batch_size`
    # (None: the largest batch size) are measured under other TF Serving settings, one knob
    # at a time, for at most `search_budget_s` seconds (0: no search). The demo pipeline
    # sets the objective and batch size from the gate's thresholds; None: p99_ms.
    # With a traffic profile (the gate's thresholds' `traffic:`, set by the demo and by
    # `servopt benchmark` from the thresholds it reads), the search judges on the profile:
    # every batch size it lists, its objective, its clients (see search); the two keys
    # above then do not apply. The default budget covers every knob for the demo on two
    # cores (see docs/traffic-profile.md for what each step costs).
    search_budget_s: float = 300.0
    search_objective: str | None = None
    search_batch_size: int | None = None
    search_contenders: int = 1
    traffic: TrafficProfile | None = None
    # Op types (see the gate's safety scan) a model may run although they read or write
    # files, run Python or open the network; a model with others is not run at all.
    allowed_ops: tuple[str, ...] = ()
    # --- total time budget (see budget) ---
    # Seconds for the whole measuring (workers, default rows, concurrency sweep, search;
    # not the FLOPs count and accuracy after it); None: no limit. When it runs short the
    # least promising rows go unmeasured first, each recorded with the reason. 360 s: the
    # demo measures everything in about 280 s on 2 cores (docs/runs/), and MobileNetV2's
    # whole pipeline (10 rows and the search) stays under 10 minutes there.
    total_budget_s: float | None = 360.0
    # --- end total time budget ---
    # MiB the benchmark's worker processes may hold together (see memory), never more than
    # 80% of what the machine or its cgroup (a KFP pod's limit) has available; None: that
    # share. The baseline and the served version run throughout; candidates that do not
    # fit beside them are measured in later groups, each in rounds with the baseline. A
    # worker holds 0.4 to 0.8 GB with TensorFlow's runtime alone, and a 224x224 vision
    # model's 1 to 2.5 GB at batch 16 (docs/model-zoo.md): a fixed default would either
    # split the demo's search or let a large model's rows overrun a small machine.
    memory_budget_mb: float | None = None

    def validate(self) -> None:
        """Raises ServoptError for the first setting that cannot work."""
        from components.core.benchmark.stats import (  # numpy: when used
            STABILITY_WINDOWS,
            rounds_for,
        )

        if self.backend == "tflite":
            raise ServoptError("there is no tflite backend any more: each model runs on its "
                               "own runtime (a .tflite file, or model.tflite beside "
                               "saved_model.pb, in TF Serving's TFLite interpreter); drop "
                               "--backend")
        if self.backend not in BACKENDS:
            raise ServoptError(f"unknown backend '{self.backend}'; choose one of "
                               f"{', '.join(BACKENDS)}")
        _positive_list("batch size", self.batch_sizes)
        _positive_list("concurrency", self.concurrency, allow_empty=True)  # (): no sweep
        if self.warmup_requests < 0:
            raise ServoptError(f"warmup_requests must be >= 0 (got {self.warmup_requests})")
        if self.window_requests < 1:
            raise ServoptError(f"window_requests must be >= 1 (got {self.window_requests})")
        if self.window_seconds is not None and self.window_seconds <= 0:
            raise ServoptError(f"window_seconds must be > 0 (got {self.window_seconds})")
        if self.max_windows < STABILITY_WINDOWS:
            raise ServoptError(f"max_windows must be >= {STABILITY_WINDOWS}: stability is "
                               f"judged on the last {STABILITY_WINDOWS} windows "
                               f"(got {self.max_windows})")
        if not self.stability_percent > 0:
            raise ServoptError(f"stability_percent must be > 0 (got {self.stability_percent})")
        if not 0.5 <= self.confidence < 1:
            raise ServoptError(f"confidence must be >= 0.5 and < 1 (got {self.confidence})")
        if self.max_windows < rounds_for(self.confidence):
            raise ServoptError(f"max_windows must be >= {rounds_for(self.confidence)}: an "
                               f"interval of confidence {self.confidence:g} needs that many "
                               f"rounds (got {self.max_windows})")
        for key in ("decide_speedup_p50", "decide_speedup_p99"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ServoptError(f"{key} must be > 0 or null (got {value})")
        if self.decision_budget_s < 0:
            raise ServoptError(f"decision_budget_s must be >= 0 (got "
                               f"{self.decision_budget_s})")
        if any(t is not None and t < 1 for t in (self.intra_op_threads,
                                                 self.inter_op_threads)):
            raise ServoptError("intra_op_threads and inter_op_threads must be >= 1 (got "
                               f"{self.intra_op_threads} and {self.inter_op_threads})")
        if self.rewarm_requests < 0:
            raise ServoptError(f"rewarm_requests must be >= 0 (got {self.rewarm_requests})")
        if (self.tflite_pools is not None and self.tflite_pools < 1) or \
                self.tflite_interpreters_per_pool < 1:
            raise ServoptError("tflite_pools and tflite_interpreters_per_pool must be >= 1 "
                               f"(got {self.tflite_pools} and "
                               f"{self.tflite_interpreters_per_pool})")
        if self.total_budget_s is not None and not self.total_budget_s > 0:
            raise ServoptError(f"total_budget_s must be > 0 or null (no limit; got "
                               f"{self.total_budget_s})")
        if self.memory_budget_mb is not None and not self.memory_budget_mb > 0:
            raise ServoptError(f"memory_budget_mb must be > 0 or null (only the machine's "
                               f"available memory bounds the workers; got "
                               f"{self.memory_budget_mb})")
        if self.search_budget_s < 0:
            raise ServoptError(f"search_budget_s must be >= 0 (0: no configuration search; "
                               f"got {self.search_budget_s})")
        if self.search_objective is not None and \
                self.search_objective not in SEARCH_OBJECTIVES:
            raise ServoptError(f"unknown search_objective '{self.search_objective}'; choose "
                               f"one of {', '.join(SEARCH_OBJECTIVES)}")
        if self.search_batch_size is not None and \
                self.search_batch_size not in self.batch_sizes:
            raise ServoptError(f"search_batch_size {self.search_batch_size} is not among the "
                               f"batch sizes {list(self.batch_sizes)}; add it or leave it "
                               "null (the largest)")
        if self.traffic is not None:
            missing = [b for b in self.traffic.batch_sizes if b not in self.batch_sizes]
            if missing:
                raise ServoptError(f"the traffic profile's batch size {missing[0]} is not "
                                   f"among the batch sizes {list(self.batch_sizes)}; add it")
        if self.min_requests < 1:
            raise ServoptError(f"min_requests must be >= 1 (got {self.min_requests})")
        if self.search_contenders < 1:
            raise ServoptError(f"search_contenders must be >= 1 (got "
                               f"{self.search_contenders})")
        if self.input_pool < 1:
            raise ServoptError(f"input_pool must be >= 1 (got {self.input_pool})")
        if self.label_key is not None and self.examples is None:
            raise ServoptError(f"a label key ('{self.label_key}') needs examples: pass the "
                               "labelled TFRecords with --examples")
        if self.tfserving.protocol not in PROTOCOLS:
            raise ServoptError(f"unknown TF Serving protocol '{self.tfserving.protocol}'; "
                               f"choose one of {', '.join(PROTOCOLS)}")

    def search_metric(self) -> str:
        """What the configuration search improves."""
        return self.search_objective or DEFAULT_SEARCH_OBJECTIVE

    def search_at(self) -> int:
        """The batch size the configuration search reads its objective at."""
        return self.search_batch_size or max(self.batch_sizes)

    def search_profile(self) -> TrafficProfile:
        """What the configuration search judges on: the traffic profile; without one,
        every request at `search_at()`, ranked by `search_metric()`."""
        if self.traffic is not None:
            return self.traffic
        return TrafficProfile.one_batch(self.search_at(),
                                        FROM_BATCH_METRIC[self.search_metric()])

    def tflite_pool_count(self) -> int:
        """--num_tflite_pools: TF Serving's default is the schedulable CPUs (server.h)."""
        return self.tflite_pools or available_cores()

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | os.PathLike = "settings",
                  where: str = "benchmark") -> BenchmarkConfig:
        """The settings in `values` (keys of configs/benchmark.yaml; lists for tuples,
        a mapping for `tfserving`) over the defaults; unknown keys and wrong types are
        errors naming `source` and the key."""
        from components.core.yaml_io import fill_dataclass

        unknown = sorted(set(values) & set(RUN_FIELDS))
        if unknown:
            raise ServoptError(f"{source}: '{where}.{unknown[0]}' is not a setting; it is "
                               "given by the run (the examples input, Beam's arguments)")
        values = {key: tuple(value) if isinstance(value, list) else value
                  for key, value in values.items()}
        if isinstance(values.get("traffic"), dict):
            values["traffic"] = TrafficProfile.from_dict(values["traffic"],
                                                         f"{source}: {where}")
        if isinstance(values.get("tfserving"), dict):
            values["tfserving"] = fill_dataclass(TFServingOptions, values["tfserving"],
                                                 source, f"{where}.tfserving")
        return fill_dataclass(cls, values, source, where)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None = None,
                  section: str | None = None) -> BenchmarkConfig:
        """Settings from a benchmark YAML; without a path, the packaged defaults."""
        from components.core.yaml_io import default_config, read_yaml

        path = path or default_config("benchmark.yaml")
        data = read_yaml(path)
        values = (data.get(section) or {}) if section else data
        return cls.from_dict(values, path, section or "benchmark")

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON/YAML values (the run's examples and Beam arguments
        are not settings); `from_dict` reads it back."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in RUN_FIELDS}
        data["tfserving"] = dataclasses.asdict(self.tfserving)
        data["traffic"] = self.traffic.to_dict() if self.traffic is not None else None
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in data.items()}

    def for_run(self, examples: Path | None = None,
                beam_pipeline_args: Sequence[str] = ()) -> BenchmarkConfig:
        """These settings on a run's inputs; the label key applies only with examples."""
        return dataclasses.replace(
            self, examples=examples, beam_pipeline_args=tuple(beam_pipeline_args),
            label_key=self.label_key if examples is not None else None)

    def resolved(self) -> BenchmarkConfig:
        """With the thread and TFLite pool counts this machine will use (None: every core)."""
        cores = available_cores()
        return dataclasses.replace(
            self, intra_op_threads=self.intra_op_threads or cores,
            inter_op_threads=self.inter_op_threads or cores,
            tflite_pools=self.tflite_pool_count())


# Given by each run, not by settings files or parameters.
RUN_FIELDS = ("examples", "beam_pipeline_args")


def _positive_list(what: str, values: Sequence[int], allow_empty: bool = False) -> None:
    if not values and not allow_empty:
        raise ServoptError(f"no {what} given; pass at least one, e.g. 1")
    for value in values:
        if value < 1:
            raise ServoptError(f"{what} {value} is not valid: every {what} must be >= 1")
    if len(set(values)) != len(values):
        raise ServoptError(f"{what} values repeat ({', '.join(map(str, values))}); give "
                           "each once")


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """'1,8,100' -> (1, 8, 100), with an error that names the option."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            values.append(int(item))
        except ValueError:
            raise ServoptError(f"{option}: '{item}' is not an integer; pass a "
                               "comma-separated list such as 1,8,100") from None
    return tuple(values)


def default_name(path: Path) -> str:
    """The directory (or .tflite file) name; a numeric name (a TF Serving version or TFX
    artifact id) is prefixed with its parent's name, e.g. 'model-3'."""
    path = Path(os.path.normpath(path))
    name = path.stem if path.suffix == ".tflite" else path.name
    if name.isdigit() and path.parent.name:
        name = f"{path.parent.name}-{name}"
    return name or "model"


def name_models(arguments: Sequence[str], names: Sequence[str] = ()) -> list[ModelSpec]:
    """ModelSpecs for command-line models: 'PATH' or 'NAME=PATH', or names given apart.

    Names are made unique in order: a second 'model' becomes 'model-2'. Paths are made
    absolute (metrics.json records them; `servopt gate` reads them from any directory).
    """
    if not arguments:
        raise ServoptError("no models given; pass the baseline model first, then candidates")
    if names and len(names) != len(arguments):
        raise ServoptError(f"{len(names)} names for {len(arguments)} models; give one "
                           "--name per model, in the same order, or none")
    specs: list[tuple[str, Path]] = []
    for index, argument in enumerate(arguments):
        name, path = _split_name(argument)
        if names:
            if name is not None:
                raise ServoptError(f"'{argument}': give the name either as NAME=PATH or with "
                                   "--name, not both")
            name = names[index]
        specs.append((name or default_name(path), path))
    taken: set[str] = set()
    unique = []
    for name, path in specs:
        candidate, suffix = name, 2
        while candidate in taken:
            candidate, suffix = f"{name}-{suffix}", suffix + 1
        taken.add(candidate)
        unique.append(ModelSpec(candidate, Path(absolute(path))))  # metrics.json holds it
    return unique


def _split_name(argument: str) -> tuple[str | None, Path]:
    name, sep, path = argument.partition("=")
    if sep and name and path and os.sep not in name and not Path(argument).exists():
        return name, Path(path)
    return None, Path(argument)
