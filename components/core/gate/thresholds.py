"""What a candidate must satisfy to be pushed: thresholds in TFMA's vocabulary.

Three groups, each named after what it compares against:

- `value`: bounds on the candidate's own measurements at every batch size of the traffic
  profile (TFMA's value thresholds: an upper bound for latency and size, a lower bound
  for throughput and accuracy).
- `vs_baseline`: changes against the Trainer's model benchmarked in the same run (TFMA's
  change thresholds): accuracy may drop at most by an absolute amount (higher is better),
  top-1 agreement with the baseline's outputs has a lower bound, the speedup
  (baseline latency / candidate latency, lower latency is better) a lower bound.
- `vs_served`: changes against the model currently served at the destination, as
  measured when it was pushed: p99 may regress at most by a relative amount (percent),
  accuracy at most by an absolute amount. On the first push there is no served model and
  these checks are recorded as not applicable.

Every threshold is optional: None (null in YAML) means not checked. The dataclasses'
defaults are the one source of the default thresholds: the packaged
configs/thresholds.yaml states exactly them (tests/test_packaged_defaults.py), so
`Thresholds()`, PusherGate without thresholds and the KFP pipeline's default judge alike.
A key left out of a YAML file or dict takes its default; null turns it off. A threshold
that is set but whose measurement is missing blocks the candidate (fail closed), with a
reason saying so.

`required_signatures`: the signatures clients call, which the pushed version must serve
on the runtime the server runs it on (see parity.py: a version served from model.tflite
serves only model.tflite's signatures). Default (null): every signature of the baseline.

`traffic` (components.core.traffic.TrafficProfile): the batch sizes clients send with their
shares, the clients, the p99 SLO per batch size and the objective ranking the pairs that
meet every SLO; the per-batch-size checks (value, vs_baseline speedups, vs_served p99)
apply at each of its batch sizes. `primary_batch_size: N` of earlier files still reads,
as the one-entry profile {N: 100%}.

`server` describes the destination's TF Serving, so that each candidate is judged on the
runtime that server will run it on (see checks.judged_row): `prefer_tflite_model` (its
`--prefer_tflite_model` flag: serve `model.tflite` where a version holds one), the CPU
features of the serving nodes (default: this machine's) and the TF Serving version
(recorded in the decision; nothing is checked against it yet).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from components.core.errors import ServoptError
from components.core.gate.release import ReleaseConfig
from components.core.traffic import FROM_BATCH_METRIC, TrafficProfile
from components.core.yaml_io import default_config, parse_yaml

INCONCLUSIVE_POLICIES = ("block", "allow")
# A speedup threshold is decided on the speedup's confidence interval (see checks): a
# candidate whose interval straddles the line even after the benchmark measured on is
# "inconclusive", and this policy decides it. "block": push nothing the measurement cannot
# vouch for (fail closed, like a threshold whose measurement is missing).
DEFAULT_INCONCLUSIVE = "block"
# Keys of earlier versions -> what to write instead.
_REPLACED_KEYS = {
    "unstable_latency": "'unstable_latency' was replaced by 'inconclusive' (block | allow): "
                        "speedups now carry confidence intervals, and the policy decides a "
                        "candidate whose interval straddles the threshold; write "
                        "'inconclusive: allow' (or block) instead",
}

# Objective keys: where the value lives in a model's metrics, and whether lower is better.
BATCH_OBJECTIVES = {"p50_ms": True, "p90_ms": True, "p95_ms": True, "p99_ms": True,
                    "mean_ms": True, "max_ms": True, "throughput": False}
MODEL_OBJECTIVES = {"size_bytes": True, "peak_memory_bytes": True, "load_time_s": True,
                    "first_request_ms": True, "flops_per_example": True}
ACCURACY_OBJECTIVES = {"accuracy": False, "top1_agreement": False}
OBJECTIVES = {**BATCH_OBJECTIVES, **MODEL_OBJECTIVES, **ACCURACY_OBJECTIVES}
# Ties on the traffic profile's objective are broken by these, in order.
DEFAULT_OBJECTIVE = ("size_bytes",)
DEFAULT_PRIMARY_BATCH_SIZE = 100  # the batch size the seed experiment quotes


@dataclass(frozen=True)
class _Bound:
    """How one threshold's value is validated: [low, high], either end open or closed."""

    low: float = 0.0
    high: float = math.inf
    low_inclusive: bool = False  # most limits must be > 0

    def check(self, value: float) -> bool:
        above = value >= self.low if self.low_inclusive else value > self.low
        return above and value <= self.high

    def describe(self) -> str:
        low = f">= {self.low:g}" if self.low_inclusive else f"> {self.low:g}"
        return low if math.isinf(self.high) else f"{low} and <= {self.high:g}"


POSITIVE = _Bound()
NON_NEGATIVE = _Bound(low_inclusive=True)
FRACTION = _Bound(0.0, 1.0, low_inclusive=True)


@dataclass(frozen=True)
class ValueThresholds:
    """Bounds on the candidate's own measurements (TFMA value thresholds)."""

    max_p50_ms: float | None = None  # upper bound, at every profile batch size
    max_p99_ms: float | None = None  # upper bound, at every profile batch size
    min_throughput: float | None = None  # lower bound, examples per second
    # Upper bound on size on disk, MB = 10^6 bytes: a common serving platform limit.
    max_size_mb: float | None = 500
    min_accuracy: float | None = None  # lower bound, fraction in [0, 1]


@dataclass(frozen=True)
class BaselineThresholds:
    """Changes against the Trainer's model in the same run (TFMA change thresholds)."""

    max_accuracy_drop: float | None = 0.01  # absolute: baseline - candidate accuracy
    min_top1_agreement: float | None = 0.99  # fraction of examples with the same argmax
    # Relative: baseline / candidate latency. Judged on the speedup's confidence interval:
    # blocked when the whole interval is below (0.95: slower by more than 5%, with the
    # benchmark's confidence), passed when it is wholly at or above, else inconclusive.
    min_speedup_p50: float | None = 0.95
    min_speedup_p99: float | None = None


@dataclass(frozen=True)
class ServedThresholds:
    """Changes against the model currently served at the destination."""

    # Relative: 100 * (candidate - served) / served; p99 from another run varies.
    max_p99_regression_pct: float | None = 20
    max_accuracy_regression: float | None = 0.01  # absolute: served - candidate accuracy


_LIMITS: dict[str, _Bound] = {
    "max_p50_ms": POSITIVE, "max_p99_ms": POSITIVE, "min_throughput": NON_NEGATIVE,
    "max_size_mb": POSITIVE, "min_accuracy": FRACTION,
    "max_accuracy_drop": FRACTION, "min_top1_agreement": FRACTION,
    "min_speedup_p50": POSITIVE, "min_speedup_p99": POSITIVE,
    "max_p99_regression_pct": NON_NEGATIVE, "max_accuracy_regression": FRACTION,
}
_GROUPS = {"value": ValueThresholds, "vs_baseline": BaselineThresholds,
           "vs_served": ServedThresholds}


@dataclass(frozen=True)
class ServerProfile:
    """What the destination's tensorflow_model_server runs."""

    prefer_tflite_model: bool = False  # TF Serving's default
    cpu_features: tuple[str, ...] | None = None  # None: this machine's /proc/cpuinfo flags
    tensorflow_serving_version: str | None = None

    def cpu_flags(self) -> set[str]:
        if self.cpu_features is not None:
            return set(self.cpu_features)
        from components.core.requirements import cpu_flags

        return cpu_flags()

    @classmethod
    def from_dict(cls, data, source: str) -> ServerProfile:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ServoptError(f"{source}: 'server' must be a mapping, got {_kind(data)}")
        _reject_unknown(data, {f.name for f in fields(cls)}, source, "server.")
        prefer = data.get("prefer_tflite_model", False)
        if not isinstance(prefer, bool):
            raise ServoptError(f"{source}: 'server.prefer_tflite_model' must be true or "
                               f"false, got {_kind(prefer)}")
        features = data.get("cpu_features")
        if features is not None and (not isinstance(features, list | tuple) or not all(
                isinstance(f, str) for f in features)):
            raise ServoptError(f"{source}: 'server.cpu_features' must be a list of "
                               "/proc/cpuinfo flags (e.g. [avx2, avx512_bf16]) or null for "
                               f"this machine's, got {_kind(features)}")
        version = data.get("tensorflow_serving_version")
        if version is not None and not isinstance(version, str | int | float):
            raise ServoptError(f"{source}: 'server.tensorflow_serving_version' must be a "
                               f"version such as \"2.19.0\", got {_kind(version)}")
        return cls(prefer, None if features is None else tuple(features),
                   None if version is None else str(version))


@dataclass(frozen=True)
class Thresholds:
    """Everything the gate checks, and how it chooses among candidates that pass."""

    # What clients send (batch sizes and shares, clients, p99 SLOs) and the objective
    # that ranks the pairs meeting every SLO: see components.core.traffic.
    traffic: TrafficProfile = field(
        default_factory=lambda: TrafficProfile.one_batch(DEFAULT_PRIMARY_BATCH_SIZE))
    inconclusive: str = DEFAULT_INCONCLUSIVE  # or "allow" a speedup the interval cannot decide
    objective: tuple[str, ...] = DEFAULT_OBJECTIVE  # then best first by these keys, in order
    value: ValueThresholds = field(default_factory=ValueThresholds)
    vs_baseline: BaselineThresholds = field(default_factory=BaselineThresholds)
    vs_served: ServedThresholds = field(default_factory=ServedThresholds)
    server: ServerProfile = field(default_factory=ServerProfile)
    required_signatures: tuple[str, ...] | None = None  # None: the baseline's signatures
    release: ReleaseConfig = field(default_factory=ReleaseConfig)  # see gate/release.py
    # Earlier versions' one batch size: given, it becomes the one-entry profile {N: 100%}
    # (objective: the first of p50_ms / p99_ms / throughput in `objective`, else p99).
    # After construction it is always the profile's primary batch size (the one most
    # requests carry), where figures read at one batch size are read.
    primary_batch_size: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # An explicit profile wins (dataclasses.replace passes the primary batch size of
        # the profile it replaces); a given batch size replaces the default profile only.
        if self.primary_batch_size is not None and self.traffic == TrafficProfile.one_batch(
                DEFAULT_PRIMARY_BATCH_SIZE):
            _validate("thresholds", self.primary_batch_size, self.inconclusive,
                      self.objective, {})
            object.__setattr__(self, "traffic", _legacy_profile(self.primary_batch_size,
                                                                self.objective))
        _validate("thresholds", self.traffic.primary_batch_size, self.inconclusive,
                  self.objective, {name: getattr(self, name) for name in _GROUPS})
        _signature_names(self.required_signatures, "thresholds")
        object.__setattr__(self, "primary_batch_size", self.traffic.primary_batch_size)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Every batch size the profile's clients send: each is measured and judged."""
        return self.traffic.batch_sizes

    @classmethod
    def from_dict(cls, data: dict | None, source: str = "thresholds") -> Thresholds:
        """Builds thresholds from a dict shaped like the YAML file; `source` names it in
        errors (the file, or the parameter the dict came from)."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ServoptError(f"{source}: expected a mapping of threshold groups, got "
                               f"{_kind(data)}; see configs/thresholds.yaml")
        for key, message in _REPLACED_KEYS.items():
            if key in data:
                raise ServoptError(f"{source}: {message}")
        top = {f.name for f in fields(cls)}
        _reject_unknown(data, top, source, "")
        groups = {}
        for name, group_cls in _GROUPS.items():
            section = data.get(name)
            if section is None:
                groups[name] = group_cls()
                continue
            if not isinstance(section, dict):
                raise ServoptError(f"{source}: '{name}' must be a mapping of thresholds, got "
                                   f"{_kind(section)}")
            _reject_unknown(section, {f.name for f in fields(group_cls)}, source, f"{name}.")
            groups[name] = group_cls(**{key: _number(section[key], source, f"{name}.{key}")
                                        for key in section})
        defaults = {f.name: f.default for f in fields(cls)}
        objective = data.get("objective", list(defaults["objective"]))
        if isinstance(objective, str):
            objective = [objective]
        if not isinstance(objective, list | tuple):
            raise ServoptError(f"{source}: 'objective' must be a list of metric names, got "
                               f"{_kind(objective)}")
        packaged = TrafficProfile.one_batch(DEFAULT_PRIMARY_BATCH_SIZE).to_dict()
        if "primary_batch_size" in data and data.get("traffic") not in (None, packaged):
            raise ServoptError(f"{source}: both 'primary_batch_size' and 'traffic' are set; "
                               "drop primary_batch_size (write it as traffic: {requests: "
                               f"{{{data['primary_batch_size']}: 1.0}}}})")
        inconclusive = data.get("inconclusive", DEFAULT_INCONCLUSIVE)
        if "primary_batch_size" in data:  # earlier versions: one batch size, kept working
            batch = data["primary_batch_size"]
            if isinstance(batch, bool) or not isinstance(batch, int):
                raise ServoptError(f"{source}: 'primary_batch_size' must be an integer, got "
                                   f"{_kind(batch)}; better, write traffic: {{requests: "
                                   "{100: 1.0}}")
            _validate(source, batch, inconclusive, tuple(objective), groups)
            traffic = _legacy_profile(batch, tuple(objective))
        elif data.get("traffic") is not None:
            traffic = TrafficProfile.from_dict(data["traffic"], source)
        else:  # the default batch size, ranked as the objective list says (as before)
            traffic = _legacy_profile(DEFAULT_PRIMARY_BATCH_SIZE, tuple(objective))
        _validate(source, traffic.primary_batch_size, inconclusive, tuple(objective),
                  groups)  # errors name source
        return cls(traffic=traffic, inconclusive=inconclusive,
                   objective=tuple(objective),
                   server=ServerProfile.from_dict(data.get("server"), source),
                   required_signatures=_signature_names(data.get("required_signatures"),
                                                        source),
                   release=ReleaseConfig.from_dict(data.get("release"), source), **groups)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None) -> Thresholds:
        """Thresholds from a YAML file; without a path, the packaged defaults
        (components/configs/thresholds.yaml, the same as configs/thresholds.yaml)."""
        if path is None:
            path = default_config("thresholds.yaml")
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ServoptError(f"{path}: no such thresholds file; pass a YAML file like "
                               "configs/thresholds.yaml") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ServoptError(f"{path}: cannot read the thresholds file ({err})") from None
        return cls.from_dict(parse_yaml(text, path), source=str(path))

    def check_batch_sizes(self, batch_sizes, source: str) -> None:
        """Fails now, not after the whole benchmark ran, when the benchmark will not
        measure a batch size the gate judges at (every batch size of the profile)."""
        missing = [b for b in self.batch_sizes if b not in batch_sizes]
        if missing:
            what = ("primary_batch_size" if len(self.batch_sizes) == 1
                    else "the traffic profile's batch size")
            raise ServoptError(f"{source}: {what} {missing[0]} is not among the "
                               f"benchmark's batch sizes {list(batch_sizes)}; add it to "
                               "the batch sizes or change the traffic profile")

    def decision_lines(self) -> dict:
        """The benchmark settings that measure what these thresholds decide: until the
        speedup intervals are decided (BenchmarkConfig.decide_speedup_p50 / _p99), and
        the configuration search on the traffic profile (BenchmarkConfig.traffic)."""
        return {"decide_speedup_p50": self.vs_baseline.min_speedup_p50,
                "decide_speedup_p99": self.vs_baseline.min_speedup_p99,
                "traffic": self.traffic}

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("primary_batch_size")
        data["traffic"] = self.traffic.to_dict()
        data["objective"] = list(self.objective)
        if self.server.cpu_features is not None:
            data["server"]["cpu_features"] = list(self.server.cpu_features)
        if self.required_signatures is not None:
            data["required_signatures"] = list(self.required_signatures)
        return data


def _legacy_profile(batch: int, objective: tuple[str, ...]) -> TrafficProfile:
    """`primary_batch_size: N` of earlier versions: every request of batch N, ranked by
    the first per-batch metric of `objective` it named (p99 when none)."""
    first = next((FROM_BATCH_METRIC[key] for key in objective if key in FROM_BATCH_METRIC),
                 None)
    return (TrafficProfile.one_batch(batch, first) if first
            else TrafficProfile.one_batch(batch))


def _signature_names(names, source: str) -> tuple[str, ...] | None:
    """`required_signatures`: null, or a non-empty list of distinct signature names."""
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    if (not isinstance(names, list | tuple) or not names
            or not all(isinstance(n, str) and n.strip() for n in names)):
        raise ServoptError(f"{source}: 'required_signatures' must be a non-empty list of "
                           "signature names (e.g. [serving_default]) or null for every "
                           f"signature of the baseline, got {_kind(names)}")
    if len(set(names)) != len(names):
        raise ServoptError(f"{source}: 'required_signatures' lists a signature twice: "
                           f"{list(names)}")
    return tuple(names)


def _validate(source: str, batch, inconclusive, objective: tuple, groups: dict) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ServoptError(f"{source}: 'primary_batch_size' must be an integer >= 1, got "
                           f"{batch!r}")
    if inconclusive not in INCONCLUSIVE_POLICIES:
        raise ServoptError(f"{source}: 'inconclusive' must be one of "
                           f"{', '.join(INCONCLUSIVE_POLICIES)}, got {inconclusive!r}")
    if not objective:
        raise ServoptError(f"{source}: 'objective' is empty; list at least one of "
                           f"{', '.join(OBJECTIVES)}")
    for key in objective:
        if key not in OBJECTIVES:
            raise ServoptError(f"{source}: unknown objective {key!r}"
                               f"{_did_you_mean(key, OBJECTIVES)}; known: "
                               f"{', '.join(OBJECTIVES)}")
    if len(set(objective)) != len(objective):
        raise ServoptError(f"{source}: 'objective' lists a metric twice: {list(objective)}")
    for group, values in groups.items():
        for item in fields(values):
            value = getattr(values, item.name)
            if value is None:
                continue
            key = f"{group}.{item.name}"
            _number(value, source, key)
            bound = _LIMITS[item.name]
            if not bound.check(value):
                raise ServoptError(f"{source}: '{key}' must be {bound.describe()}, got "
                                   f"{value!r}")


def _number(value, source: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ServoptError(f"{source}: '{key}' must be a number or null, got {_kind(value)}")
    return value


def _reject_unknown(data: dict, known: set[str], source: str, prefix: str) -> None:
    for key in data:
        if key not in known:
            raise ServoptError(f"{source}: unknown key '{prefix}{key}'"
                               f"{_did_you_mean(str(key), known)}; known keys: "
                               f"{', '.join(prefix + k for k in sorted(known))}")


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _kind(value) -> str:
    return f"{type(value).__name__} {value!r}"
