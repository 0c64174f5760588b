"""The configuration search: which TF Serving settings make each contender fastest.

The best variant and the best server settings differ per CPU and per model, so they are
measured, not guessed, on the machine the benchmark runs on. After the default rows are
measured (run.BenchmarkSession.measure), the search:

1. takes the contenders: per runtime, the `search_contenders` best candidate rows that
   TF Serving can serve, by the traffic profile's objective (BenchmarkConfig.
   search_profile: the gate's `traffic:`, e.g. the request-weighted mean p50 over 90%
   batch 1 and 10% batch 100; without one, `search_objective` at `search_batch_size`);
2. tries one stage of knobs at a time (KNOBS, in order: the most promising first; a
   stage measures in one step knobs of different runtimes, or alternatives on one
   contender) on every contender whose runtime has them: each value is a new row
   (`NAME@runtime:label`, its own worker process with those settings), measured in
   interleaved rounds with the baseline and the contender's current best at EVERY batch
   size of the profile (so a winner's figures are complete for the gate, nothing is
   measured again at the end);
3. judges a value on the profile's objective with the gate's interval rule (judge_gain):
   the objective per round (rounds of each batch size paired by their index) gives a
   paired per-round gain over the current best, and its distribution-free interval
   decides: wholly above 1, the value is better; wholly below, worse; straddling 1, it is
   measured for more rounds (up to MAX_ROUNDS, within the budget) before it is judged,
   never discarded on the first rounds. The best value that is better is kept; a knob
   that has nothing to try on this machine (no bf16 units, a batch too small to split,
   one client) is recorded with the reason;
4. skips a knob whose step (with measuring its possible winners at batch sizes outside
   the profile, 5.) would pass `search_budget_s`, says so, and goes on with the next;
5. measures each contender's best row at the batch sizes outside the profile (and a
   batching winner, judged under concurrent clients, at every batch size), so the row is
   complete for the gate and the report.

What it costs: one step measures (1 + contenders + values) workers for 6 rounds (95%
confidence) of one window at each profile batch size, plus starting the new workers
(STARTUP_S). For the demo on 2 cores (one contender per runtime, batch 1 and 100, about
0.9 s of windows per worker and round over both, 2 clients): the TFLite split with bf16,
5 workers, 15 + 5 x 6 x 0.9 = 42 s; batching, 6 workers and its winner at both batch
sizes, about 58 s; both thread pools, 4 workers, 37 s: about 140 s before extra rounds,
within the default budget of 300 s (docs/traffic-profile.md).

Every row it measured stays in the result, with its speedups over the baseline from
the same rounds, so the gate can judge every (variant, configuration) pair and pick the
best one that passes every check (gate). The knobs are TF Serving's flags, each modelled
from its source (see serving_config and engines):

- `tflite_interpreters_per_pool` (`--num_tflite_interpreters_per_pool`): > 1 splits a
  batch into chunks of ceil(500 / N) run on parallel 1-thread interpreters
  (tflite_interpreter_pool.cc). Only values that split a measured batch among this
  machine's cores differently are tried: N = ceil(500 / ceil(B / k)), k = 2..cores.
- `intra_op_threads`, `inter_op_threads` (`--tensorflow_intra_op_parallelism`,
  `--tensorflow_inter_op_parallelism`): fewer threads than cores can win for small graphs,
  where waking threads costs more than the work.
- `mixed_precision` (`--mixed_precision=bfloat16`): only on CPUs with bf16 units, for
  float32 models; its accuracy is measured again (it changes the numbers).
- `batching` (`--enable_batching` with the version's `batching_params.pbtxt`): merges
  concurrent requests (TF's BatchFunction op, the same shared batch scheduler, see
  batch_function), so it is judged with the concurrency sweep's largest number of
  clients sending requests at once, at the search batch size; the settings tried come
  from TF Serving's batching guide (batching.batching_candidates). A batching setting that
  wins is then measured like every row (one client at a time, every batch size), the
  figures the gate reads; its gain under concurrent clients is in its `concurrency`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from components.core.batching import batching_candidates
from components.core.benchmark.budget import round_cost_s
from components.core.benchmark.config import BenchmarkConfig, available_cores
from components.core.benchmark.engines import TFLITE_INITIAL_BATCH_SIZE
from components.core.benchmark.measure import WindowSample
from components.core.benchmark.results import copy_measurements, fill_batches
from components.core.benchmark.runtimes import Row, row_runner, runtime_info
from components.core.benchmark.scheduler import Series, interleaved_rounds
from components.core.benchmark.schema import (
    CANDIDATE,
    BenchmarkResult,
    ConcurrencyResult,
    ModelResult,
    SearchRecord,
    SearchStep,
)
from components.core.benchmark.stats import (
    ABOVE_ONE,
    BELOW_ONE,
    STRADDLES_ONE,
    Interval,
    median_interval,
    rounds_for,
    side_of_one,
)
from components.core.errors import ServoptError
from components.core.requirements import (
    BF16_CPU_FEATURES,
    TENSORFLOW_RUNTIME,
    TFLITE_RUNTIME,
    cpu_flags,
    read_requirements,
)
from components.core.serving_config import ServingConfig
from components.core.traffic import TrafficProfile

# Knobs that change the model's numbers: rows with them get their accuracy measured.
NUMERIC_KNOBS = ("mixed_precision",)
# Seconds to start a step's workers (each imports TensorFlow), for the budget estimate.
STARTUP_S = 15.0
# A value whose gain interval straddles 1 is measured for more rounds, up to this many in
# all (3 x the 6 a 95% interval needs: the interval narrows about as 1/sqrt(rounds)).
MAX_ROUNDS = 18
BETTER, WORSE, UNDECIDED = "better", "worse", "no clear difference"


@dataclass(frozen=True)
class Knob:
    name: str  # the ServingConfig field
    runtime: str
    # (current config, row, settings) -> (values to try, why nothing is tried)
    values: Callable[[ServingConfig, Row, BenchmarkConfig], tuple[list, str]]
    concurrent: bool = False  # judged with concurrent clients (search_clients)
    # Knobs of one stage are measured in one step (one startup, one baseline and
    # incumbent for all): knobs of different runtimes, or alternatives on one contender.
    stage: int = 0


def search_clients(settings: BenchmarkConfig) -> int:
    """Clients at once for the knobs judged under concurrency: the traffic profile's;
    without one, the concurrency sweep's largest."""
    if settings.traffic is not None:
        return settings.traffic.clients
    return max(settings.concurrency, default=1)


def _interpreter_counts(config: ServingConfig, row: Row, settings: BenchmarkConfig
                        ) -> tuple[list, str]:
    cores = settings.tflite_pool_count()
    batch = max(settings.search_profile().batch_sizes)
    values = sorted({math.ceil(TFLITE_INITIAL_BATCH_SIZE / math.ceil(batch / parts))
                     for parts in range(2, min(cores, batch) + 1)}
                    - {config.tflite_interpreters_per_pool})
    if not values:
        return [], (f"a batch of {batch} is not split among {cores} interpreter pool(s) "
                    "any differently")
    return values, ""


def _thread_counts(name: str) -> Callable:
    def values(config: ServingConfig, row: Row, settings: BenchmarkConfig
               ) -> tuple[list, str]:
        cores = available_cores()
        current = getattr(config, name)
        tried = sorted({1, max(1, cores // 2)} - {current})
        return tried, "" if tried else f"{current} thread(s) is the only setting below the cores"
    return values


def _mixed_precision(config: ServingConfig, row: Row, settings: BenchmarkConfig
                     ) -> tuple[list, str]:
    if not set(BF16_CPU_FEATURES) & cpu_flags():
        return [], (f"this CPU has no bf16 units ({' / '.join(BF16_CPU_FEATURES)}), where "
                    "--mixed_precision=bfloat16 would only emulate bf16")
    precision = read_requirements(row.path).precision
    if precision != "float32":
        return [], f"the model already computes in {precision}"
    return ([] if config.mixed_precision else ["bfloat16"]), "already on"


def _batching(config: ServingConfig, row: Row, settings: BenchmarkConfig
              ) -> tuple[list, str]:
    clients = search_clients(settings)
    if config.batching is not None:
        return [], "already on"
    if clients < 2:
        return [], ("batching merges concurrent requests, and the traffic profile (or the "
                    "concurrency sweep) has no more than 1 client")
    return batching_candidates(available_cores(), clients,
                               max(settings.search_profile().batch_sizes)), ""


# The most promising first (measured here: the TFLite split and bf16 gain 1.5-4x at batch
# 100, thread pools a few percent), so a budget that runs short leaves out the least.
# Stages: the TFLite split and bf16 (different runtimes) together, batching alone (judged
# under concurrent clients), then both thread pools as alternatives to the best so far.
KNOBS = (
    Knob("tflite_interpreters_per_pool", TFLITE_RUNTIME, _interpreter_counts, stage=0),
    Knob("mixed_precision", TENSORFLOW_RUNTIME, _mixed_precision, stage=0),
    Knob("batching", TENSORFLOW_RUNTIME, _batching, concurrent=True, stage=1),
    Knob("intra_op_threads", TENSORFLOW_RUNTIME, _thread_counts("intra_op_threads"),
         stage=2),
    Knob("inter_op_threads", TENSORFLOW_RUNTIME, _thread_counts("inter_op_threads"),
         stage=2),
)


class ConcurrentClients:
    """A runner whose measurement windows are `clients` clients sending requests at once
    (LocalRunner.concurrent), so interleaved rounds can compare runners under load."""

    def __init__(self, runner, clients: int):
        self.runner, self.clients = runner, clients

    def warmup(self, batch_size: int, requests: int) -> None:
        self.runner.warmup(batch_size, requests)

    def window(self, batch_size: int, requests: int, seconds: float | None = None
               ) -> WindowSample:
        sample = self.runner.concurrent(batch_size, self.clients,
                                        max(1, requests // self.clients), seconds)
        return WindowSample(sample.latencies_ms, sample.duration_s, sample.examples)


def objective_value(model: ModelResult, objective: str, batch_size: int) -> float | None:
    batch = model.at(batch_size)
    return getattr(batch, objective, None) if batch else None


def profile_value(model: ModelResult, profile: TrafficProfile) -> float | None:
    """The profile's objective of a measured row, from its figures at each batch size."""
    return profile.weighted({b: objective_value(model, profile.metric, b)
                             for b in profile.batch_sizes})


def round_figures(series: Series, metric: str) -> list[float]:
    """The per-round (per-window) figure the objective weights."""
    return {"p50_ms": series.p50s, "p99_ms": series.p99s,
            "throughput": series.throughputs}[metric]


@dataclass(frozen=True)
class Judgement:
    """A challenger against the incumbent on the profile's objective."""

    gain: Interval  # median per-round gain (above 1: the challenger is better)
    outcome: str  # BETTER, WORSE or UNDECIDED
    rounds: int


def fit_in_memory(plans: dict[str, list[Row]], estimate: Callable[[str], int], room: float,
                  knob: str) -> tuple[dict[str, list[Row]], float, dict[str, str]]:
    """The rows of `plans` (contender -> rows to try), in order, whose workers fit in
    `room` bytes, each estimated at its contender's (see memory); the room left; and for
    each contender that lost rows, what was left out and why."""
    kept, notes = {}, {}
    for contender, rows in plans.items():
        cost = estimate(contender)
        fit = (len(rows) if not cost or math.isinf(room)
               else min(max(int(room // cost), 0), len(rows)))
        if fit < len(rows):
            notes[contender] = (f"{len(rows) - fit} of {len(rows)} {knob} value(s) not "
                                f"tried: the memory budget holds no more workers of about "
                                f"{cost / (1 << 20):.0f} MiB beside those running")
        if rows[:fit]:
            kept[contender] = rows[:fit]
            room -= cost * fit
    return kept, room, notes


def judge_gain(incumbent: dict[int, list[float]], challenger: dict[int, list[float]],
               profile: TrafficProfile, confidence: float) -> Judgement | None:
    """The keep rule, on figures recorded per round at each batch size of `profile`
    (rounds paired by index): the objective per round of each, the per-round gain of the
    challenger, the median and its distribution-free interval (stats.median_interval,
    the gate's): BETTER when the interval lies wholly above 1, WORSE wholly below,
    UNDECIDED when it straddles 1 (or too few rounds to reach the confidence). None
    without a round measured at every batch size."""
    mine, theirs = profile.per_round(incumbent), profile.per_round(challenger)
    gains = [profile.gain(a, b) for a, b in zip(mine, theirs, strict=False)
             if a > 0 and b > 0]
    if not gains:
        return None
    interval = median_interval(gains, confidence)
    side = side_of_one(interval.low, interval.high) if interval.coverage else STRADDLES_ONE
    outcome = {ABOVE_ONE: BETTER, BELOW_ONE: WORSE}.get(side, UNDECIDED)
    return Judgement(interval, outcome, len(gains))


class ConfigurationSearch:
    """One search over a measured BenchmarkSession (see the module docstring)."""

    def __init__(self, session, result: BenchmarkResult):
        self.session, self.result = session, result
        self.settings: BenchmarkConfig = session.config
        self.profile = self.settings.search_profile()
        self.batch = self.profile.primary_batch_size
        self.objective = self.profile.metric  # the per-batch figure the profile weights
        self.lower_is_better = self.profile.lower_is_better
        self.skipped: list[str] = []  # knobs left out for the budget
        self.started = time.monotonic()
        self.best: dict[str, str] = {}  # contender -> its best row so far
        self.steps: list[SearchStep] = []
        self.extra_runners: dict = {}  # searched rows kept running (a contender's best)
        self.origin: dict[str, str] = {}  # searched row -> the default row it varies

    # --- what to search -------------------------------------------------------------

    def contenders(self) -> list[str]:
        """Per runtime, the best servable candidate rows by the profile's objective, best
        first."""
        by_runtime: dict[str, list[tuple[float, str]]] = {}
        for name, model in self.result.models.items():
            row = self.session.rows.get(name)
            value = profile_value(model, self.profile)
            if (model.role != CANDIDATE or model.error or row is None or not row.servable
                    or value is None or not self.session.usable(name)):
                continue
            key = value if self.lower_is_better else -value
            by_runtime.setdefault(row.runtime, []).append((key, name))
        chosen = []
        for ranked in by_runtime.values():
            chosen += [name for _, name in sorted(ranked)[:self.settings.search_contenders]]
        return chosen

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _rounds_cost(self, runners: int, sizes) -> float:
        """Seconds for interleaved rounds over `runners` running workers at `sizes`: per
        row and round one window, as long as the slowest measured row's would be (a
        window ends at window_requests requests or window_seconds, see budget)."""
        settings, total = self.settings, 0.0
        for size in sizes:
            p50s = [batch.p50_ms for model in self.result.models.values()
                    if (batch := model.at(size)) is not None and batch.p50_ms]
            total += (round_cost_s(max(p50s) / 1e3, settings.window_seconds,
                                   settings.window_requests, settings.rewarm_requests)
                      if p50s else (settings.window_seconds or 1.0) * 1.2)  # with re-warm
        return runners * rounds_for(settings.confidence) * total

    def _step_cost(self, runners: int) -> float:
        """Starting the new workers, then rounds at every batch size of the profile."""
        return STARTUP_S + self._rounds_cost(runners, self.profile.batch_sizes)

    def _completion_cost(self, kept: int, concurrent: bool = False) -> float:
        """What _complete needs for `kept` searched rows (already running, with the
        baseline) at the batch sizes their steps did not measure: the budget holds it."""
        others = (self.settings.batch_sizes if concurrent else
                  set(self.settings.batch_sizes) - set(self.profile.batch_sizes))
        return self._rounds_cost(1 + kept, others) if kept else 0.0

    # --- the search -----------------------------------------------------------------

    def run(self) -> SearchRecord:
        contenders = self.contenders()
        # Only the contenders run beside the baseline and the served version: the other
        # candidates' memory is free for the rows the search starts (memory groups may
        # have closed a contender's worker: it starts again).
        self.session.run_only(contenders)
        contenders = [name for name in contenders if name in self.session.runners]
        self.best = {name: name for name in contenders}
        stopped = "every knob was tried" if contenders else "no candidate to search"
        for _, group in itertools.groupby(KNOBS, key=lambda knob: knob.stage):
            self._stage(list(group), contenders)
        self._complete()
        if self.skipped:
            stopped = (f"the search budget of {self.settings.search_budget_s:g} s left out "
                       f"{', '.join(self.skipped)}; every other knob was tried")
        return SearchRecord(objective=self.objective, batch_size=self.batch,
                            budget_s=self.settings.search_budget_s,
                            elapsed_s=round(self.elapsed(), 1), contenders=contenders,
                            best=dict(self.best), steps=self.steps, stopped=stopped,
                            traffic=self.profile.to_dict(),
                            tried=[step.knob for step in self.steps if step.rows])

    def _stage(self, knobs: list[Knob], contenders: list[str]) -> None:
        """The knobs of one stage in one step, if the budget holds it; one SearchStep per
        knob either way."""
        plans: dict[str, list[Row]] = {}
        per_knob, reasons, left_out = {}, {}, {}
        room = self._memory_room()
        for knob in knobs:
            planned, reasons[knob.name] = self._plan(knob, contenders)
            per_knob[knob.name], room, notes = fit_in_memory(
                planned, self.session.memory.estimate, room, knob.name)
            left_out |= notes
            for contender, note in notes.items():
                if contender not in per_knob[knob.name]:
                    reasons[knob.name][contender] = f"nothing tried: {note}"
            for contender, rows in per_knob[knob.name].items():
                plans.setdefault(contender, []).extend(rows)
        concurrent = any(knob.concurrent for knob in knobs)
        chosen: dict[str, str] = {}
        if plans:
            # The step, and measuring at the batch sizes it does not (_complete) every
            # searched row that can be a best after it: the budget holds both.
            kept = {self.origin[name] for name in self.extra_runners} | set(plans)
            cost = (self._step_cost(1 + len(plans) + sum(map(len, plans.values())))
                    + self._completion_cost(len(kept), concurrent))
            if self.elapsed() + cost > self.settings.search_budget_s:
                skipped = [knob.name for knob in knobs if per_knob[knob.name]]
                self.skipped += skipped
                chosen = {contender: f"not tried: the search budget of "
                                     f"{self.settings.search_budget_s:g} s would be passed "
                                     f"(about {cost:.0f} s more after "
                                     f"{self.elapsed():.0f} s)" for contender in plans}
                plans = {}
            else:
                tried = " and ".join(knob.name for knob in knobs if per_knob[knob.name])
                self.session.say(f"configuration search: {tried} on {', '.join(plans)}")
                chosen = self._step(concurrent, plans)
                chosen = {contender: (f"{outcome}; {left_out[contender]}"
                                      if contender in left_out else outcome)
                          for contender, outcome in chosen.items()}
        for knob in knobs:
            rows = [row.name for rows in per_knob[knob.name].values() for row in rows]
            outcomes = {**reasons[knob.name],
                        **{contender: chosen[contender] for contender in per_knob[knob.name]
                           if contender in chosen}}
            if outcomes:
                self.steps.append(SearchStep(knob.name, rows if plans else [], outcomes))

    def _memory_room(self) -> float:
        """Bytes the memory budget leaves beside the running workers, less the transient
        of a load (they load one by one; inf: no limit)."""
        memory = self.session.memory
        if not memory.limited:
            return math.inf
        return (memory.room - memory.held([*self.session.runners.values(),
                                           *self.extra_runners.values()])
                - memory.load_headroom(memory.private))

    def _plan(self, knob: Knob, contenders: list[str]
              ) -> tuple[dict[str, list[Row]], dict[str, str]]:
        """Contender -> the rows to try for `knob`; and why nothing is tried for others."""
        plans, outcomes = {}, {}
        for contender in contenders:
            current = self.session.rows[self.best[contender]]
            if current.runtime != knob.runtime:
                continue
            config = current.serving_config(self.settings)
            values, why_not = knob.values(config, current, self.settings)
            if not values:
                outcomes[contender] = f"nothing to try: {why_not}"
                continue
            plans[contender] = [current.with_config(config.with_changes(**{knob.name: v}))
                                for v in values]
        return plans, outcomes

    def _step(self, concurrent: bool, plans: dict[str, list[Row]]) -> dict[str, str]:
        """Measures the plans' rows with their incumbents and the baseline; returns each
        contender's outcome."""
        session = self.session
        new_rows = [row for rows in plans.values() for row in rows]
        for contender, rows in plans.items():
            self.origin |= {row.name: contender for row in rows}
        started = self._start(new_rows)
        runners = {session.baseline: session.runners[session.baseline],
                   **self._served_runner()}
        for contender in plans:
            runners[self.best[contender]] = self._runner(self.best[contender])
        runners |= started
        clients = search_clients(self.settings) if concurrent else 1
        if concurrent:
            runners = {name: ConcurrentClients(runner, clients)
                       for name, runner in runners.items()}
        series, errors = self._rounds(runners)
        judged = self._judge(plans, series, runners, errors)
        for size in self.profile.batch_sizes:
            at_size = {name: by_size[size] for name, by_size in series.items()
                       if size in by_size}
            if concurrent:
                self._record_concurrent(new_rows, at_size, clients, errors, size)
            else:
                self._record(new_rows, at_size, size, errors)
        outcomes = {}
        for contender, rows in plans.items():
            incumbent = self.best[contender]
            outcomes[contender] = self._choose(contender, incumbent, rows, judged)
        for row in new_rows:  # keep only the new best rows running
            if row.name not in self.best.values() and row.name in started:
                self._close(row.name, started[row.name])
            elif row.name in started:
                self.extra_runners[row.name] = started[row.name]
        for name in list(self.extra_runners):  # a searched best that was beaten
            if name not in self.best.values():
                self._close(name, self.extra_runners.pop(name))
        return outcomes

    def _rounds(self, runners: dict) -> tuple[dict[str, dict[int, Series]], dict[str, str]]:
        """Interleaved rounds of `runners` at every batch size of the profile."""
        plan = dataclasses.replace(self.settings,
                                   max_windows=rounds_for(self.settings.confidence),
                                   decide_speedup_p50=None, decide_speedup_p99=None)
        series: dict[str, dict[int, Series]] = {name: {} for name in runners}
        errors: dict[str, str] = {}
        for size in self.profile.batch_sizes:
            active = {name: runner for name, runner in runners.items() if name not in errors}
            outcome = interleaved_rounds(active, size, plan)
            for name, measured in outcome.series.items():
                series[name][size] = measured
            errors |= outcome.errors
        return series, errors

    def _judge(self, plans: dict[str, list[Row]], series: dict[str, dict[int, Series]],
               runners: dict, errors: dict[str, str]) -> dict[str, Judgement | None]:
        """Each new row against its contender's current best (judge_gain); rows whose
        interval straddles 1 are measured for more rounds, with the baseline and their
        incumbents (paired again), while MAX_ROUNDS and the budget allow."""
        def judge_all() -> dict[str, Judgement | None]:
            judged = {}
            for contender, rows in plans.items():
                incumbent = series.get(self.best[contender])
                for row in rows:
                    mine = series.get(row.name)
                    judged[row.name] = (None if not incumbent or not mine
                                        or row.name in errors else judge_gain(
                        self._figures(incumbent), self._figures(mine), self.profile,
                        self.settings.confidence))
            return judged

        judged = judge_all()
        while True:
            open_rows = [name for name, j in judged.items()
                         if j is not None and j.outcome == UNDECIDED]
            if not open_rows:
                return judged
            incumbents = {self.best[self.origin[name]] for name in open_rows}
            names = [self.session.baseline, *incumbents, *open_rows]
            rounds = min(j.rounds for name, j in judged.items() if name in open_rows)
            cost = self._rounds_cost(len(names), self.profile.batch_sizes)
            if (rounds >= MAX_ROUNDS
                    or self.elapsed() + cost > self.settings.search_budget_s):
                return judged
            self.session.say(f"configuration search: {len(open_rows)} setting(s) not yet "
                             f"clear after {rounds} rounds, measuring more")
            more, failed = self._rounds({name: runners[name] for name in names
                                         if name in runners and name not in errors})
            errors |= failed
            added = 0
            for name, by_size in more.items():
                for size, extra in by_size.items():
                    if size in series.get(name, {}):
                        series[name][size].windows += extra.windows
                        added += len(extra.windows)
            if not added:  # nothing could be measured: judge on what there is
                return judged
            judged = judge_all()

    def _figures(self, by_size: dict[int, Series]) -> dict[int, list[float]]:
        return {size: round_figures(measured, self.objective)
                for size, measured in by_size.items()}

    def _choose(self, contender: str, incumbent: str, rows: list[Row],
                judged: dict[str, Judgement | None]) -> str:
        gains = [(judged[row.name], row.name) for row in rows
                 if judged.get(row.name) is not None]
        if not gains and rows:
            return f"not compared: {incumbent} or every setting failed in this step"
        better = [(j, name) for j, name in gains if j.outcome == BETTER]
        described = "; ".join(
            f"{name.split(':', 1)[1]} {j.gain.estimate:.2f}x [{_num(j.gain.low)}, "
            f"{_num(j.gain.high)}] over {j.rounds} rounds: {j.outcome}"
            for j, name in gains) or "nothing measured"
        on = f"{self.profile.objective} ({self.profile.describe()})"
        if not better:
            return (f"kept {_label(incumbent)}: no setting was better on {on} with "
                    f"{self.settings.confidence:.0%} confidence ({described})")
        best, winner = max(better, key=lambda pair: pair[0].gain.estimate)
        self.best[contender] = winner
        return (f"chose {_label(winner)}: {best.gain.estimate:.2f}x better than "
                f"{_label(incumbent)} on {on} ({described})")

    def _complete(self) -> None:
        """The best searched rows at every batch size they lack (one client at a time, as
        every row), with the baseline."""
        rows = [self.session.rows[name] for name in self.best.values()
                if name in self.extra_runners]
        plan = dataclasses.replace(self.settings,
                                   max_windows=rounds_for(self.settings.confidence),
                                   decide_speedup_p50=None, decide_speedup_p99=None)
        for size in self.settings.batch_sizes:
            lacking = [row for row in rows if self.result.models[row.name].at(size) is None]
            if not lacking:
                continue
            runners = {self.session.baseline: self.session.runners[self.session.baseline],
                       **self._served_runner(),
                       **{row.name: self.extra_runners[row.name] for row in lacking}}
            self.session.say(f"configuration search: the best settings at batch {size}")
            outcome = interleaved_rounds(runners, size, plan)
            self._record(lacking, outcome.series, size, outcome.errors)
        for name, runner in list(self.extra_runners.items()):
            self._close(name, runner)
        self.extra_runners.clear()

    # --- rows, runners, results -----------------------------------------------------

    def _served_runner(self) -> dict:
        """The served version's runner, measured in every round too (where it is), so a
        searched row's comparison with it is paired like the default rows'."""
        served = getattr(self.session, "served", None)
        return {served: self.session.runners[served]} if served in self.session.runners \
            else {}

    def _runner(self, name: str):
        return self.extra_runners.get(name) or self.session.runners[name]

    def _start(self, rows: list[Row]) -> dict:
        """A loaded worker per row; a row that fails to start or load gets its error."""
        session = self.session
        first_batch = session.pools[self.settings.batch_sizes[0]][0]
        runners = {}
        for row in rows:
            session.rows[row.name] = row
            session.signatures[row.name] = session.signatures[self.origin[row.name]]
            self.result.models[row.name] = self._model_result(row)
            runners[row.name] = row_runner(  # a worker, or a TF Serving with its flags
                row, sorted(session.signatures[row.name].signature.outputs), self.settings,
                session.pools)
        for name, runner in list(runners.items()):
            try:
                runner.wait_ready()
                loaded = runner.load(first_batch)
                for size, pool in session.pools.items():
                    runner.set_inputs(size, pool)
            except ServoptError as err:
                self.result.models[name].error = str(err)
                runner.close()
                del runners[name]
                continue
            model = self.result.models[name]
            model.load_time_s, model.first_request_ms = (loaded.load_time_s,
                                                         loaded.first_request_ms)
            if getattr(runner, "command", None) and model.runtime is not None:
                model.runtime.command = runner.command  # the tfserving backend's
        return runners

    def _model_result(self, row: Row) -> ModelResult:
        source = self.result.models[self.origin[row.name]]
        return ModelResult(path=source.path, role=source.role,
                           runtime=runtime_info(row, self.settings),
                           size_bytes=source.size_bytes)

    def numeric_rows(self) -> set[str]:
        """Searched rows whose settings change the model's numbers (accuracy measured)."""
        return {name for name in self.origin
                if any(knob in self.session.rows[name].config.changed
                       for knob in NUMERIC_KNOBS)}

    def inherit(self) -> None:
        """Searched rows compute what their default row computes (same model file, same
        numbers) unless a numeric knob changed: FLOPs and accuracy are copied from it."""
        numeric = self.numeric_rows()
        for name, origin in self.origin.items():
            if name in self.result.models:
                copy_measurements(self.result.models[origin], self.result.models[name],
                                  ("flops_per_example",) if name in numeric
                                  else ("flops_per_example", "accuracy"))

    def _record(self, rows: list[Row], series: dict[str, Series], size: int,
                errors: dict[str, str]) -> None:
        measured = {row.name: {size: series[row.name]} for row in rows if row.name in series}
        baseline = self.session.baseline
        served = getattr(self.session, "served", None)
        for reference in (baseline, served):  # compared with, never re-recorded
            if reference in series:
                measured[reference] = {size: series[reference]}
        results = {name: self.result.models[name] for name in measured
                   if name not in (baseline, served)}
        scratch = {name: ModelResult(path="", role="reference") for name in (baseline, served)
                   if name is not None}
        fill_batches({**results, **scratch}, measured, baseline, self.settings.confidence,
                     served)
        for name, message in errors.items():
            if name in self.result.models and name not in (baseline, served) and \
                    self.result.models[name].runtime and \
                    self.result.models[name].runtime.label != "default":
                self.result.models[name].error = f"{message} (configuration search)"

    def _record_concurrent(self, rows: list[Row], series: dict[str, Series], clients: int,
                           errors: dict[str, str], size: int) -> None:
        """What each new row did under `clients` concurrent clients at batch `size`, as
        its concurrency points; its one-client figures come from _complete if it wins."""
        for row in rows:
            if row.name in series:
                result = series[row.name].result()
                self.result.models[row.name].concurrency.append(ConcurrencyResult(
                    concurrency=clients, batch_size=size,
                    throughput=result.throughput, p50_ms=result.p50_ms,
                    p99_ms=result.p99_ms))
            elif row.name in errors:
                self.result.models[row.name].error = f"{errors[row.name]} (configuration " \
                                                     "search)"

    def _close(self, name: str, runner) -> None:
        with contextlib.suppress(ServoptError):
            self.result.models[name].peak_memory_bytes = runner.peak_memory_bytes()
        runner.close()


def _label(row: str) -> str:
    return row.split(":", 1)[1] if ":" in row else f"{row} (default settings)"


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"
