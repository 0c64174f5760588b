"""`evaluate_gate`: decide which candidate, if any, may be pushed.

Every candidate is checked (benchmark result present, safe ops, how it was measured, value
thresholds, changes against the baseline and the served model) and so is the run
(model and infra blessings, when given). Among the candidates that pass everything, the
objective picks one: the metrics it lists, in order, each with its own direction (lower
latency and size are better, higher throughput and accuracy are), then the name, so the
choice is deterministic. If none pass, nothing is pushed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from components.core.benchmark.schema import BenchmarkResult, ModelResult
from components.core.errors import ServoptError
from components.core.gate.checks import (
    Context,
    JudgedRow,
    baseline_checks,
    benchmark_check,
    benchmark_problem,
    judged_row,
    measurement_check,
    model_requirements,
    safety_check,
    served_checks,
    server_check,
    serving_flags,
    value_checks,
)
from components.core.gate.decision import (
    REQUIREMENT,
    CandidateResult,
    Check,
    GateDecision,
    fmt,
)
from components.core.gate.metrics import typed_metrics, typed_model
from components.core.gate.parity import baseline_signatures, signature_parity_check
from components.core.gate.thresholds import (
    ACCURACY_OBJECTIVES,
    BATCH_OBJECTIVES,
    OBJECTIVES,
    Thresholds,
)
from components.core.requirements import ServingRequirements


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
    served = typed_model(served, "served")
    baseline_name = metrics.baseline
    baseline = metrics.models.get(baseline_name) if baseline_name else None
    baseline_problem = (benchmark_problem(baseline_name, baseline,
                                          thresholds.primary_batch_size)
                        if baseline_name else "the metrics name no baseline")
    context = Context(thresholds, baseline_name, None if baseline_problem else baseline,
                      baseline_problem, served)
    allowed = sorted(set(allowed_ops))

    checks = _blessing_checks(model_blessed, infra_blessed)
    rows = {name: judged_row(name, metrics, thresholds.server) for name in candidates}
    requirements = {name: model_requirements(str(path)) for name, path in candidates.items()}
    needed = baseline_signatures(metrics) if thresholds.required_signatures is None else None
    signatures = {}
    for name, model_dir in candidates.items():
        checks += _candidate_checks(name, str(model_dir), rows[name], requirements[name],
                                    context, allowed)
        parity, signatures[name] = signature_parity_check(
            name, model_dir, rows[name].runtime, thresholds.required_signatures, needed)
        checks.append(parity)
    run_wide_failures = [c for c in checks if c.candidate is None and not c.passed]

    results = []
    for name, model_dir in candidates.items():
        failed = [c for c in checks if c.candidate in (name, None) and not c.passed]
        model = rows[name].model
        results.append(CandidateResult(
            name=name, path=str(model_dir), passed=not failed,
            blocked_by=[f"{c.threshold}: {c.reason}" for c in failed],
            objective={key: _objective_value(model, key, thresholds.primary_batch_size,
                                             rows[name].name == baseline_name)
                       for key in thresholds.objective},
            row=rows[name].name, server_flags=serving_flags(rows[name], requirements[name]),
            environment=dict(requirements[name].environment), signatures=signatures[name],
            runtime=rows[name].runtime))
    passing = sorted((r for r in results if r.passed),
                     key=lambda r: _rank_key(r, thresholds.objective))
    blocked = [r for r in results if not r.passed]
    chosen = passing[0] if passing else None
    return GateDecision(
        blessed=chosen is not None,
        chosen=chosen.name if chosen else None,
        chosen_path=chosen.path if chosen else None,
        reason=_reason(passing, run_wide_failures, len(results), thresholds),
        primary_batch_size=thresholds.primary_batch_size,
        objective=list(thresholds.objective),
        first_push=served is None,
        candidates=passing + blocked,
        checks=checks,
        thresholds=thresholds.to_dict(),
        server_flags=chosen.server_flags if chosen else [],
        environment=chosen.environment if chosen else {},
        signatures=chosen.signatures if chosen else [],
        runtime=chosen.runtime if chosen else None)


def _candidate_checks(name: str, model_dir: str, row: JudgedRow,
                      requirements: ServingRequirements, context: Context,
                      allowed_ops: list[str]) -> list[Check]:
    model = row.model
    checks = [benchmark_check(name, model, context.batch, row.name),
              server_check(name, row, requirements, context.thresholds.server),
              safety_check(name, model_dir, allowed_ops)]
    if not checks[0].passed:  # nothing measured to check thresholds on
        return checks
    return (checks + [measurement_check(name, model, context)]
            + value_checks(name, model, context) + baseline_checks(name, model, context)
            + served_checks(name, model, context))


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


def _objective_value(model: ModelResult | None, key: str, batch_size: int,
                     is_baseline: bool) -> float | None:
    if model is None:
        return None
    if key in BATCH_OBJECTIVES:
        batch = model.at(batch_size)
        return getattr(batch, key) if batch else None
    if key in ACCURACY_OBJECTIVES:
        if key == "top1_agreement" and is_baseline:
            return 1.0
        return model.accuracy_value(key)
    return getattr(model, key)


def _rank_key(result: CandidateResult, objective: tuple[str, ...]) -> tuple:
    """Best first: each metric in its direction; unmeasured ones last; then by name."""
    key = []
    for metric in objective:
        value = result.objective[metric]
        if value is None:
            key.append(math.inf)
        else:
            key.append(value if OBJECTIVES[metric] else -value)
    return (*key, result.name)


def _reason(passing: list[CandidateResult], run_wide_failures: list[Check], total: int,
            thresholds: Thresholds) -> str:
    if run_wide_failures:
        return f"{'; '.join(c.reason for c in run_wide_failures)}; nothing is pushed"
    if not passing:
        return (f"none of the {total} candidate(s) passed every check; nothing is pushed"
                if total > 1 else "the candidate did not pass every check; nothing is pushed")
    best = passing[0]
    at = f"at batch {thresholds.primary_batch_size}"
    if len(passing) == 1:
        return (f"'{best.name}' is the only one of {total} candidate(s) that passed every "
                "check")
    runner_up = passing[1]
    for metric in thresholds.objective:
        mine, theirs = best.objective[metric], runner_up.objective[metric]
        if mine != theirs:
            direction = "lowest" if OBJECTIVES[metric] else "highest"
            where = f" {at}" if metric in BATCH_OBJECTIVES else ""
            return (f"'{best.name}' has the {direction} {metric}{where} of the "
                    f"{len(passing)} candidates that passed every check: "
                    f"{fmt(mine)} vs {fmt(theirs)} for '{runner_up.name}'")
    return (f"'{best.name}' ties with '{runner_up.name}' on {', '.join(thresholds.objective)}"
            "; chosen by name")
