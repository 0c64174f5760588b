"""The checks on one candidate: each returns `Check`s with the measured value, the limit
and a reason that states both. They read the typed benchmark result (ModelResult,
BatchResult) and compute no figure the benchmark recorded: a figure it did not record is
"not measured", and a threshold set on it blocks (fail closed).

To add a check: a function (name, model, context) -> Check | list[Check] here, listed in
gate._candidate_checks."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from components.core.benchmark.load import BUSY_SHARE
from components.core.benchmark.schema import BASELINE, BatchResult, BenchmarkResult, ModelResult
from components.core.benchmark.stats import (
    MIN_REQUESTS_P99,
    NOT_REGRESSED,
    REGRESSED,
    judge_at_least,
)
from components.core.errors import ServoptError
from components.core.gate.decision import CHANGE, REQUIREMENT, VALUE, Check, fmt
from components.core.gate.metrics import measured_batch_sizes
from components.core.gate.thresholds import ServerProfile, Thresholds
from components.core.gate.vs_served import paired_p99_regression_check
from components.core.model_paths import resolve_saved_model_dir
from components.core.requirements import (
    DEFAULT_REQUIREMENTS,
    TENSORFLOW_RUNTIME,
    TFLITE_RUNTIME,
    ServingRequirements,
    read_requirements,
)
from components.core.safety import scan_ops
from components.core.serving_config import DEFAULT_LABEL, with_requirements

NOT_SERVED = "not applicable: no model served yet"
MB = 1e6


@dataclass
class Context:
    """What every candidate is compared with."""

    thresholds: Thresholds
    baseline_name: str | None
    baseline: ModelResult | None  # None when it has no usable result
    baseline_problem: str | None  # why `baseline` is None
    served: ModelResult | None  # the model served now, as measured; None on a first push
    # True: `served` was measured in the same rounds as the candidates (gate.vs_served)
    served_paired: bool = False

    @property
    def batch(self) -> int:
        """The profile's primary batch size (the one most requests carry)."""
        return self.thresholds.traffic.primary_batch_size

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Every batch size of the traffic profile: per-batch checks run at each."""
        return self.thresholds.traffic.batch_sizes


@dataclass
class JudgedRow:
    """A benchmark row a candidate is judged by: the runtime the server will use, under one
    TF Serving configuration (the default one, or one the benchmark's search measured)."""

    name: str  # the row's name in the metrics
    model: ModelResult | None  # None when the benchmark has no row for the version
    problem: str | None = None  # why the server cannot run the version as measured

    @property
    def runtime(self) -> str | None:
        return self.model.runtime_name() if self.model else None

    @property
    def server_flags(self) -> list[str]:
        runtime = self.model.runtime if self.model else None
        return list(runtime.server_flags) if runtime else []

    @property
    def label(self) -> str:
        """The configuration's label: "default", or what the search changed."""
        runtime = self.model.runtime if self.model else None
        return runtime.label if runtime else DEFAULT_LABEL

    @property
    def configuration(self) -> dict | None:
        runtime = self.model.runtime if self.model else None
        return runtime.configuration if runtime else None

    @property
    def is_default(self) -> bool:
        return self.label == DEFAULT_LABEL


def pair_name(version: str, row: JudgedRow) -> str:
    """The name of a (version, configuration) pair in the decision: the version for its
    default configuration (as before the search), `version:label` for a searched one."""
    return version if row.is_default else f"{version}:{row.label}"


def judged_rows(version: str, metrics: BenchmarkResult, server: ServerProfile
                ) -> list[JudgedRow]:
    """Every row the server's runtime has for `version`, one per TF Serving configuration
    measured (each a candidate pair), the default configuration first, then in benchmark
    order. One row with its problem when the server cannot run the version as measured.

    Of the settings the configuration search tried, only those it kept count: the others
    did not beat the settings before them with the benchmark's confidence, and their
    figures come from other rounds than the default row's, so ranking them by their
    absolute latency would rank noise (benchmark.search)."""
    chosen = judged_row(version, metrics, server)
    if chosen.model is None or chosen.problem:
        return [chosen]
    kept = set(metrics.search.best.values()) if metrics.search else None
    rows = [JudgedRow(name, model) for name, model in metrics.rows_of(version).items()
            if model.runtime_name() == chosen.runtime
            and (kept is None or model.runtime is None
                 or model.runtime.label == DEFAULT_LABEL or name in kept)]
    return sorted(rows, key=lambda row: row.name != chosen.name)


def judged_row(version: str, metrics: BenchmarkResult, server: ServerProfile) -> JudgedRow:
    """TF Serving serves `model.tflite` only with --prefer_tflite_model=true, and falls
    back to `saved_model.pb` otherwise (saved_model_bundle_factory.cc): the row of that
    runtime decides (its default configuration's, where the benchmark searched several)."""
    rows = metrics.rows_of(version)
    if not rows:
        return JudgedRow(version, None)
    first: dict[str | None, tuple[str, ModelResult, bool]] = {}
    for row, result in rows.items():  # per runtime: its default row, else its first
        default = result.runtime is None or result.runtime.label == DEFAULT_LABEL
        runtime = result.runtime_name()
        if runtime not in first or (default and not first[runtime][2]):
            first[runtime] = (row, result, default)
    by_runtime = {runtime: (row, result) for runtime, (row, result, _) in first.items()}
    if server.prefer_tflite_model and TFLITE_RUNTIME in by_runtime:
        name, model = by_runtime[TFLITE_RUNTIME]
    elif TENSORFLOW_RUNTIME in by_runtime or None in by_runtime:
        return JudgedRow(*by_runtime.get(TENSORFLOW_RUNTIME) or by_runtime[None])
    else:
        name, model = by_runtime[TFLITE_RUNTIME]
        if model.runtime.servable:
            return JudgedRow(name, model, "the server runs its saved_model.pb "
                             "(server.prefer_tflite_model: false), which the benchmark did "
                             f"not measure (only '{name}'); benchmark it again or set "
                             "server.prefer_tflite_model: true")
    if not model.runtime.servable:
        return JudgedRow(name, model, "a bare .tflite file: TF Serving serves TFLite only "
                         "as model.tflite in a SavedModel version directory; put it beside "
                         "the saved_model.pb it was converted from")
    return JudgedRow(name, model)


def model_requirements(model_dir: str) -> ServingRequirements:
    try:
        return read_requirements(resolve_saved_model_dir(model_dir))
    except ServoptError:  # not a SavedModel: the safety check reports it
        return DEFAULT_REQUIREMENTS


def server_check(version: str, row: JudgedRow, requirements: ServingRequirements,
                 server: ServerProfile) -> Check:
    """Whether the destination's server runs the candidate the way it was measured."""
    prefer = f"prefer_tflite_model: {str(server.prefer_tflite_model).lower()}"
    if row.problem:
        return Check("server", version, row.name, prefer, False, row.problem,
                     kind=REQUIREMENT)
    runtime = row.runtime or TENSORFLOW_RUNTIME
    # A TFLite variant's requirements describe its model.tflite, not the fp32 graph beside.
    applies = not (requirements.runtime == TFLITE_RUNTIME and runtime == TENSORFLOW_RUNTIME)
    flags = server.cpu_flags()
    if applies and not requirements.cpu_supported(flags):
        where = ("this machine's" if server.cpu_features is None
                 else "server.cpu_features")
        return Check("server", version, row.name, list(requirements.cpu_features), False,
                     f"needs one of the CPU features {', '.join(requirements.cpu_features)} "
                     f"({requirements.precision} on {runtime}), which the serving nodes lack "
                     f"({where}: {_some(flags)}); serve it on such nodes or list their "
                     "features in server.cpu_features", kind=REQUIREMENT)
    return Check("server", version, row.name, prefer, True,
                 f"served on {runtime} ({prefer}): judged by the benchmark row '{row.name}'",
                 kind=REQUIREMENT)


def serving_flags(row: JudgedRow, requirements: ServingRequirements) -> list[str]:
    """The tensorflow_model_server flags that run the candidate as measured: the row's,
    and those its serving requirements add for that runtime."""
    return with_requirements(row.server_flags, row.runtime, requirements)


def _some(flags: set[str]) -> str:
    shown = sorted(f for f in flags if f.startswith(("avx", "amx", "sse4", "fma")))
    return ", ".join(shown) if shown else ("none listed" if not flags else
                                          f"{len(flags)} flags, none of them")


def benchmark_problem(name: str, model: ModelResult | None,
                      batch_sizes: int | tuple[int, ...]) -> str | None:
    """Why the benchmark result of `name` cannot be used at the profile's `batch_sizes`,
    or None if it can."""
    if model is None:
        return f"no benchmark result for '{name}' in the metrics; benchmark every candidate"
    if model.error:
        return f"the benchmark of '{name}' failed: {model.error}"
    sizes = (batch_sizes,) if isinstance(batch_sizes, int) else tuple(batch_sizes)
    for batch_size in sizes:
        if model.at(batch_size) is None:
            measured = ", ".join(map(str, measured_batch_sizes(model))) or "none"
            where, change = (("the primary batch size", "primary_batch_size")
                             if len(sizes) == 1 else
                             ("the traffic profile's batch size", "the traffic profile"))
            return (f"no benchmark result at {where} {batch_size} (measured: "
                    f"{measured}); benchmark that batch size or change {change}")
    return None


def benchmark_check(name: str, model: ModelResult | None,
                    batch_sizes: int | tuple[int, ...], row: str | None = None) -> Check:
    """`row`: the benchmark row judged for candidate `name` (default: its own name)."""
    problem = benchmark_problem(row or name, model, batch_sizes)
    sizes = (batch_sizes,) if isinstance(batch_sizes, int) else tuple(batch_sizes)
    return Check("benchmark", name, problem is None, True, problem is None,
                 problem or f"benchmark result at batch {', '.join(map(str, sizes))} present",
                 kind=REQUIREMENT)


def safety_check(name: str, model_dir: str, allowed_ops: Iterable[str]) -> Check:
    allowed = sorted(set(allowed_ops))
    try:
        scan = scan_ops(model_dir, allowed)
    except ServoptError as err:
        return Check("safety", name, None, allowed, False,
                     f"cannot scan the model's ops: {err}", kind=REQUIREMENT)
    if not scan.safe:
        return Check("safety", name, sorted(scan.unsafe), allowed, False,
                     f"unsafe ops on the serving path: {scan.describe_unsafe()}; pass them "
                     "in allowed_ops if the model must run them", kind=REQUIREMENT)
    reason = (f"no ops that read or write files, run Python or open the network "
              f"({sum(scan.ops.values())} nodes scanned)")
    if scan.allowed:
        reason += f"; allowed by allowed_ops: {', '.join(scan.allowed)}"
    return Check("safety", name, [], allowed, True, reason, kind=REQUIREMENT)


def measurement_check(name: str, model: ModelResult, context: Context) -> Check:
    """How the figures judged were measured: rounds, stability and the machine's load.
    It informs and never blocks: the speedups' intervals carry the noise. What load can
    bias, and intervals cannot show, is the ranking between runtimes with different
    thread counts (see benchmark.load); the reason says so when it may have."""
    entry = model.at(context.batch)
    parts = [f"{model.at(b).windows} rounds, {model.at(b).requests or '?'} requests at "
             f"batch {b}, latency " + ("stable" if model.at(b).stable else "not stable")
             for b in context.batch_sizes]
    if entry.other_cpu is not None:
        parts.append(f"other processes took {entry.other_cpu:.0%} of the CPU (median per "
                     f"window), {entry.busy_windows} of {entry.windows} windows busy (over "
                     f"{BUSY_SHARE:.0%})")
    mine, theirs = _threads(model), _threads(context.baseline)
    if entry.busy_windows and mine and theirs and mine != theirs:
        parts.append(f"the speedup may be distorted by that load: it runs requests on {mine} "
                     f"thread(s), the baseline on {theirs}, and load slows the one with more "
                     "threads more; measure on a machine as quiet as the server will be")
    return Check("measurement", name, entry.other_cpu, BUSY_SHARE, True, "; ".join(parts),
                 kind=REQUIREMENT)


def _threads(model: ModelResult | None) -> int | None:
    """Threads one request runs on: a TFLite interpreter's one, or the Session's pool."""
    settings = model.runtime.settings if model is not None and model.runtime else {}
    return settings.get("threads_per_interpreter") or settings.get("intra_op_threads")


def slo_checks(name: str, model: ModelResult, context: Context) -> list[Check]:
    """The traffic profile's p99 SLO at each batch size that has one. The p99 is the
    benchmark's, over every request of every round at that batch size; fewer than
    MIN_REQUESTS_P99 requests make it close to their maximum (it overstates the p99, so
    the check errs on the safe side), and the reason says how many there were."""
    checks = []
    for batch_size, limit in sorted(context.thresholds.traffic.slo_p99_ms.items()):
        batch = model.at(batch_size)
        count = batch.requests if batch is not None else None
        few = ("" if count is None or count >= MIN_REQUESTS_P99 else
               f" (from {count} requests, fewer than the {MIN_REQUESTS_P99} a p99 needs: "
               "close to their maximum)")
        checks.append(_bound("traffic.slo_p99_ms", name, f"p99 latency at batch "
                             f"{batch_size} (SLO)", None if batch is None else batch.p99_ms,
                             limit, upper=True, unit=" ms", suffix=few,
                             missing=f"not measured at batch {batch_size}"))
    return checks


def value_checks(name: str, model: ModelResult, context: Context) -> list[Check]:
    limits = context.thresholds.value
    size = model.size_bytes
    checks = []
    for batch_size in context.batch_sizes:
        batch = model.at(batch_size)
        at = f"at batch {batch_size}"
        checks += [
            _bound("value.max_p50_ms", name, f"p50 latency {at}", batch.p50_ms,
                   limits.max_p50_ms, upper=True, unit=" ms"),
            _bound("value.max_p99_ms", name, f"p99 latency {at}", batch.p99_ms,
                   limits.max_p99_ms, upper=True, unit=" ms"),
            _bound("value.min_throughput", name, f"throughput {at}", batch.throughput,
                   limits.min_throughput, upper=False, unit=" examples/s")]
    checks += [
        _bound("value.max_size_mb", name, "size", None if size is None else size / MB,
               limits.max_size_mb, upper=True, unit=" MB"),
        _bound("value.min_accuracy", name, "accuracy", model.accuracy_value("accuracy"),
               limits.min_accuracy, upper=False,
               missing="the benchmark recorded no accuracy: give it labelled eval examples"),
    ]
    return [c for c in checks if c is not None]


def baseline_checks(name: str, model: ModelResult, context: Context,
                    row: str | None = None) -> list[Check]:
    """`row`: the benchmark row judged for `name` (default: its own name)."""
    limits = context.thresholds.vs_baseline
    wanted = {k: v for k, v in vars(limits).items() if v is not None}
    if not wanted:
        return []
    base = context.baseline_name
    is_baseline = (row or name) == base or model.role == BASELINE
    if not is_baseline and context.baseline is None:
        return [Check(f"vs_baseline.{key}", name, None, limit, False,
                      f"cannot compare with the baseline: {context.baseline_problem}",
                      kind=CHANGE) for key, limit in wanted.items()]
    itself = " (the baseline itself)" if is_baseline else ""
    checks = []
    if limits.max_accuracy_drop is not None:
        own = model.accuracy_value("accuracy")
        reference = own if is_baseline else context.baseline.accuracy_value("accuracy")
        drop = None if own is None or reference is None else reference - own
        if is_baseline:
            drop = 0.0
        checks.append(_bound(
            "vs_baseline.max_accuracy_drop", name, f"accuracy drop vs baseline '{base}'"
            + ("" if drop is None or is_baseline else f" ({fmt(reference)} -> {fmt(own)})"),
            drop, limits.max_accuracy_drop, upper=True, kind=CHANGE, suffix=itself,
            missing="the benchmark recorded no accuracy for it or the baseline: give it "
                    "labelled eval examples"))
    if limits.min_top1_agreement is not None:
        agreement = 1.0 if is_baseline else model.accuracy_value("top1_agreement")
        checks.append(_bound(
            "vs_baseline.min_top1_agreement", name, f"top-1 agreement with baseline '{base}'",
            agreement, limits.min_top1_agreement, upper=False, kind=CHANGE, suffix=itself,
            missing="the benchmark recorded none (not a classifier, or no eval examples)"))
    for quantile, limit in (("p50", limits.min_speedup_p50), ("p99", limits.min_speedup_p99)):
        if limit is None:
            continue
        for batch_size in context.batch_sizes:  # a regression at any batch clients send
            label = f"{quantile} speedup over baseline '{base}' at batch {batch_size}"
            if is_baseline:
                checks.append(_bound(f"vs_baseline.min_speedup_{quantile}", name, label,
                                     1.0, limit, upper=False, unit="x", kind=CHANGE,
                                     suffix=itself))
            else:
                checks.append(_speedup_check(quantile, name, label, model.at(batch_size),
                                             limit, context))
    return checks


def _speedup_check(quantile: str, name: str, label: str, batch: BatchResult, limit: float,
                   context: Context) -> Check:
    """A speedup threshold decided on the speedup's confidence interval: regressed (the
    whole interval below the limit) blocks, not regressed (wholly at or above) passes,
    inconclusive is decided by the `inconclusive` policy; the reason shows the interval.
    The speedup is the benchmark's (the median of per-round ratios), never recomputed."""
    threshold = f"vs_baseline.min_speedup_{quantile}"
    speedup = getattr(batch, f"speedup_{quantile}")
    if speedup is None:
        return _bound(threshold, name, label, None, limit, upper=False, unit="x", kind=CHANGE,
                      missing="the benchmark recorded no speedup for it at this batch size")
    low, high = getattr(batch, f"speedup_{quantile}_interval") or (None, None)
    outcome = judge_at_least(low, high, limit)
    if low is None or high is None:
        interval = ("no confidence interval (too few rounds for the confidence, or metrics "
                    "of a benchmark that recorded none)")
    else:
        interval = (f"{batch.confidence:.0%} interval [{low:.3f}, {high:.3f}] over "
                    f"{batch.windows} rounds")
    policy = context.thresholds.inconclusive
    if outcome == NOT_REGRESSED:
        passed, verdict = True, f"wholly >= min {fmt(limit, 'x')}: not regressed"
    elif outcome == REGRESSED:
        passed, verdict = False, (f"wholly < min {fmt(limit, 'x')}: regressed (slower than "
                                  f"the threshold allows, with {batch.confidence:.0%} "
                                  "confidence)")
    else:
        passed = policy == "allow"
        width = ("" if low is None or high is None
                 else f", {100 * (high - low) / speedup:.0f}% wide")
        verdict = (f"straddles min {fmt(limit, 'x')}{width}: inconclusive, too noisy for the "
                   f"margin; {'allowed' if passed else 'blocked'} by inconclusive: {policy}")
        if not passed:
            verdict += ("; measure on a quieter machine or longer (the benchmark's "
                        "decision_budget_s), or set inconclusive: allow")
    return Check(threshold, name, speedup, limit, passed,
                 f"{label}: {fmt(speedup, 'x')}, {interval}, {verdict}", kind=CHANGE,
                 interval=[low, high], outcome=outcome)


def served_checks(name: str, model: ModelResult, context: Context) -> list[Check]:
    limits = context.thresholds.vs_served
    wanted = {k: v for k, v in vars(limits).items() if v is not None}
    if context.served is None:
        return [Check(f"vs_served.{key}", name, None, limit, True, NOT_SERVED, kind=CHANGE,
                      applicable=False) for key, limit in wanted.items()]
    served = context.served
    checks = []
    for batch_size in (context.batch_sizes if limits.max_p99_regression_pct is not None
                       else ()):
        paired = (paired_p99_regression_check(name, model, batch_size,
                                              limits.max_p99_regression_pct,
                                              context.thresholds.inconclusive)
                  if context.served_paired else None)
        if paired is not None:  # same-run, paired rounds (gate.vs_served)
            checks.append(paired)
            continue
        own = model.at(batch_size).p99_ms
        reference = served.at(batch_size).p99_ms if served.at(batch_size) else None
        regression = (None if own is None or not reference
                      else 100.0 * (own - reference) / reference)
        label = f"p99 latency at batch {batch_size} vs the served model"
        if regression is not None:
            label += f" ({fmt(reference)} -> {fmt(own)} ms)"
        checks.append(_bound(
            "vs_served.max_p99_regression_pct", name, label, regression,
            limits.max_p99_regression_pct, upper=True, unit="%", kind=CHANGE, signed=True,
            missing=f"the served model's metrics have no p99 at batch {batch_size}"))
    if limits.max_accuracy_regression is not None:
        own, reference = model.accuracy_value("accuracy"), served.accuracy_value("accuracy")
        regression = None if own is None or reference is None else reference - own
        label = "accuracy regression vs the served model"
        if regression is not None:
            label += f" ({fmt(reference)} -> {fmt(own)})"
        checks.append(_bound(
            "vs_served.max_accuracy_regression", name, label, regression,
            limits.max_accuracy_regression, upper=True, kind=CHANGE,
            missing="no accuracy recorded for the candidate or the served model"))
    return checks


def _bound(threshold: str, candidate: str, label: str, measured: float | None,
           limit: float | None, upper: bool, unit: str = "", kind: str = VALUE,
           missing: str = "the benchmark did not record it", suffix: str = "",
           signed: bool = False) -> Check | None:
    """A check of `measured` against an upper (or lower) bound; None if `limit` is None."""
    if limit is None:
        return None
    bound = "max" if upper else "min"
    if measured is None:
        return Check(threshold, candidate, None, limit, False,
                     f"{label} not measured ({missing}); cannot check {bound} "
                     f"{fmt(limit, unit, signed)}; or unset {threshold}", kind=kind)
    at_limit = math.isclose(measured, limit, rel_tol=1e-9, abs_tol=1e-12)  # 0.95 - 0.94
    passed = at_limit or (measured <= limit if upper else measured >= limit)
    relation = ("<=" if passed else ">") if upper else (">=" if passed else "<")
    return Check(threshold, candidate, measured, limit, passed,
                 f"{label}: {fmt(measured, unit, signed)} {relation} {bound} "
                 f"{fmt(limit, unit, signed)}{suffix}", kind=kind)
