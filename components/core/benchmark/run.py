"""`run_benchmark`: measure a baseline and its candidates side by side, in one run.

Order of work: validate the settings (a bad setting fails here, before anything starts);
resolve every model path and scan each model's ops (a model that is missing, unreadable or
holds unsafe ops that are not allowed gets its error and is never run); plan the rows, each
model on the runtime(s) TF Serving would run it on (see runtimes: a TFLite variant gets two
rows); read each row's signature and build the input batches once, from the first row that
can be read (the baseline unless it is broken), so every row sees the same inputs; start
one worker per row (session backend) or one TF Serving per model (tfserving); load the rows
one at a time (load time and first request); measure each batch size in interleaved
rounds, then the concurrency sweep; read each worker's peak memory; count FLOPs; run the
accuracy pipeline when examples are given.

The total time budget (`total_budget_s`, see budget) bounds the measuring: when it runs
short, the least promising rows go unmeasured first, each recorded with the reason. The
result is handed to `checkpoint` (e.g. to write metrics.json) after every batch size and
every late step, so what was measured is never lost; a late step that fails (the sweep,
a worker's memory, the search, FLOPs, accuracy) is recorded in `step_errors` of its row
or of the run, and the run goes on.

A model that cannot be read, loaded or run gets its `error` and the others are still
measured. What the caller does about failures is its policy: the CLI fails when the
baseline failed and warns when a candidate did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from components.core.benchmark.accuracy import (
    AccuracyModel,
    check_label_key,
    compute_accuracy,
)
from components.core.benchmark.budget import (
    Budget,
    clock_text,
    rank_rows,
    round_cost_s,
    rows_that_fit,
)
from components.core.benchmark.config import BenchmarkConfig, ModelSpec
from components.core.benchmark.engines import ResolvedModel, resolve_model
from components.core.benchmark.feeds import ModelSignature, input_pools, read_signature
from components.core.benchmark.flops import flops_per_example
from components.core.benchmark.machine import machine_info
from components.core.benchmark.memory import (
    MemoryPlan,
    plan_group,
    prior_estimate,
    workers_budget_bytes,
)
from components.core.benchmark.results import copy_measurements, fill_batches
from components.core.benchmark.runtimes import (
    Row,
    engine_spec,
    plan_rows,
    row_runner,
    runtime_info,
    served_row_plan,
)
from components.core.benchmark.scheduler import (
    Series,
    concurrency_sweep,
    interleaved_rounds,
    warm_up,
)
from components.core.benchmark.schema import (
    BASELINE,
    CANDIDATE,
    SERVED,
    BenchmarkResult,
    BudgetRecord,
    ModelResult,
)
from components.core.benchmark.stats import rounds_for
from components.core.errors import ServoptError
from components.core.heap import release_freed_memory
from components.core.requirements import TFLITE_RUNTIME

Progress = Callable[[str], None]
Checkpoint = Callable[[BenchmarkResult], None]


# Rows every batch size measures whatever the budget: the baseline and the most promising
# candidate (see budget).
MIN_ROWS = 2


def failure_text(err: BaseException) -> str:
    """One line for a failed step: a ServoptError's message, else the type and message."""
    text = str(err) if isinstance(err, ServoptError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())[:500]


def size_on_disk(path: Path, skip_tflite: bool = False) -> int:
    """Bytes of what a runtime loads: the .tflite file, or the SavedModel directory (less
    the model.tflite beside it, which the Session never reads)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()
               and not (skip_tflite and p.parent == path and p.name == "model.tflite"))


def _start_runners(rows: dict[str, Row], signatures: dict[str, ModelSignature],
                   config: BenchmarkConfig, errors: dict[str, str],
                   cleanup: contextlib.ExitStack, pools: dict[int, list]) -> dict:
    """One runner per row, started together (workers import TensorFlow in parallel);
    each is closed by `cleanup`, whatever happens next."""
    runners = {}
    for name, row in rows.items():
        runner = row_runner(row, sorted(signatures[name].signature.outputs), config, pools)
        cleanup.callback(runner.close)
        runners[name] = runner
    for name, runner in list(runners.items()):
        try:
            if hasattr(runner, "wait_ready"):
                runner.wait_ready()
        except ServoptError as err:
            errors[name] = str(err)
            del runners[name]
    return runners


def _resolve_and_scan(models: Sequence[ModelSpec], config: BenchmarkConfig,
                      errors: dict[str, str], sizes: dict[str, int]
                      ) -> dict[str, ResolvedModel]:
    """The models that can be found, resolved. One that cannot, or that cannot be scanned
    or holds unsafe ops `config` does not allow (refused before anything runs it), gets its
    error (and its size in `sizes` if it was found); the others are still measured."""
    from components.core.safety import refuse_unsafe

    resolved = {}
    for model in models:
        found = None
        try:
            found = resolve_model(Path(model.path))
            if found.saved_model is not None:  # TFLite's builtin ops touch no files
                refuse_unsafe(found.saved_model, config.allowed_ops, "to benchmark it")
            if config.backend == "tfserving" and found.saved_model is None:
                raise ServoptError(f"{found.tflite}: TF Serving serves TFLite only as "
                                   "model.tflite in a SavedModel version directory; put it "
                                   "there or drop --backend tfserving")
            resolved[model.name] = found
        except ServoptError as err:
            errors[model.name] = str(err)
            if found is not None:
                sizes[model.name] = size_on_disk(found.saved_model or found.tflite)
    return resolved


class BenchmarkSession:
    """The models of one benchmark, planned, started and loaded once, then measured by
    `measure()` as often as asked: each call is a fresh run of interleaved rounds at every
    batch size (warm-up, windows, stability, speedups over the baseline), exactly as
    `run_benchmark` measures them, without starting the workers again. For repeated
    trials (pipelines/gate_quality.py: starting the TensorFlow workers costs minutes on a
    loaded 2-core machine); `run_benchmark` is one session measured once.

    The session plans everything `run_benchmark` describes (validation, the safety scan,
    rows, signatures, inputs) before it starts a worker; use it as a context manager, so
    the workers are closed whatever happens.
    """

    def __init__(self, models: Sequence[ModelSpec], config: BenchmarkConfig | None = None,
                 progress: Progress | None = None, served: Path | None = None,
                 checkpoint: Checkpoint | None = None):
        """served: the version served now at the push destination (its version
        directory), measured as one more row, `served`, in the same interleaved rounds, so
        each candidate's comparison with it is paired like its speedups over the baseline
        (BatchResult.served_speedup_*); run on the runtime and TF Serving configuration it
        was pushed with (runtimes.served_row_plan). Never a candidate. checkpoint: gets
        the result so far after every batch size and each late step."""
        config = (config or BenchmarkConfig()).resolved()
        self.config, self.say = config, progress or (lambda message: None)
        self.checkpoint = checkpoint
        config.validate()
        # Measured on a TF Serving someone else started (--tfserving-host): its flags are
        # not ours to set, so rows have no configuration and nothing is searched.
        self.remote = config.backend == "tfserving" and config.tfserving.host is not None
        self.budget = Budget(config.total_budget_s)
        self.order: list[str] = []  # the rows, most promising first (see budget)
        self.not_measured: dict[str, str] = {}
        self.stopped = ""
        self._measures = 0
        if not models:
            raise ServoptError("no models given; pass the baseline model first, then "
                               "candidates")
        if len({m.name for m in models}) != len(models):
            raise ServoptError(f"model names repeat: {[m.name for m in models]}; name each "
                               "model once")
        if served is not None and any(m.name == SERVED for m in models):
            raise ServoptError(f"a model is named '{SERVED}', the name of the served "
                               "version's row; rename it")
        self.models = list(models)
        self.served_spec = ModelSpec(SERVED, Path(served)) if served is not None else None
        everything = self.models + ([self.served_spec] if self.served_spec else [])
        self.errors: dict[str, str] = {}
        self._failed_sizes: dict[str, int] = {}
        resolved = _resolve_and_scan(everything, config, self.errors, self._failed_sizes)
        usable = [m for m in models if m.name in resolved]
        if self.remote:  # a server started by others: it picks the runtime and settings
            rows = [Row(m.name, m, "tensorflow", resolved[m.name].saved_model, True, False)
                    for m in usable]
        else:
            rows = plan_rows(usable, resolved)
        if self.served_spec is not None and SERVED in resolved and not self.remote:
            rows.append(served_row_plan(self.served_spec, resolved[SERVED]))
        self.served = SERVED if any(row.name == SERVED for row in rows) else None
        self.rows = {row.name: row for row in rows}
        if config.backend == "tfserving" and not config.tfserving.host:
            from components.core.benchmark.tfserving import find_server

            find_server(config.tfserving.binary)
        if config.label_key is not None:
            check_label_key(config.examples, config.label_key)
        self.baseline = next((r.name for r in rows if r.model is models[0]), models[0].name)
        self.signatures: dict[str, ModelSignature] = {}
        for name, row in self.rows.items():
            try:
                self.signatures[name] = read_signature(row.path, row.runtime, config.signature)
            except ServoptError as err:
                self.errors[name] = str(err)
        self.pools: dict[int, list] = {}
        if self.signatures:
            reference = next(iter(self.signatures.values()))
            self.pools = input_pools(reference, config.batch_sizes, config.input_pool,
                                     config.seed, config.examples)
        # The graphs read (signatures): not held while measuring.
        release_freed_memory(row.path for row in self.rows.values())
        self._cleanup = contextlib.ExitStack()
        self.runners: dict = {}
        self._loaded: dict[str, tuple[float, float]] = {}
        self._live: set = set()  # the runners loaded (a started one may wait unloaded)
        # The memory budget (memory): the anchors run throughout, candidates in groups.
        self.memory = MemoryPlan(math.inf if self.remote else
                                 workers_budget_bytes(config.memory_budget_mb),
                                 {name: row.runtime for name, row in self.rows.items()})
        self.anchors = [name for name in (self.baseline, self.served) if name]
        self.groups: list[list[str]] = []  # candidates measured together, in order
        self.pending: list[str] = []  # candidates of groups not formed yet
        self._per_request: dict[str, float] = {}  # the latest warm-up: what ranks rows

    def __enter__(self) -> BenchmarkSession:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._cleanup.close()

    def _start(self) -> None:
        """One worker per healthy row, each loaded alone (undisturbed load time): the
        baseline and the served version first. Without a memory budget every candidate
        starts and loads with them (the TensorFlow imports overlap); with one, the
        candidates that fit by a prior estimate (memory.prior_estimate) start with them,
        and all wait for their groups (`_groups`), planned from what the loaded rows were
        measured to hold: few workers start (a TensorFlow import each) only to be
        closed, and the first group needs no second wave of imports."""
        if not self.pools:
            return
        healthy = [name for name, row in self.rows.items()
                   if name in self.signatures and row.twin is None]
        # Candidates load smallest first: with a memory budget, more of them fit in the
        # first group, and the compressed variants (int8, float16) are among them.
        candidates = sorted((name for name in healthy if name not in self.anchors),
                            key=lambda name: size_on_disk(
                                self.rows[name].path, skip_tflite=self.rows[name].beside_tflite))
        anchors = [name for name in self.anchors if name in healthy]
        first_wave = candidates
        if self.memory.limited:
            prior = {name: prior_estimate(size_on_disk(self.rows[name].path))
                     for name in [*anchors, *candidates]}
            first_wave = plan_group(candidates, prior.get, self.memory.room
                                    - sum(prior[name] for name in anchors)
                                    - max(prior.values(), default=0))
        order = anchors + first_wave
        self.say(f"starting {len(order)} {self.config.backend} worker(s)")
        self.runners = _start_runners({name: self.rows[name] for name in order},
                                      self.signatures, self.config, self.errors,
                                      self._cleanup, self.pools)
        # The budget counts from here: starting workers (a TensorFlow import each) takes
        # what the machine's load makes it take, and dropping rows cannot shorten it.
        self.budget = Budget(self.config.total_budget_s)
        names = [name for name in order if name in self.runners
                 and (name in anchors or not self.memory.limited)]
        for index, name in enumerate(names):
            self.say(self.budget.line(f"loading {name} ({index + 1} of {len(names)})"))
            self._load(name)
        if self.memory.limited:
            self.pending = candidates
        else:
            self.groups = [[name for name in names if self.usable(name)
                            and name not in self.anchors]]

    def _fits(self, name: str) -> bool:
        """Whether `name` can load within the memory budget beside every running worker
        (a started one holds TensorFlow's runtime already), its load's transient
        included."""
        if not self.memory.limited:
            return True
        held = self.memory.held(runner for other, runner in self.runners.items()
                                if other != name)
        return (held + self.memory.estimate(name) + self.memory.load_headroom([name])
                <= self.memory.room)

    def _load(self, name: str) -> bool:
        """Loads the started worker of `name` (its load time and first request are kept
        from its first load); with a memory budget, also the most concurrent requests the
        sweep makes at the largest batch size (each in-flight request holds its own
        activations, each TFLite client its own interpreter), then what it holds. False,
        with its error, when it fails."""
        runner = self.runners[name]
        try:
            loaded = runner.load(self.pools[self.config.batch_sizes[0]][0])
            self._live.add(runner)
            for size, pool in self.pools.items():
                runner.set_inputs(size, pool)
            if self.memory.limited:
                runner.concurrent(max(self.config.batch_sizes),
                                  max(self.config.concurrency, default=1), 1)
                self.memory.record(name, runner)
        except ServoptError as err:
            self.errors[name] = str(err)
            self.runners.pop(name).close()  # free its memory now; closing twice is fine
            return False
        self._loaded.setdefault(name, (loaded.load_time_s, loaded.first_request_ms))
        return True

    def _groups(self):
        """Each group of candidates in turn, running with the anchors (the baseline and the
        served version) while it is measured. Under a memory budget each group is formed
        when its turn comes, from what is pending: as many as fit beside the anchors by
        what the rows measured so far hold (memory); one that turns out not to fit when
        it loads waits for the next group."""
        if not self.groups and not self.pending:  # runners given without _start: loaded
            self.groups = [[name for name in self.runners if name not in self.anchors]]
            self._live.update(self.runners.values())
        for number in itertools.count():
            if number > 0 and self.budget.remaining() <= 0 and (
                    number < len(self.groups) or self.pending):
                rest = [name for group in self.groups[number:] for name in group]
                self._not_measure(rest + self.pending, f"group {number + 1}",
                                  "nothing was left for the candidates that did not fit "
                                  "in the memory budget beside the first group")
                self.pending = []
                return
            if number >= len(self.groups):
                if not self.pending:
                    return
                for name in [name for name in self.runners if name not in self.anchors
                             and self.runners[name] in self._live]:
                    self.runners.pop(name).close()  # the previous group's memory is free
                anchors = [self.runners[name] for name in self.anchors if name in self.runners]
                room = (self.memory.room - self.memory.held(anchors)
                        - self.memory.load_headroom(self.pending))  # they load one by one
                group = plan_group(self.pending, self.memory.estimate, room)
                self.pending = self.pending[len(group):]
                self.groups.append(group)
            group = self.groups[number]
            if len(self.groups) > 1 or self.pending:
                self.say(self.budget.line(f"group {number + 1} of "
                                          f"{number + 1 + self._groups_after(number)}: "
                                          f"{', '.join(group) or 'no candidate'}"))
            deferred = self.run_only(group)
            if deferred:
                self.groups[number] = [name for name in group if name not in deferred]
                self.pending = deferred + self.pending
            yield number

    def _groups_after(self, number: int) -> int:
        """Groups after `number`, as far as can be told (the pending ones at its size)."""
        known = len(self.groups) - number - 1
        size = max(len(self.groups[number]), 1)
        return known + math.ceil(len(self.pending) / size)

    def run_only(self, candidates: Sequence[str]) -> list[str]:
        """Only `candidates` (and the anchors) running: the others' workers are closed,
        those of `candidates` started and loaded again where they are not running.
        Under a memory budget, a candidate after the first that does not fit beside
        what runs by then is closed unloaded: returns those, in order."""
        for name in [name for name in self.runners
                     if name not in self.anchors and name not in candidates]:
            self.runners.pop(name).close()
        missing = [name for name in candidates if name not in self.runners
                   and name in self.signatures and name not in self.errors]
        if missing:
            self.say(self.budget.line(f"starting {len(missing)} worker(s): "
                                      f"{', '.join(missing)}"))
            self.runners.update(_start_runners({name: self.rows[name] for name in missing},
                                               self.signatures, self.config, self.errors,
                                               self._cleanup, self.pools))
        unloaded = [name for name in candidates if name in self.runners
                    and self.runners[name] not in self._live]
        one_runs = len(unloaded) < len([name for name in candidates if name in self.runners])
        deferred: list[str] = []
        for index, name in enumerate(unloaded):
            if deferred or (one_runs and not self._fits(name)):
                deferred.append(name)  # this one and those after it: the next group
                self.runners.pop(name).close()
                continue
            self.say(self.budget.line(f"loading {name} ({index + 1} of {len(unloaded)})"))
            one_runs = self._load(name) or one_runs
        return deferred

    def usable(self, name: str) -> bool:
        """Whether `name` loaded and has not failed since (it can be run again)."""
        return name in self._loaded and name not in self.errors

    def _results(self) -> dict[str, ModelResult]:
        """A fresh result per row (and per model that could not be used), in the models'
        order, failed ones included."""
        config, results = self.config, {}
        served = [self.served_spec] if self.served_spec else []
        for index, model in enumerate(self.models + served):
            role = (SERVED if model is self.served_spec
                    else BASELINE if index == 0 else CANDIDATE)
            model_rows = [row for row in self.rows.values() if row.model is model]
            if not model_rows:  # unusable: reported with its error, never run
                results[model.name] = ModelResult(
                    path=str(model.path), role=role,
                    size_bytes=self._failed_sizes.get(model.name))
            for row in model_rows:
                results[row.name] = ModelResult(
                    path=str(model.path), role=role,
                    runtime=None if self.remote else runtime_info(row, config),
                    size_bytes=size_on_disk(row.path, skip_tflite=row.beside_tflite))
        self._fill_loaded(results)
        return results

    def _fill_loaded(self, results: dict[str, ModelResult]) -> None:
        """Each loaded row's load time, first request and server command."""
        for name, (load_time_s, first_request_ms) in self._loaded.items():
            results[name].load_time_s = load_time_s
            results[name].first_request_ms = first_request_ms
            command = getattr(self.runners.get(name), "command", None)
            if command and results[name].runtime is not None:
                results[name].runtime.command = command  # the tfserving backend's

    def measure(self, sweep: bool = False) -> BenchmarkResult:
        """One run of interleaved rounds at every batch size: latency, throughput,
        stability and each candidate's speedups, with the models' sizes and load times;
        group by group where the memory budget splits the candidates (each group's rounds
        hold the baseline and the served version: their own figures are the first
        group's). With `sweep`, each group's concurrency sweep too, and every row's peak
        memory. Within the total time budget (see budget); the result goes to
        `checkpoint` after every batch size."""
        if self._measures:  # a repeated trial (pipelines/gate_quality) gets its own budget
            self.budget = Budget(self.config.total_budget_s)
            self.not_measured, self.stopped = {}, ""
        self._measures += 1
        results = self._results()
        result = BenchmarkResult(machine=machine_info(), settings=self.config,
                                 baseline=self.baseline, models=results)
        sizes = list(self.config.batch_sizes) if self.runners else []
        for number in (self._groups() if sizes else ()):
            self._fill_loaded(results)
            view = results if number == 0 else {
                **results, **{name: ModelResult(path=results[name].path,
                                                role=results[name].role)
                              for name in self.anchors}}  # the first group's stand
            series: dict[str, dict[int, Series]] = {name: {} for name in self.rows}
            later = len(sizes) * self._groups_after(number)
            for index, size in enumerate(sizes):
                self._measure_size(size, index, len(sizes), series, later)
                fill_batches(view, series, self.baseline, self.config.confidence,
                             self.served)
                self.settle(result)
                self.save(result)
            if sweep:
                swept = [name for name in self.runners
                         if number == 0 or name not in self.anchors]
                self._sweep(result, swept)
            self._read_memory(result)
        self.settle(result)  # what a group left unmeasured after the last checkpoint
        return result

    def _measure_size(self, size: int, index: int, count: int,
                      series: dict[str, dict[int, Series]], later: int = 0) -> None:
        """One batch size's share of the budget (an equal part of what is left for it and
        the `later` steps of groups after this one): warm-up, rank, keep what fits,
        rounds."""
        config, budget = self.config, self.budget
        share = 1.0 / (count - index + later)
        per_request, failed = warm_up(self.runners, size, config.warmup_requests)
        _drop_failed(self.runners, failed, self.errors, f"warming up at batch size {size}")
        references = [self.served] if self.served else []
        ranked = rank_rows(self.baseline, per_request, references)
        self._per_request.update(per_request)
        self.order = rank_rows(self.baseline, self._per_request, references)
        costs = {name: round_cost_s(per_request[name], config.window_seconds,
                                    config.window_requests, config.rewarm_requests)
                 for name in ranked}
        minimum = rounds_for(config.confidence)
        seconds = budget.remaining() * share
        kept = ranked if math.isinf(seconds) else rows_that_fit(
            ranked, costs, minimum, seconds,
            keep=MIN_ROWS + sum(name in ranked for name in references))
        round_s = sum(costs[name] for name in kept)
        # The floor (the baseline, the served version and the most promising candidate)
        # gets its minimum rounds even past the budget: a run always compares something.
        deadline = (None if math.isinf(seconds)
                    else time.monotonic() + max(seconds, minimum * round_s))
        if len(kept) < len(ranked):
            self._not_measure(ranked[len(kept):], f"batch size {size}",
                              f"{seconds:.0f} s of the budget were left for it, too little "
                              f"for {minimum} rounds of this row after the {len(kept)} more "
                              "promising")
        self.say(budget.line(f"batch size {size} ({index + 1} of {count}): {len(kept)} "
                             "rows in interleaved rounds, the most promising first: "
                             f"{', '.join(kept)}", min(minimum * round_s, seconds)))

        def heard(done: int) -> None:
            left = max(minimum - done, 0) * round_s
            self.say(budget.line(f"batch size {size}: round {done} of at least {minimum} "
                                 f"(at most {config.max_windows})", left))

        outcome = interleaved_rounds({name: self.runners[name] for name in kept}, size,
                                     config, deadline=deadline, warmed=True, progress=heard)
        for name, measured in outcome.series.items():
            series[name][size] = measured
        _drop_failed(self.runners, outcome.errors, self.errors, f"at batch size {size}")
        if deadline is not None and time.monotonic() >= deadline and not self.stopped:
            self.stopped = (f"batch size {size}'s share of the budget "
                            f"({config.total_budget_s:g} s in all) ran out during its rounds")

    def _not_measure(self, names: Sequence[str], what: str, why: str) -> None:
        """Rows the budget leaves out: recorded (their `error`, so a gate rejects them)
        and their workers closed (their memory freed)."""
        for name in names:
            message = (f"not measured at {what}: the total time budget "
                       f"({self.config.total_budget_s:g} s) ran short ({why}); raise "
                       "total_budget_s to measure it")
            self.not_measured[name] = message
            self.errors.setdefault(name, message)
            runner = self.runners.pop(name, None)
            if runner is not None:
                runner.close()
        if names and not self.stopped:
            self.stopped = f"the budget ran short at {what}"

    def settle(self, result: BenchmarkResult) -> None:
        """The errors, twins and budget record, as of now, into `result`."""
        for name, model in result.models.items():
            model.error = self.errors.get(name)
        self.share_twins(result)
        result.budget = BudgetRecord(
            budget_s=self.config.total_budget_s, elapsed_s=round(self.budget.elapsed(), 1),
            order=list(self.order), not_measured=dict(self.not_measured),
            stopped=self.stopped,
            memory_groups=([list(group) for group in self.groups if group]
                           if len(self.groups) > 1 else []),
            memory_budget_bytes=None if not self.memory.limited else self.memory.room)

    def save(self, result: BenchmarkResult) -> None:
        """Hands the result so far to `checkpoint`; a failing checkpoint is only said."""
        if self.checkpoint is None:
            return
        try:
            self.checkpoint(result)
        except Exception as err:  # noqa: BLE001 - the measuring goes on; the end writes again
            self.say(f"could not save the partial result: {failure_text(err)}")

    def share_twins(self, result: BenchmarkResult) -> None:
        """A twin row (runtimes.plan_rows) gets what its twin measured."""
        for name, row in self.rows.items():
            if row.twin and row.twin in result.models and name in result.models:
                copy_measurements(result.models[row.twin], result.models[name])

    def _sweep(self, result: BenchmarkResult, names: Sequence[str]) -> None:
        """The concurrency sweep of the running rows `names`, into `result`, if its
        estimate fits what is left of the total budget."""
        config = self.config
        runners = {name: self.runners[name] for name in names if name in self.runners}
        if not config.concurrency or not runners:
            return
        estimate = self._sweep_estimate(result, runners)
        if estimate > self.budget.remaining():
            for name in runners:
                self.not_measured[name] = (
                    f"the concurrency sweep: about {estimate:.0f} s, more than the "
                    f"{self.budget.remaining():.0f} s left of the total time budget")
            self.stopped = self.stopped or "the concurrency sweep did not fit the budget"
            return
        self.say(self.budget.line(f"concurrency sweep {list(config.concurrency)}", estimate))
        try:
            sweep, failed = concurrency_sweep(runners, config.batch_sizes,
                                              config.concurrency, config)
        except Exception as err:  # noqa: BLE001 - recorded; the rest stands
            sweep, failed = {}, {}
            result.step_errors["concurrency"] = failure_text(err)
        for name, points in sweep.items():
            result.models[name].concurrency = points
        # A model that fails under concurrent clients fails as TF Serving would serve
        # it: its error, as before (a gate rejects it).
        _drop_failed(self.runners, failed, self.errors, "in the concurrency sweep")
        self.settle(result)
        self.save(result)

    def _read_memory(self, result: BenchmarkResult) -> None:
        """Each running row's peak memory, into `result` (the largest read so far)."""
        for name, runner in self.runners.items():
            try:
                peak = runner.peak_memory_bytes()
            except Exception as err:  # noqa: BLE001 - recorded for the row
                result.models[name].step_errors["memory"] = failure_text(err)
                continue
            before = result.models[name].peak_memory_bytes
            result.models[name].peak_memory_bytes = (
                peak if before is None or peak is None else max(before, peak))
        self.settle(result)
        self.save(result)

    def _sweep_estimate(self, result: BenchmarkResult, runners: dict) -> float:
        """Seconds the sweep will take: per row, batch size and level one window (at
        least one request per client) and one warm-up request per client."""
        config, total = self.config, 0.0
        for name in runners:
            for size in config.batch_sizes:
                batch = result.models[name].at(size)
                request_s = (batch.p50_ms / 1e3) if batch and batch.p50_ms else 0.0
                for level in config.concurrency:
                    total += round_cost_s(request_s * level, config.window_seconds,
                                          config.window_requests, 1)
        return total


def run_benchmark(models: Sequence[ModelSpec], config: BenchmarkConfig | None = None,
                  progress: Progress | None = None, served: Path | None = None,
                  checkpoint: Checkpoint | None = None) -> BenchmarkResult:
    """Benchmarks `models` (the first is the baseline) and returns every measurement;
    with `served` (the version served now), that version too, in the same rounds, as the
    row `served` (see BenchmarkSession); `checkpoint` gets the result so far after each
    batch size and each late step."""
    search = None
    with BenchmarkSession(models, config, progress, served, checkpoint) as session:
        result = session.measure(sweep=True)
        if session.config.search_budget_s > 0 and not session.remote:
            search = _search(session, result)
        session.settle(result)
        session.save(result)
    inherited = set(search.origin) - search.numeric_rows() if search else set()
    inherited |= {name for name, row in session.rows.items() if row.twin}
    order = [*session.order, *(name for name in result.models if name not in session.order)]
    _count_flops(session.rows, result.models, session.config, session.say, skip=inherited,
                 order=order)
    session.save(result)
    if session.config.examples is not None:
        _accuracy(session.rows, result.models, session.baseline, session.config, session.say,
                  skip=inherited, memory=session.memory)
    session.share_twins(result)
    if search:
        try:
            search.inherit()
        except Exception as err:  # noqa: BLE001 - recorded; the measured rows stand
            result.step_errors["search"] = failure_text(err)
    session.save(result)
    return result


def _search(session: BenchmarkSession, result: BenchmarkResult):
    """The configuration search within what is left of the total budget (and its own);
    a search that fails is recorded in `step_errors` and the default rows stand."""
    from components.core.benchmark.search import ConfigurationSearch

    left = session.budget.remaining()
    if left < 1:
        session.stopped = session.stopped or "no time was left for the configuration search"
        return None
    full = session.config
    session.config = dataclasses.replace(full, search_budget_s=min(full.search_budget_s,
                                                                   left))
    session.say(session.budget.line(f"configuration search (at most "
                                    f"{clock_text(session.config.search_budget_s)})",
                                    session.config.search_budget_s))
    try:
        search = ConfigurationSearch(session, result)
        result.search = search.run()
        return search
    except Exception as err:  # noqa: BLE001 - recorded; the default rows stand
        result.step_errors["search"] = failure_text(err)
        session.say(f"the configuration search failed: {failure_text(err)}")
        return None
    finally:
        session.config = full


def _drop_failed(runners: dict, failed: dict[str, str], errors: dict[str, str],
                 where: str) -> None:
    for name, message in failed.items():
        errors[name] = f"{message} ({where})"
        runner = runners.pop(name, None)
        if runner is not None:
            runner.close()


def _count_flops(rows: dict[str, Row], results: dict[str, ModelResult],
                 config: BenchmarkConfig, say: Progress, skip: set[str] = frozenset(),
                 order: Sequence[str] = ()) -> None:
    """FLOPs per example of every TensorFlow row, `order` first (the most promising); a
    row whose count fails gets `step_errors['flops']`."""
    names = [name for name in (*order, *results) if name in results]
    todo = [name for name in dict.fromkeys(names)
            if not (name in skip or (results[name].error and not results[name].batches)
                    or name not in rows or rows[name].runtime == TFLITE_RUNTIME)]
    started = time.monotonic()  # TF's profiler counts TensorFlow graphs only
    for index, name in enumerate(todo):
        result = results[name]
        left = ((time.monotonic() - started) / index * (len(todo) - index)) if index else None
        say(f"counting FLOPs of {name} ({index + 1} of {len(todo)})"
            + (f", about {clock_text(left)} left" if left is not None else ""))
        try:
            result.flops_per_example = flops_per_example(rows[name].path, config.signature)
        except Exception as err:  # noqa: BLE001 - recorded for the row
            result.flops_per_example = None
            result.step_errors["flops"] = failure_text(err)
        for batch in result.batches.values():
            if result.flops_per_example is not None:
                batch.achieved_flops_per_s = result.flops_per_example * batch.throughput
        release_freed_memory([rows[name].path])  # the graph imported to count it


def _accuracy(rows: dict[str, Row], results: dict[str, ModelResult], baseline: str,
              config: BenchmarkConfig, say: Progress, skip: set[str] = frozenset(),
              memory: MemoryPlan | None = None) -> None:
    """Accuracy of every model measured without error. Candidates are compared with the
    baseline in one pipeline, which holds every model at once in this process: under a
    memory budget, as many candidates as fit beside the baseline (each estimated at what
    its worker held, see memory), group by group; without a working baseline each model
    runs alone, and agreement and output difference stay None."""
    healthy = [name for name, r in results.items() if not r.error and name not in skip]
    if not healthy:
        return
    groups = (accuracy_groups(healthy, memory) if healthy[0] == baseline
              else [[name] for name in healthy])
    say(f"accuracy on {config.examples} (Apache Beam), {len(healthy)} models"
        + (f" in {len(groups)} groups that fit the memory budget, each with the baseline"
           if healthy[0] == baseline and len(groups) > 1 else ""))
    for group in groups:
        try:
            measured = _accuracy_of(group, rows, config)
        except Exception as err:  # noqa: BLE001 - retried pair by pair below
            if len(group) == 1:
                results[group[0]].step_errors["accuracy"] = failure_text(err)
                continue
            say(f"accuracy of {len(group)} models together failed ({failure_text(err)}); "
                "again with the baseline and one candidate at a time")
            measured = _accuracy_pairwise(group, rows, config, results, say)
        for name, accuracy in measured.items():
            if name != group[0] or results[name].accuracy is None:  # the first group's
                results[name].accuracy = accuracy
        release_freed_memory(rows[name].path for name in group if name in rows)  # next group


def accuracy_groups(names: list[str], memory: MemoryPlan | None) -> list[list[str]]:
    """`names` (the baseline first) in groups that each hold the baseline and as many
    candidates as fit the memory budget beside it (at least one); one group without a
    budget or before anything was measured."""
    baseline, candidates = names[0], names[1:]
    if memory is None or not memory.limited or not candidates:
        return [names]
    room = memory.room - memory.estimate(baseline)
    groups = []
    while candidates:
        group = plan_group(candidates, memory.estimate, room)
        groups.append([baseline, *group])
        candidates = candidates[len(group):]
    return groups


def _accuracy_of(group: list[str], rows: dict[str, Row], config: BenchmarkConfig) -> dict:
    return compute_accuracy(
        [AccuracyModel(name, engine_spec(rows[name], config)) for name in group],
        config.examples, config.label_key, config.output_key, config.beam_pipeline_args)


def _accuracy_pairwise(group: list[str], rows: dict[str, Row], config: BenchmarkConfig,
                       results: dict[str, ModelResult], say: Progress) -> dict:
    """The baseline `group[0]` with each candidate alone, so one model that breaks the
    pipeline loses only its own accuracy (recorded in its `step_errors`)."""
    baseline, measured = group[0], {}
    for index, name in enumerate(group[1:]):
        say(f"accuracy of {name} ({index + 1} of {len(group) - 1})")
        try:
            pair = _accuracy_of([baseline, name], rows, config)
        except Exception as err:  # noqa: BLE001 - recorded for the row
            results[name].step_errors["accuracy"] = failure_text(err)
            continue
        measured.setdefault(baseline, pair[baseline])
        measured[name] = pair[name]
    if baseline not in measured:
        try:
            measured.update(_accuracy_of([baseline], rows, config))
        except Exception as err:  # noqa: BLE001 - recorded for the row
            results[baseline].step_errors["accuracy"] = failure_text(err)
    return measured
