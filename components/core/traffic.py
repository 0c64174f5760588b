"""The traffic profile: what clients send, declared once, judged on as a whole.

A profile lists the request batch sizes clients send with their share of requests (e.g.
90% of requests carry 1 example, 10% carry 100), how many clients send at once, the p99
latency each batch size must meet (its SLO), and the objective that ranks the (version,
TF Serving configuration) pairs meeting every SLO:

- `weighted_p50_ms`: the request-weighted mean of the p50 at each batch size (lower is
  better): the typical latency a request of this mix sees.
- `weighted_p99_ms`: the same with the p99 (lower is better).
- `throughput_per_core`: examples per second per core the mix gets, each batch size run
  at its measured throughput (higher is better): the examples of a mean request over the
  time of a mean request, sum(share * batch) / sum(share * batch / throughput), per core.

The thresholds YAML holds it under `traffic:` (the one source: the benchmark measures its
batch sizes, the configuration search and the gate judge on it). A file of earlier
versions with `primary_batch_size: N` means the one-entry profile {N: 100%}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from components.core.errors import ServoptError

# Objective -> (the per-batch-size figure it weights, lower is better).
OBJECTIVES: dict[str, tuple[str, bool]] = {
    "weighted_p50_ms": ("p50_ms", True),
    "weighted_p99_ms": ("p99_ms", True),
    "throughput_per_core": ("throughput", False),
}
DEFAULT_OBJECTIVE = "weighted_p99_ms"
# Per-batch metrics of earlier `objective:` lists -> the profile objective they become.
FROM_BATCH_METRIC = {"p50_ms": "weighted_p50_ms", "p99_ms": "weighted_p99_ms",
                     "throughput": "throughput_per_core"}
SHARE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class TrafficEntry:
    batch_size: int  # examples per request
    share: float  # fraction of requests, in (0, 1]
    slo_p99_ms: float | None = None  # the p99 these requests must meet; None: no SLO


@dataclass(frozen=True)
class TrafficProfile:
    """Request batch sizes with their shares (summing to 1), clients sending at once, the
    p99 SLO per batch size (ms; a batch size without one has none) and the objective."""

    requests: tuple[TrafficEntry, ...] = (TrafficEntry(100, 1.0),)
    clients: int = 1
    objective: str = DEFAULT_OBJECTIVE

    def __post_init__(self) -> None:
        self.validate("traffic")

    # --- what it says ------------------------------------------------------------------

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(entry.batch_size for entry in self.requests)

    @property
    def shares(self) -> dict[int, float]:
        return {entry.batch_size: entry.share for entry in self.requests}

    @property
    def slo_p99_ms(self) -> dict[int, float]:
        """Batch size -> its p99 SLO (ms), for the batch sizes that have one."""
        return {e.batch_size: e.slo_p99_ms for e in self.requests
                if e.slo_p99_ms is not None}

    @property
    def metric(self) -> str:
        """The per-batch-size figure the objective weights: p50_ms, p99_ms or throughput."""
        return OBJECTIVES[self.objective][0]

    @property
    def lower_is_better(self) -> bool:
        return OBJECTIVES[self.objective][1]

    @property
    def primary_batch_size(self) -> int:
        """The batch size most requests carry (ties: the larger): where figures that are
        read at one batch size (the served model's p99, the tables) are read."""
        return max(self.requests, key=lambda e: (e.share, e.batch_size)).batch_size

    def describe(self) -> str:
        """'90% batch 1, 10% batch 100; 1 client; p99 SLO 50 ms at batch 1; objective
        weighted_p50_ms'."""
        mix = ", ".join(f"{e.share:.0%} batch {e.batch_size}" for e in self.requests)
        slos = ", ".join(f"{_g(ms)} ms at batch {b}" for b, ms in sorted(
            self.slo_p99_ms.items()))
        return (f"{mix}; {self.clients} client{'s' if self.clients != 1 else ''}"
                + (f"; p99 SLO {slos}" if slos else "; no p99 SLO")
                + f"; objective {self.objective}")

    # --- the objective -----------------------------------------------------------------

    def weighted(self, figures: Mapping[int, float | None], cores: int = 1) -> float | None:
        """The objective from the per-batch-size figure (self.metric) at each batch size;
        None when one is missing. `cores`: what throughput_per_core divides by."""
        values = {b: figures.get(b) for b in self.batch_sizes}
        if any(v is None for v in values.values()):
            return None
        if self.metric != "throughput":
            return sum(self.shares[b] * values[b] for b in self.batch_sizes)
        if any(v <= 0 for v in values.values()):
            return 0.0
        examples = sum(self.shares[b] * b for b in self.batch_sizes)
        seconds = sum(self.shares[b] * b / values[b] for b in self.batch_sizes)
        return examples / seconds / max(1, cores)

    def gain(self, incumbent: float, challenger: float) -> float:
        """How much better `challenger` is (above 1: better), for either direction."""
        if self.lower_is_better:
            return incumbent / challenger if challenger > 0 else math.inf
        return challenger / incumbent if incumbent > 0 else math.inf

    def per_round(self, rounds: Mapping[int, Sequence[float]], cores: int = 1
                  ) -> list[float]:
        """The objective per round, from the per-round figures at each batch size (the
        interleaved rounds of each batch size, paired by their index): as many values as
        the batch size with the fewest rounds has."""
        count = min((len(rounds.get(b, ())) for b in self.batch_sizes), default=0)
        return [self.weighted({b: rounds[b][r] for b in self.batch_sizes}, cores)
                for r in range(count)]

    # --- parsing -----------------------------------------------------------------------

    def validate(self, source: str) -> None:
        if not self.requests:
            raise ServoptError(f"{source}: 'traffic.requests' is empty; list at least one "
                               "batch size with its share, e.g. {1: 0.9, 100: 0.1}")
        sizes = self.batch_sizes
        if len(set(sizes)) != len(sizes):
            raise ServoptError(f"{source}: 'traffic.requests' lists a batch size twice: "
                               f"{list(sizes)}")
        for entry in self.requests:
            if isinstance(entry.batch_size, bool) or not isinstance(entry.batch_size, int) \
                    or entry.batch_size < 1:
                raise ServoptError(f"{source}: 'traffic.requests' batch size must be an "
                                   f"integer >= 1, got {entry.batch_size!r}")
            if not _is_number(entry.share) or not 0 < entry.share <= 1:
                raise ServoptError(f"{source}: 'traffic.requests' share of batch "
                                   f"{entry.batch_size} must be in (0, 1], got "
                                   f"{entry.share!r}")
        total = sum(entry.share for entry in self.requests)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ServoptError(f"{source}: the shares in 'traffic.requests' sum to {total:g}, "
                               "not 1; give each batch size its fraction of requests, e.g. "
                               "{1: 0.9, 100: 0.1}")
        if isinstance(self.clients, bool) or not isinstance(self.clients, int) \
                or self.clients < 1:
            raise ServoptError(f"{source}: 'traffic.clients' must be an integer >= 1, got "
                               f"{self.clients!r}")
        for batch, limit in self.slo_p99_ms.items():
            if not _is_number(limit) or not limit > 0:
                raise ServoptError(f"{source}: 'traffic.slo_p99_ms' of batch {batch} must be "
                                   f"a number of milliseconds > 0, got {limit!r}")
        if self.objective not in OBJECTIVES:
            raise ServoptError(f"{source}: unknown 'traffic.objective' {self.objective!r}; "
                               f"choose one of {', '.join(OBJECTIVES)}")

    @classmethod
    def one_batch(cls, batch_size: int, objective: str = DEFAULT_OBJECTIVE
                  ) -> TrafficProfile:
        """Every request of one batch size (what `primary_batch_size: N` meant)."""
        return cls((TrafficEntry(batch_size, 1.0),), objective=objective)

    @classmethod
    def from_dict(cls, data, source: str) -> TrafficProfile:
        """From the YAML's `traffic:` mapping: `requests` as a list of {batch_size, share,
        slo_p99_ms} (to_dict's form) or as {batch: share} with `slo_p99_ms` as {batch: ms};
        `clients`; `objective`."""
        if not isinstance(data, dict):
            raise ServoptError(f"{source}: 'traffic' must be a mapping with requests, "
                               f"clients, slo_p99_ms and objective, got {_kind(data)}")
        known = {"requests", "clients", "slo_p99_ms", "objective"}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ServoptError(f"{source}: unknown key 'traffic.{unknown[0]}'; known keys: "
                               f"{', '.join('traffic.' + k for k in sorted(known))}")
        if "requests" not in data:
            raise ServoptError(f"{source}: 'traffic' has no 'requests'; list the batch sizes "
                               "clients send with their share, e.g. requests: {1: 0.9, "
                               "100: 0.1}")
        requests = data["requests"]
        if isinstance(requests, dict):
            entries = [(batch, share) for batch, share in requests.items()]
        elif isinstance(requests, list) and all(isinstance(e, dict) for e in requests):
            try:
                entries = [(e["batch_size"], e["share"]) for e in requests]
            except KeyError as missing:
                raise ServoptError(f"{source}: each entry of 'traffic.requests' needs "
                                   f"batch_size and share (missing {missing})") from None
            for entry in requests:
                extra = sorted(set(entry) - {"batch_size", "share", "slo_p99_ms"})
                if extra:
                    raise ServoptError(f"{source}: unknown key '{extra[0]}' in "
                                       "'traffic.requests'; known: batch_size, share, "
                                       "slo_p99_ms")
        else:
            raise ServoptError(f"{source}: 'traffic.requests' must map batch sizes to "
                               f"shares, e.g. {{1: 0.9, 100: 0.1}}, got {_kind(requests)}")
        slos = data.get("slo_p99_ms") or {}
        if not isinstance(slos, dict):
            raise ServoptError(f"{source}: 'traffic.slo_p99_ms' must map batch sizes to "
                               f"milliseconds, e.g. {{1: 50}}, got {_kind(slos)}")
        slos = {_batch(b, source): v for b, v in slos.items()}
        if isinstance(requests, list):
            slos |= {_batch(e["batch_size"], source): e["slo_p99_ms"] for e in requests
                     if e.get("slo_p99_ms") is not None}
        sizes = [_batch(b, source) for b, _ in entries]
        for batch in slos:
            if batch not in sizes:
                raise ServoptError(f"{source}: 'traffic.slo_p99_ms' names batch {batch}, "
                                   f"which 'traffic.requests' does not list ({sizes})")
        profile = object.__new__(cls)  # validated with the file's name, then frozen
        values = {"requests": tuple(TrafficEntry(b, s, slos.get(b))
                                    for b, (_, s) in zip(sizes, entries, strict=True)),
                  "clients": data.get("clients", 1),
                  "objective": data.get("objective", DEFAULT_OBJECTIVE)}
        for key, value in values.items():
            object.__setattr__(profile, key, value)
        profile.validate(source)
        return profile

    def to_dict(self) -> dict:
        """The YAML / JSON form (string-free keys: KFP parameters and JSON carry it)."""
        return {"requests": [{"batch_size": e.batch_size, "share": e.share,
                              "slo_p99_ms": e.slo_p99_ms} for e in self.requests],
                "clients": self.clients, "objective": self.objective}


def _batch(value, source: str) -> int:
    """A batch size key: YAML reads `1:` as an int, JSON as the string "1"."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ServoptError(f"{source}: a batch size in 'traffic' must be an integer, got "
                           f"{_kind(value)}")
    return value


def _is_number(value) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and not math.isnan(value))


def _g(value: float) -> str:
    return f"{value:g}"


def _kind(value) -> str:
    return f"{type(value).__name__} {value!r}"


def parse_pairs(text: str, option: str, value_type=float) -> dict[int, float]:
    """'1:0.9,100:0.1' -> {1: 0.9, 100: 0.1}, with an error naming the option."""
    pairs: dict[int, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        batch, sep, value = item.partition(":")
        try:
            if not sep:
                raise ValueError
            pairs[int(batch)] = value_type(value)
        except ValueError:
            raise ServoptError(f"{option}: '{item}' is not BATCH:VALUE; write e.g. "
                               f"{option} 1:0.9,100:0.1") from None
    if not pairs:
        raise ServoptError(f"{option}: no BATCH:VALUE pair given; write e.g. {option} "
                           "1:0.9,100:0.1")
    return pairs


def with_flags(profile: TrafficProfile, requests: str | None = None,
               slo_p99_ms: str | None = None, objective: str | None = None,
               clients: int | None = None) -> TrafficProfile:
    """`profile` with what the command line gives instead (--traffic 1:0.9,100:0.1,
    --slo-p99-ms 1:50,100:500, --traffic-objective, --clients)."""
    if requests is None and slo_p99_ms is None and objective is None and clients is None:
        return profile
    data = profile.to_dict()
    if requests is not None:
        shares = parse_pairs(requests, "--traffic")
        data["requests"] = dict(shares)
        data["slo_p99_ms"] = {b: ms for b, ms in profile.slo_p99_ms.items() if b in shares}
    else:
        data["slo_p99_ms"] = profile.slo_p99_ms
        data["requests"] = profile.shares
    if slo_p99_ms is not None:
        data["slo_p99_ms"] = parse_pairs(slo_p99_ms, "--slo-p99-ms")
    if objective is not None:
        data["objective"] = objective
    if clients is not None:
        data["clients"] = clients
    return TrafficProfile.from_dict(data, "the command line")
