"""`evaluate_gate`: decide which candidate, if any, may be pushed.

Every candidate is checked (benchmark result present, safe ops, how it was measured, value
thresholds, changes against the baseline and the served model) and so is the run
(model and infra blessings, when given). Among the candidates that pass everything, the
traffic profile's objective picks one (e.g. the request-weighted mean p50 over the batch
sizes clients send; each pair's figure is the baseline's over the pair's paired speedup,
so pairs measured in different rounds rank without the drift between them), ties broken
by the `objective` metrics, in order, each with its own direction (lower latency and size
are better, higher throughput and accuracy are), then the name, so the choice is
deterministic. A pair must meet every SLO of the profile. If none pass, nothing is pushed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from components.core.benchmark.schema import BenchmarkResult, ModelResult
from components.core.errors import ServoptError
from components.core.gate.checks import (
    Context,
    JudgedRow,
    baseline_checks,
    benchmark_check,
    benchmark_problem,
    judged_rows,
    measurement_check,
    model_requirements,
    pair_name,
    safety_check,
    served_checks,
    server_check,
    serving_flags,
    slo_checks,
    value_checks,
)
from components.core.gate.decision import (
    NOTE,
    REQUIREMENT,
    CandidateResult,
    Check,
    GateDecision,
    fmt,
)
from components.core.gate.machine import measured_on, ranking_cpu_check
from components.core.gate.metrics import typed_metrics, typed_model
from components.core.gate.parity import baseline_signatures, signature_parity_check
from components.core.gate.thresholds import (
    ACCURACY_OBJECTIVES,
    BATCH_OBJECTIVES,
    OBJECTIVES,
    Thresholds,
)
from components.core.gate.vs_served import served_note_check, served_reference, served_stays
from components.core.requirements import ServingRequirements
from components.core.serving_config import DEFAULT_LABEL
from components.core.traffic import OBJECTIVES as TRAFFIC_OBJECTIVES
from components.core.traffic import TrafficProfile


def evaluate_gate(metrics: BenchmarkResult | dict, thresholds: Thresholds | dict,
                  candidates: Mapping[str, str | Path],
                  served: ModelResult | dict | None = None,
                  model_blessed: bool | None = None, infra_blessed: bool | None = None,
                  allowed_ops: Iterable[str] = ()) -> GateDecision:
    """Checks every candidate and chooses the one to push.

    metrics: the ServingBenchmark's result (`load_metrics`; a dict in metrics.json's form
        is parsed by the same schema), holding the baseline and every candidate.
    thresholds: a Thresholds, or a dict shaped like its YAML.
    candidates: name in metrics -> model directory (any layout the library resolves).
    served: the model served now, as measured (one model's result, recorded at its
        push), None on the first push. model_blessed / infra_blessed: the Evaluator's and
        InfraValidator's verdicts; None when not given, else they must be True.
    allowed_ops: op types the safety scan accepts although they are unsafe.
    """
    if isinstance(thresholds, dict):
        thresholds = Thresholds.from_dict(thresholds, source="thresholds parameter")
    metrics = typed_metrics(metrics)
    if not candidates:
        raise ServoptError("no candidates given to the gate; pass at least one model")
    # The served version measured in this run (paired) wins over its recorded figures.
    served, served_paired, served_note = served_reference(metrics,
                                                          typed_model(served, "served"))
    baseline_name = metrics.baseline
    baseline = metrics.models.get(baseline_name) if baseline_name else None
    baseline_problem = (benchmark_problem(baseline_name, baseline, thresholds.batch_sizes)
                        if baseline_name else "the metrics name no baseline")
    context = Context(thresholds, baseline_name, None if baseline_problem else baseline,
                      baseline_problem, served, served_paired)
    allowed = sorted(set(allowed_ops))

    checks = _blessing_checks(model_blessed, infra_blessed)
    checks.append(ranking_cpu_check(metrics.machine, thresholds.server))
    checks += served_note_check(served_note, served_paired)
    rows = {name: judged_rows(name, metrics, thresholds.server) for name in candidates}
    requirements = {name: model_requirements(str(path)) for name, path in candidates.items()}
    needed = baseline_signatures(metrics) if thresholds.required_signatures is None else None
    signatures = {}
    pairs: list[tuple[str, str, JudgedRow]] = []  # (pair name, version, row)
    for name, model_dir in candidates.items():
        # What a version is, whatever its configuration: checked once, stated per pair.
        safety = safety_check(name, str(model_dir), allowed)
        parity, signatures[name] = signature_parity_check(
            name, model_dir, rows[name][0].runtime, thresholds.required_signatures, needed)
        for row in rows[name]:
            pair = pair_name(name, row)
            if any(pair == taken for taken, _, _ in pairs):  # rows without their labels
                pair = row.name
            pairs.append((pair, name, row))
            checks += _candidate_checks(pair, row, requirements[name], context,
                                        [replace(safety, candidate=pair),
                                         replace(parity, candidate=pair)])
    run_wide_failures = [c for c in checks if c.candidate is None and not c.passed]

    batch_size = thresholds.primary_batch_size
    traffic = thresholds.traffic
    cores = getattr(metrics.machine, "cores", None)  # throughput_per_core divides by it
    results = []
    for pair, name, row in pairs:
        failed = [c for c in checks if c.candidate in (pair, None) and not c.passed]
        weighted = _profile_value(row.model, traffic, cores, baseline)
        results.append(CandidateResult(
            name=pair, path=str(candidates[name]), passed=not failed,
            blocked_by=[f"{c.threshold}: {c.reason}" for c in failed],
            objective={traffic.objective: weighted,
                       **{key: _objective_value(row.model, key, traffic, cores,
                                                row.name == baseline_name, baseline)
                          for key in thresholds.objective}},
            row=row.name, server_flags=serving_flags(row, requirements[name]),
            environment=dict(requirements[name].environment), signatures=signatures[name],
            runtime=row.runtime, version=name, label=row.label,
            configuration=row.configuration, figures=_figures(row.model, batch_size),
            per_batch=_per_batch(row.model, traffic.batch_sizes),
            weighted=weighted))
    ranking = (traffic.objective, *thresholds.objective)
    ranked = sorted(results, key=lambda r: _rank_key(r, ranking))
    passing = [r for r in ranked if r.passed]
    blocked = [r for r in ranked if not r.passed]
    chosen = passing[0] if passing else None
    stays = (served_stays(metrics.models.get(chosen.row), traffic)
             if chosen is not None and served_paired else None)
    return GateDecision(
        blessed=chosen is not None,
        chosen=chosen.model if chosen else None,
        chosen_path=chosen.path if chosen else None,
        reason=_reason(passing, run_wide_failures, len(results), thresholds)
        + _served_beats_all(served_paired, passing, results, checks),
        primary_batch_size=batch_size,
        objective=list(dict.fromkeys(ranking)),
        traffic=traffic.to_dict(),
        first_push=served is None,
        candidates=passing + blocked,
        checks=checks,
        thresholds=thresholds.to_dict(),
        server_flags=chosen.server_flags if chosen else [],
        environment=chosen.environment if chosen else {},
        signatures=chosen.signatures if chosen else [],
        runtime=chosen.runtime if chosen else None,
        chosen_pair=chosen.name if chosen else None,
        row=chosen.row if chosen else None,
        label=chosen.label if chosen else None,
        configuration=chosen.configuration if chosen else None,
        measured_on=measured_on(metrics.machine),
        served_stays=stays)


def _candidate_checks(pair: str, row: JudgedRow, requirements: ServingRequirements,
                      context: Context, version_checks: list[Check]) -> list[Check]:
    """The checks of one pair: `version_checks` (safety, signatures: the same for every
    configuration of a version), and those of its row."""
    model = row.model
    checks = [benchmark_check(pair, model, context.batch_sizes, row.name),
              server_check(pair, row, requirements, context.thresholds.server),
              *version_checks]
    if not checks[0].passed:  # nothing measured to check thresholds on
        return checks
    return (checks + [measurement_check(pair, model, context)]
            + slo_checks(pair, model, context)
            + value_checks(pair, model, context)
            + baseline_checks(pair, model, context, row.name)
            + served_checks(pair, model, context)
            + _runtime_notes(pair, model))


def _runtime_notes(pair: str, model: ModelResult) -> list[Check]:
    """What the benchmark noted about how the row was measured (e.g. an in-process TFLite
    int8 figure that may overstate TF Serving, benchmark.runtimes.build_gap_note): shown
    with the pair, never blocking."""
    notes = model.runtime.notes if model.runtime else []
    return [Check("measurement.note", pair, note, None, True, note, kind=NOTE)
            for note in notes]


def _figures(model: ModelResult | None, batch_size: int) -> dict:
    """What the pairs table shows of a pair, at the primary batch size."""
    batch = model.at(batch_size) if model is not None else None
    if batch is None:
        return {}
    return {key: getattr(batch, key) for key in
            ("p50_ms", "p99_ms", "throughput", "speedup_p50", "speedup_p50_interval")}


def _blessing_checks(model_blessed: bool | None, infra_blessed: bool | None) -> list[Check]:
    checks = []
    for threshold, given, who in (("model_blessing", model_blessed, "the Evaluator"),
                                  ("infra_blessing", infra_blessed, "the InfraValidator")):
        if given is None:
            checks.append(Check(threshold, None, None, True, True,
                                "not applicable: not given", kind=REQUIREMENT,
                                applicable=False))
        else:
            checks.append(Check(threshold, None, bool(given), True, bool(given),
                                f"{threshold.replace('_', ' ')}: "
                                + ("blessed" if given else f"not blessed by {who}"),
                                kind=REQUIREMENT))
    return checks


def _per_batch(model: ModelResult | None, batch_sizes: tuple[int, ...]) -> dict:
    """What the decision shows of a pair at each batch size of the profile."""
    figures = {}
    for size in batch_sizes:
        batch = model.at(size) if model is not None else None
        if batch is not None:
            figures[size] = {key: getattr(batch, key) for key in
                             ("p50_ms", "p99_ms", "throughput", "requests", "speedup_p50",
                              "speedup_p50_interval")}
    return figures


# A pair's figure at a batch size, as ranked: the baseline's figure over the pair's paired
# ratio to it (median of the per-round ratios, see benchmark.scheduler.compare).
PAIRED_RATIOS = {"p50_ms": "speedup_p50", "p99_ms": "speedup_p99",
                 "throughput": "throughput_ratio"}


def _paired_figure(model: ModelResult, baseline: ModelResult | None, metric: str,
                   size: int) -> float | None:
    """`metric` of `model` at `size`, as the baseline's figure scaled by the model's paired
    ratio to the baseline. Pairs are measured in different rounds (the default rows, then
    each search step), every one with the baseline in them: the machine's drift between
    those steps moves a pair's own figure, not its ratio to the baseline measured beside
    it, so ranking on one baseline figure and the paired ratios compares every pair on
    one footing. A row without a ratio (the baseline itself) keeps its own figure."""
    batch = model.at(size)
    if batch is None:
        return None
    ratio = getattr(batch, PAIRED_RATIOS[metric], None)
    reference = baseline.at(size) if baseline is not None else None
    base = getattr(reference, metric, None) if reference is not None else None
    if not ratio or base is None:
        return getattr(batch, metric)
    return base * ratio if metric == "throughput" else base / ratio


def _profile_value(model: ModelResult | None, traffic: TrafficProfile,
                   cores: int | None, baseline: ModelResult | None) -> float | None:
    """The traffic profile's objective of a pair, from its paired figure at each batch
    size (_paired_figure)."""
    return _weighted(model, traffic.metric, traffic, cores, baseline)


def _weighted(model: ModelResult | None, metric: str, traffic: TrafficProfile,
              cores: int | None, baseline: ModelResult | None) -> float | None:
    """A per-batch metric over the profile: request-weighted for latencies; for
    throughput the mix's examples per second (per core when `cores` is given)."""
    if model is None:
        return None
    figures = {size: _paired_figure(model, baseline, metric, size)
               for size in traffic.batch_sizes}
    if metric == "throughput":
        per_core = dataclasses.replace(traffic, objective="throughput_per_core")
        return per_core.weighted(figures, cores or 1)
    mean = dataclasses.replace(traffic, objective="weighted_p50_ms")  # a weighted mean
    return mean.weighted(figures)


def _objective_value(model: ModelResult | None, key: str, traffic: TrafficProfile,
                     cores: int | None, is_baseline: bool,
                     baseline: ModelResult | None) -> float | None:
    if model is None:
        return None
    if key in BATCH_OBJECTIVES:  # over the profile (one-entry profile: at its batch size)
        return _weighted(model, key, traffic, None if key == "throughput" else cores,
                         baseline)
    if key in ACCURACY_OBJECTIVES:
        if key == "top1_agreement" and is_baseline:
            return 1.0
        return model.accuracy_value(key)
    return getattr(model, key)


def _lower_is_better(metric: str) -> bool:
    if metric in TRAFFIC_OBJECTIVES:
        return TRAFFIC_OBJECTIVES[metric][1]
    return OBJECTIVES[metric]


def _rank_key(result: CandidateResult, objective: tuple[str, ...]) -> tuple:
    """Best first: each metric in its direction; unmeasured ones last; then the default
    configuration; then by name."""
    key = []
    for metric in objective:
        value = result.objective[metric]
        if value is None:
            key.append(math.inf)
        else:
            key.append(value if _lower_is_better(metric) else -value)
    # Ties: the default configuration first (TF Serving's own settings need no flags to
    # keep), then by name, so the choice is deterministic.
    return (*key, result.label != DEFAULT_LABEL, result.name)


def _served_beats_all(served_paired: bool, passing: list[CandidateResult],
                      results: list[CandidateResult], checks: list[Check]) -> str:
    """Where nothing passed and every pair failed a check against the version served now
    (measured in this run), the reason says that version stays: a rerun of an unchanged
    pipeline whose served pair beats every candidate is not a failure."""
    if not served_paired or passing or not results:
        return ""
    beaten = {c.candidate for c in checks
              if c.threshold.startswith("vs_served.") and not c.passed}
    if all(r.name in beaten for r in results):
        return ("; every candidate fails a check against the version served now "
                "(vs_served, measured in this run): the served version stays")
    return ""


def _reason(passing: list[CandidateResult], run_wide_failures: list[Check], total: int,
            thresholds: Thresholds) -> str:
    if run_wide_failures:
        return f"{'; '.join(c.reason for c in run_wide_failures)}; nothing is pushed"
    if not passing:
        return (f"none of the {total} candidate(s) passed every check; nothing is pushed"
                if total > 1 else "the candidate did not pass every check; nothing is pushed")
    best = passing[0]
    traffic = thresholds.traffic
    at = (f"at batch {traffic.batch_sizes[0]}" if len(traffic.batch_sizes) == 1
          else f"over the traffic profile ({traffic.describe()})")
    if len(passing) == 1:
        return (f"'{best.name}' is the only one of {total} candidate(s) that passed every "
                "check")
    runner_up = passing[1]
    for metric in dict.fromkeys((thresholds.traffic.objective, *thresholds.objective)):
        mine, theirs = best.objective[metric], runner_up.objective[metric]
        if mine != theirs:
            direction = "lowest" if _lower_is_better(metric) else "highest"
            where = (f" {at}" if metric in BATCH_OBJECTIVES or metric in TRAFFIC_OBJECTIVES
                     else "")
            return (f"'{best.name}' has the {direction} {metric}{where} of the "
                    f"{len(passing)} candidates that passed every check: "
                    f"{fmt(mine)} vs {fmt(theirs)} for '{runner_up.name}'")
    tie_break = ("the default configuration first" if best.label == DEFAULT_LABEL
                 and runner_up.label != DEFAULT_LABEL else "name")
    ranking = ", ".join(dict.fromkeys((thresholds.traffic.objective, *thresholds.objective)))
    return (f"'{best.name}' ties with '{runner_up.name}' on {ranking}"
            f"; chosen by {tie_break}")
