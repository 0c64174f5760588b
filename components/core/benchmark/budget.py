"""The benchmark's total time budget: how much measuring fits, and how long is left.

`total_budget_s` (BenchmarkConfig) bounds the measuring of one run, counted from when its
workers are ready (starting them, a TensorFlow import each, takes what the machine's load
makes it take; dropping rows cannot shorten it): loading the rows, the default rows at
every batch size, the concurrency sweep and the configuration search. Counting FLOPs
and the accuracy pipeline come after it and are not cut short (the gate needs
accuracy), but they report their progress too.

How the budget is spent, in order:

1. each batch size gets an equal share of what is left (the first of two batch sizes
   half, the second what the first left);
2. before its rounds, every row is warmed up at that batch size; the warm-up's time per
   request ranks the candidates, fastest (most promising) first, the baseline always
   kept: a round costs about one window plus the re-warm requests per row, and the
   least promising candidates that do not fit the minimum rounds (stats.rounds_for) in
   the share are not measured (the baseline and the most promising candidate always are,
   for the minimum rounds, past the budget if need be: a run always compares something;
   the others are recorded per row, with the reason, in the result's
   `budget.not_measured` and the row's `error`, so a gate rejects them);
3. rounds stop at the share's deadline (or when the floor's minimum rounds are done)
   even when not yet stable (reported unstable, as
   at `max_windows`);
4. the concurrency sweep runs when its estimate fits what is left, else it is skipped
   (recorded); the search gets at most what is left (its own `search_budget_s` still
   bounds it).

`Budget.line` prefixes progress lines with the time spent and left, so long work shows
how far it is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

Clock = Callable[[], float]


def clock_text(seconds: float) -> str:
    """90 -> '1:30'; inf -> 'no limit'."""
    if math.isinf(seconds):
        return "no limit"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class Budget:
    """Seconds `total_s` (None: no limit) counted from construction on `clock`."""

    total_s: float | None
    clock: Clock = time.monotonic
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def remaining(self) -> float:
        """Seconds left; inf without a limit, never below 0."""
        if self.total_s is None:
            return math.inf
        return max(0.0, self.total_s - self.elapsed())

    def exhausted(self) -> bool:
        return self.remaining() <= 0

    def deadline(self, share: float = 1.0) -> float | None:
        """The clock value at which `share` of what is left now is spent; None: no limit."""
        left = self.remaining()
        return None if math.isinf(left) else self.clock() + left * share

    def line(self, message: str, left_s: float | None = None) -> str:
        """`message` with the time spent and, where known, the estimate of its time left."""
        spent = clock_text(self.elapsed())
        limit = "" if self.total_s is None else f" of {clock_text(self.total_s)}"
        estimate = "" if left_s is None else f", about {clock_text(left_s)} left"
        return f"[{spent}{limit}] {message}{estimate}"


# Re-warm (scheduler) wakes a row's thread pools after the other rows ran: once this much
# work was done, more requests warm nothing more. A ResNet50 request at batch 16 takes
# about a second on 2 cores, and three of them before each one-request window tripled a
# round's cost.
REWARM_WORK_S = 0.1


def rewarm_count(rewarm_requests: int, per_request_s: float | None) -> int:
    """Re-warm requests before a window: `rewarm_requests`, fewer for slow requests (at
    least one, about REWARM_WORK_S of work); all of them while the time is not known."""
    if not rewarm_requests or not per_request_s or per_request_s <= 0:
        return rewarm_requests
    return max(1, min(rewarm_requests, math.ceil(REWARM_WORK_S / per_request_s)))


def round_cost_s(per_request_s: float, window_seconds: float | None, window_requests: int,
                 rewarm_requests: int) -> float:
    """Seconds one row adds to a round: its window (at least one request; `window_requests`
    requests or `window_seconds`, whichever ends first) and re-warm."""
    window = window_requests * per_request_s
    if window_seconds:
        window = max(min(window_seconds, window), per_request_s)
    return window + rewarm_count(rewarm_requests, per_request_s) * per_request_s


def rank_rows(baseline: str, per_request_s: Mapping[str, float],
              references: Sequence[str] = ()) -> list[str]:
    """The baseline first, then the other `references` (the served version: the gate
    compares every candidate with it), then the candidates fastest first (the most
    promising)."""
    firsts = [name for name in (baseline, *references) if name in per_request_s]
    candidates = sorted((name for name in per_request_s if name not in firsts),
                        key=lambda name: (per_request_s[name], name))
    return firsts + candidates


def rows_that_fit(ranked: Sequence[str], costs: Mapping[str, float], rounds: int,
                  seconds: float, keep: int = 1) -> list[str]:
    """The longest prefix of `ranked` (at least its first `keep`) whose `rounds` rounds
    fit in `seconds`."""
    kept: list[str] = []
    total = 0.0
    for name in ranked:
        total += costs[name] * rounds
        if len(kept) >= keep and total > seconds:
            break
        kept.append(name)
    return kept
