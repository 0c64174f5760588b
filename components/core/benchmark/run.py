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

A model that cannot be read, loaded or run gets its `error` and the others are still
measured. What the caller does about failures is its policy: the CLI fails when the
baseline failed and warns when a candidate did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from components.core.benchmark.accuracy import (
    AccuracyModel,
    check_label_key,
    compute_accuracy,
)
from components.core.benchmark.config import BenchmarkConfig, ModelSpec
from components.core.benchmark.engines import ResolvedModel, resolve_model
from components.core.benchmark.feeds import ModelSignature, input_pools, read_signature
from components.core.benchmark.flops import flops_per_example
from components.core.benchmark.machine import machine_info
from components.core.benchmark.results import copy_measurements, fill_batches
from components.core.benchmark.runtimes import Row, engine_spec, plan_rows, runtime_info
from components.core.benchmark.scheduler import Series, concurrency_sweep, interleaved_rounds
from components.core.benchmark.schema import (
    BASELINE,
    CANDIDATE,
    BenchmarkResult,
    ModelResult,
)
from components.core.errors import ServoptError
from components.core.requirements import TFLITE_RUNTIME

Progress = Callable[[str], None]


def size_on_disk(path: Path, skip_tflite: bool = False) -> int:
    """Bytes of what a runtime loads: the .tflite file, or the SavedModel directory (less
    the model.tflite beside it, which the Session never reads)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()
               and not (skip_tflite and p.parent == path and p.name == "model.tflite"))


def _start_runners(rows: dict[str, Row], signatures: dict[str, ModelSignature],
                   config: BenchmarkConfig, errors: dict[str, str],
                   cleanup: contextlib.ExitStack) -> dict:
    """One runner per row, started together (workers import TensorFlow in parallel);
    each is closed by `cleanup`, whatever happens next."""
    runners = {}
    for name, row in rows.items():
        if config.backend == "tfserving":
            from components.core.benchmark.tfserving import tfserving_runner

            runner = tfserving_runner(name, row.path, config.signature,
                                      sorted(signatures[name].signature.outputs),
                                      config.tfserving, config.intra_op_threads,
                                      config.inter_op_threads)
        else:
            from components.core.benchmark.worker import ProcessRunner

            runner = ProcessRunner(engine_spec(row, config))
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
                 progress: Progress | None = None):
        config = (config or BenchmarkConfig()).resolved()
        self.config, self.say = config, progress or (lambda message: None)
        config.validate()
        if not models:
            raise ServoptError("no models given; pass the baseline model first, then "
                               "candidates")
        if len({m.name for m in models}) != len(models):
            raise ServoptError(f"model names repeat: {[m.name for m in models]}; name each "
                               "model once")
        self.models = list(models)
        self.errors: dict[str, str] = {}
        self._failed_sizes: dict[str, int] = {}
        resolved = _resolve_and_scan(models, config, self.errors, self._failed_sizes)
        usable = [m for m in models if m.name in resolved]
        if config.backend == "tfserving":  # the live server picks the runtime
            rows = [Row(m.name, m, "tensorflow", resolved[m.name].saved_model, True, False)
                    for m in usable]
        else:
            rows = plan_rows(usable, resolved)
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
        self._cleanup = contextlib.ExitStack()
        self.runners: dict = {}
        self._loaded: dict[str, tuple[float, float]] = {}

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
        """One worker per healthy row, then each loaded alone (undisturbed load time)."""
        if not self.pools:
            return
        first_batch = self.pools[self.config.batch_sizes[0]][0]
        healthy = {name: row for name, row in self.rows.items()
                   if name in self.signatures and row.twin is None}
        self.say(f"starting {len(healthy)} {self.config.backend} worker(s)")
        self.runners = _start_runners(healthy, self.signatures, self.config, self.errors,
                                      self._cleanup)
        for name, runner in list(self.runners.items()):
            self.say(f"loading {name}")
            try:
                loaded = runner.load(first_batch)
                for size, pool in self.pools.items():
                    runner.set_inputs(size, pool)
            except ServoptError as err:
                self.errors[name] = str(err)
                self.runners.pop(name).close()  # free its memory now; closing twice is fine
                continue
            self._loaded[name] = (loaded.load_time_s, loaded.first_request_ms)

    def _results(self) -> dict[str, ModelResult]:
        """A fresh result per row (and per model that could not be used), in the models'
        order, failed ones included."""
        config, results = self.config, {}
        for index, model in enumerate(self.models):
            role = BASELINE if index == 0 else CANDIDATE
            model_rows = [row for row in self.rows.values() if row.model is model]
            if not model_rows:  # unusable: reported with its error, never run
                results[model.name] = ModelResult(
                    path=str(model.path), role=role,
                    size_bytes=self._failed_sizes.get(model.name))
            for row in model_rows:
                results[row.name] = ModelResult(
                    path=str(model.path), role=role,
                    runtime=(None if config.backend == "tfserving"
                             else runtime_info(row, config)),
                    size_bytes=size_on_disk(row.path, skip_tflite=row.beside_tflite))
        for name, (load_time_s, first_request_ms) in self._loaded.items():
            results[name].load_time_s = load_time_s
            results[name].first_request_ms = first_request_ms
        return results

    def measure(self) -> BenchmarkResult:
        """One run of interleaved rounds at every batch size: latency, throughput,
        stability and each candidate's speedups, with the models' sizes and load times."""
        results = self._results()
        series: dict[str, dict[int, Series]] = {name: {} for name in self.rows}
        for size in self.config.batch_sizes if self.runners else ():
            self.say(f"measuring batch size {size}: {', '.join(self.runners)} in "
                     "interleaved rounds")
            outcome = interleaved_rounds(self.runners, size, self.config)
            for name, measured in outcome.series.items():
                series[name][size] = measured
            _drop_failed(self.runners, outcome.errors, self.errors, f"at batch size {size}")
        fill_batches(results, series, self.baseline, self.config.confidence)
        for name, result in results.items():
            result.error = self.errors.get(name)
        result = BenchmarkResult(machine=machine_info(), settings=self.config,
                                 baseline=self.baseline, models=results)
        self.share_twins(result)
        return result

    def share_twins(self, result: BenchmarkResult) -> None:
        """A twin row (runtimes.plan_rows) gets what its twin measured."""
        for name, row in self.rows.items():
            if row.twin and row.twin in result.models and name in result.models:
                copy_measurements(result.models[row.twin], result.models[name])

    def sweep_and_memory(self, result: BenchmarkResult) -> None:
        """The concurrency sweep and each worker's peak memory, into `result`."""
        config = self.config
        if config.concurrency and self.runners:
            self.say(f"concurrency sweep {list(config.concurrency)}")
            sweep, failed = concurrency_sweep(self.runners, config.batch_sizes,
                                              config.concurrency, config)
            for name, points in sweep.items():
                result.models[name].concurrency = points
            _drop_failed(self.runners, failed, self.errors, "in the concurrency sweep")
        for name, runner in self.runners.items():
            with contextlib.suppress(ServoptError):
                result.models[name].peak_memory_bytes = runner.peak_memory_bytes()
        for name, model in result.models.items():
            model.error = self.errors.get(name)
        self.share_twins(result)


def run_benchmark(models: Sequence[ModelSpec], config: BenchmarkConfig | None = None,
                  progress: Progress | None = None) -> BenchmarkResult:
    """Benchmarks `models` (the first is the baseline) and returns every measurement."""
    from components.core.benchmark.search import ConfigurationSearch

    search = None
    with BenchmarkSession(models, config, progress) as session:
        result = session.measure()
        session.sweep_and_memory(result)
        if session.config.search_budget_s > 0 and session.config.backend == "session":
            search = ConfigurationSearch(session, result)
            result.search = search.run()
    inherited = set(search.origin) - search.numeric_rows() if search else set()
    inherited |= {name for name, row in session.rows.items() if row.twin}
    _count_flops(session.rows, result.models, session.config, session.say, skip=inherited)
    if session.config.examples is not None:
        _accuracy(session.rows, result.models, session.baseline, session.config, session.say,
                  skip=inherited)
    session.share_twins(result)
    if search:
        search.inherit()
    return result


def _drop_failed(runners: dict, failed: dict[str, str], errors: dict[str, str],
                 where: str) -> None:
    for name, message in failed.items():
        errors[name] = f"{message} ({where})"
        runner = runners.pop(name, None)
        if runner is not None:
            runner.close()


def _count_flops(rows: dict[str, Row], results: dict[str, ModelResult],
                 config: BenchmarkConfig, say: Progress, skip: set[str] = frozenset()) -> None:
    for name, result in results.items():
        if (name in skip or (result.error and not result.batches)
                or rows[name].runtime == TFLITE_RUNTIME):
            continue  # TF's profiler counts TensorFlow graphs only
        say(f"counting FLOPs of {name}")
        try:
            result.flops_per_example = flops_per_example(rows[name].path, config.signature)
        except ServoptError:
            result.flops_per_example = None
        for batch in result.batches.values():
            if result.flops_per_example is not None:
                batch.achieved_flops_per_s = result.flops_per_example * batch.throughput


def _accuracy(rows: dict[str, Row], results: dict[str, ModelResult], baseline: str,
              config: BenchmarkConfig, say: Progress, skip: set[str] = frozenset()) -> None:
    """Accuracy of every model measured without error. Candidates are compared with the
    baseline in one pipeline; without a working baseline each model runs alone, and
    agreement and output difference stay None."""
    healthy = [name for name, r in results.items() if not r.error and name not in skip]
    if not healthy:
        return
    groups = [healthy] if healthy[0] == baseline else [[name] for name in healthy]
    say(f"accuracy on {config.examples} (Apache Beam)")
    for group in groups:
        measured = compute_accuracy(
            [AccuracyModel(name, engine_spec(rows[name], config)) for name in group],
            config.examples, config.label_key, config.output_key, config.beam_pipeline_args)
        for name, accuracy in measured.items():
            results[name].accuracy = accuracy
