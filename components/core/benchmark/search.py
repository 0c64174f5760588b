"""The configuration search: which TF Serving settings make each contender fastest.

The best variant and the best server settings differ per CPU and per model, so they are
measured, not guessed, on the machine the benchmark runs on. After the default rows are
measured (run.BenchmarkSession.measure), the search:

1. takes the contenders: per runtime, the `search_contenders` best candidate rows by
   `search_objective` at the search batch size that TF Serving can serve;
2. tries one knob at a time (KNOBS, in order) on every contender whose runtime has it:
   each value of the knob is a new row (`NAME@runtime:label`, its own worker process with
   those settings), measured in interleaved rounds with the baseline and the contender's
   current best, at the search batch size;
3. keeps a value only when it beats the current best with the benchmark's confidence (the
   interval of the paired per-round ratio lies wholly above 1); otherwise the knob "did
   not help" and the contender keeps its settings. A knob that has nothing to try on this
   machine (no bf16 units, a batch too small to split) is recorded with the reason;
4. stops when every knob was tried or the next step, with measuring its possible winners
   at the other batch sizes (5.), would pass `search_budget_s`;
5. measures each contender's best row at the other batch sizes too, so the row is
   complete for the gate and the report.

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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from components.core.batching import batching_candidates
from components.core.benchmark.config import BenchmarkConfig, available_cores
from components.core.benchmark.engines import TFLITE_INITIAL_BATCH_SIZE
from components.core.benchmark.measure import WindowSample
from components.core.benchmark.results import copy_measurements, fill_batches
from components.core.benchmark.runtimes import Row, row_runner, runtime_info
from components.core.benchmark.scheduler import Series, compare, interleaved_rounds
from components.core.benchmark.schema import (
    CANDIDATE,
    BenchmarkResult,
    ConcurrencyResult,
    ModelResult,
    SearchRecord,
    SearchStep,
)
from components.core.benchmark.stats import rounds_for
from components.core.errors import ServoptError
from components.core.requirements import (
    BF16_CPU_FEATURES,
    TENSORFLOW_RUNTIME,
    TFLITE_RUNTIME,
    cpu_flags,
    read_requirements,
)
from components.core.serving_config import ServingConfig

# Knobs that change the model's numbers: rows with them get their accuracy measured.
NUMERIC_KNOBS = ("mixed_precision",)
# Seconds to start a step's workers (each imports TensorFlow), for the budget estimate.
STARTUP_S = 15.0


@dataclass(frozen=True)
class Knob:
    name: str  # the ServingConfig field
    runtime: str
    # (current config, row, settings) -> (values to try, why nothing is tried)
    values: Callable[[ServingConfig, Row, BenchmarkConfig], tuple[list, str]]
    concurrent: bool = False  # judged with concurrent clients (search_clients)


def search_clients(settings: BenchmarkConfig) -> int:
    """Clients at once for the knobs judged under concurrency: the sweep's largest."""
    return max(settings.concurrency, default=1)


def _interpreter_counts(config: ServingConfig, row: Row, settings: BenchmarkConfig
                        ) -> tuple[list, str]:
    cores = settings.tflite_pool_count()
    batch = settings.search_at()
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
        return [], ("batching merges concurrent requests, and the concurrency sweep has no "
                    "level above 1 client (benchmark.concurrency)")
    return batching_candidates(available_cores(), clients, max(settings.batch_sizes)), ""


KNOBS = (
    Knob("tflite_interpreters_per_pool", TFLITE_RUNTIME, _interpreter_counts),
    Knob("intra_op_threads", TENSORFLOW_RUNTIME, _thread_counts("intra_op_threads")),
    Knob("inter_op_threads", TENSORFLOW_RUNTIME, _thread_counts("inter_op_threads")),
    Knob("mixed_precision", TENSORFLOW_RUNTIME, _mixed_precision),
    Knob("batching", TENSORFLOW_RUNTIME, _batching, concurrent=True),
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


def _ratio_interval(incumbent: Series, challenger: Series, objective: str,
                    confidence: float):
    """The challenger's gain over the incumbent on the objective (above 1: better), as
    the median of the per-round ratios with its interval; None without paired rounds."""
    comparison = compare(incumbent, challenger, confidence)
    if comparison is None:
        return None
    return {"p50_ms": comparison.speedup_p50, "throughput": comparison.throughput_ratio
            }.get(objective, comparison.speedup_p99)


class ConfigurationSearch:
    """One search over a measured BenchmarkSession (see the module docstring)."""

    def __init__(self, session, result: BenchmarkResult):
        self.session, self.result = session, result
        self.settings: BenchmarkConfig = session.config
        self.batch = self.settings.search_at()
        self.objective = self.settings.search_metric()
        self.lower_is_better = self.objective.endswith("_ms")
        self.started = time.monotonic()
        self.best: dict[str, str] = {}  # contender -> its best row so far
        self.steps: list[SearchStep] = []
        self.extra_runners: dict = {}  # searched rows kept running (a contender's best)
        self.origin: dict[str, str] = {}  # searched row -> the default row it varies

    # --- what to search -------------------------------------------------------------

    def contenders(self) -> list[str]:
        """Per runtime, the best servable candidate rows by the objective, best first."""
        by_runtime: dict[str, list[tuple[float, str]]] = {}
        for name, model in self.result.models.items():
            row = self.session.rows.get(name)
            value = objective_value(model, self.objective, self.batch)
            if (model.role != CANDIDATE or model.error or row is None or not row.servable
                    or value is None or name not in self.session.runners):
                continue
            key = value if self.lower_is_better else -value
            by_runtime.setdefault(row.runtime, []).append((key, name))
        chosen = []
        for ranked in by_runtime.values():
            chosen += [name for _, name in sorted(ranked)[:self.settings.search_contenders]]
        return chosen

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _rounds_cost(self, runners: int) -> float:
        """Seconds for one batch size's interleaved rounds over `runners` running workers."""
        window = (self.settings.window_seconds or 1.0) * 1.2  # with the re-warm requests
        return runners * rounds_for(self.settings.confidence) * window

    def _step_cost(self, runners: int) -> float:
        return STARTUP_S + self._rounds_cost(runners)

    def _completion_cost(self, kept: int) -> float:
        """What _complete needs for `kept` searched rows (already running, with the
        baseline) at the other batch sizes: the budget holds it too."""
        others = len(self.settings.batch_sizes) - 1
        return others * self._rounds_cost(1 + kept) if kept else 0.0

    # --- the search -----------------------------------------------------------------

    def run(self) -> SearchRecord:
        contenders = self.contenders()
        self.best = {name: name for name in contenders}
        stopped = "every knob was tried" if contenders else "no candidate to search"
        for knob in KNOBS:
            plans, outcomes = self._plan(knob, contenders)
            if not plans:
                if outcomes:
                    self.steps.append(SearchStep(knob.name, [], outcomes))
                continue
            # The step, and measuring at the other batch sizes (_complete) every searched
            # row that can be a best after it: the budget holds both.
            kept = {self.origin[name] for name in self.extra_runners} | set(plans)
            cost = (self._step_cost(1 + len(plans) + sum(map(len, plans.values())))
                    + self._completion_cost(len(kept)))
            if self.elapsed() + cost > self.settings.search_budget_s:
                stopped = (f"the search budget of {self.settings.search_budget_s:g} s was "
                           f"reached before {knob.name} (about {cost:.0f} s more)")
                break
            self.session.say(f"configuration search: {knob.name} on "
                             f"{', '.join(plans)}")
            self._step(knob, plans, outcomes)
        self._complete()
        return SearchRecord(objective=self.objective, batch_size=self.batch,
                            budget_s=self.settings.search_budget_s,
                            elapsed_s=round(self.elapsed(), 1), contenders=contenders,
                            best=dict(self.best), steps=self.steps, stopped=stopped)

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

    def _step(self, knob: Knob, plans: dict[str, list[Row]], outcomes: dict[str, str]
              ) -> None:
        session, settings = self.session, self.settings
        new_rows = [row for rows in plans.values() for row in rows]
        for contender, rows in plans.items():
            self.origin |= {row.name: contender for row in rows}
        started = self._start(new_rows)
        runners = {session.baseline: session.runners[session.baseline],
                   **self._served_runner()}
        for contender in plans:
            runners[self.best[contender]] = self._runner(self.best[contender])
        runners |= started
        plan = dataclasses.replace(settings, max_windows=rounds_for(settings.confidence),
                                   decide_speedup_p50=None, decide_speedup_p99=None)
        if knob.concurrent:
            clients = search_clients(settings)
            runners = {name: ConcurrentClients(runner, clients)
                       for name, runner in runners.items()}
            outcome = interleaved_rounds(runners, self.batch, plan)
            self._record_concurrent(new_rows, outcome.series, clients, outcome.errors)
        else:
            outcome = interleaved_rounds(runners, self.batch, plan)
            self._record(new_rows, outcome.series, self.batch, outcome.errors)
        for contender, rows in plans.items():
            incumbent = self.best[contender]
            outcomes[contender] = self._choose(contender, incumbent, rows, outcome.series)
        for row in new_rows:  # keep only the new best rows running
            if row.name not in self.best.values() and row.name in started:
                self._close(row.name, started[row.name])
            elif row.name in started:
                self.extra_runners[row.name] = started[row.name]
        for name in list(self.extra_runners):  # a searched best that was beaten
            if name not in self.best.values():
                self._close(name, self.extra_runners.pop(name))
        self.steps.append(SearchStep(knob.name, [row.name for row in new_rows], outcomes))

    def _choose(self, contender: str, incumbent: str, rows: list[Row],
                series: dict[str, Series]) -> str:
        if incumbent not in series:
            return f"not compared: {incumbent} failed in this step"
        gains = []
        for row in rows:
            if row.name not in series:
                continue
            gain = _ratio_interval(series[incumbent], series[row.name], self.objective,
                                   self.settings.confidence)
            if gain is not None:
                gains.append((gain, row.name))
        better = [(gain, name) for gain, name in gains
                  if gain.low is not None and gain.low > 1.0]
        described = "; ".join(f"{name.split(':', 1)[1]} {gain.estimate:.2f}x "
                              f"[{_num(gain.low)}, {_num(gain.high)}]"
                              for gain, name in gains) or "nothing measured"
        what = "lower" if self.lower_is_better else "higher"
        if not better:
            return (f"kept {_label(incumbent)}: no setting gave a {what} {self.objective} "
                    f"at batch {self.batch} with {self.settings.confidence:.0%} confidence "
                    f"({described})")
        gain, winner = max(better, key=lambda pair: pair[0].estimate)
        self.best[contender] = winner
        return (f"chose {_label(winner)}: {self.objective} {gain.estimate:.2f}x better than "
                f"{_label(incumbent)} at batch {self.batch} ({described})")

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
                           errors: dict[str, str]) -> None:
        """What each new row did under `clients` concurrent clients, as its concurrency
        points; its one-client figures come from _complete if it wins."""
        for row in rows:
            if row.name in series:
                result = series[row.name].result()
                self.result.models[row.name].concurrency.append(ConcurrencyResult(
                    concurrency=clients, batch_size=self.batch,
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
