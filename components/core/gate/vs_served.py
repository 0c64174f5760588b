"""The gate against the version served now: a paired comparison where the benchmark
measured that version in the same interleaved rounds as the candidates.

Where the ServingBenchmark was given the served version, its metrics hold a row `served`
(role "served") and every candidate's `served_speedup_p99` with its interval: the median
of the per-round ratios served / candidate p99 latency, paired round by round like the
speedups over the baseline, so machine drift cancels. `vs_served.max_p99_regression_pct`
is then decided on that interval, as `vs_baseline.min_speedup_*` is (regressed,
not regressed, or inconclusive under the `inconclusive` policy). Only where the served
version could not be measured in this run (it failed to load or run, or the benchmark was
not given it) does the gate fall back to the figures recorded at its push, from another
run on possibly another machine, and the decision says so.

A pair that passes every check replaces the served version only when it is faster than it
with confidence (`served_stays`): a new version costs a rollout, and rerunning a pipeline
whose inputs did not change must not push a near-tie that noise ranked first.
"""

from __future__ import annotations

from components.core.benchmark.schema import BenchmarkResult, ModelResult
from components.core.benchmark.stats import (
    ABOVE_ONE,
    BELOW_ONE,
    NOT_REGRESSED,
    REGRESSED,
    judge_at_least,
    side_of_one,
)
from components.core.gate.decision import CHANGE, NOTE, Check, fmt
from components.core.traffic import TrafficProfile

PAIRED = "measured in this run, in the same interleaved rounds as the candidates"


def served_reference(metrics: BenchmarkResult, recorded: ModelResult | None
                     ) -> tuple[ModelResult | None, bool, str | None]:
    """(the served model's result to compare with, whether the comparison is paired,
    what the decision should say about it; None: nothing served)."""
    row = metrics.served
    if row is not None:
        measured = metrics.models[row]
        if not measured.error and measured.batches:
            return measured, True, f"the served version was {PAIRED}: vs_served is paired"
        why = measured.error or "it has no measurement"
        if recorded is None:
            return None, False, (f"the served version could not be measured in this run "
                                 f"({why}) and no figures were recorded at its push: "
                                 "vs_served does not apply")
        return recorded, False, (f"the served version could not be measured in this run "
                                 f"({why}): vs_served compares with the figures recorded at "
                                 "its push, from another run")
    if recorded is None:
        return None, False, None
    return recorded, False, ("the served version was not measured in this run (give the "
                             "ServingBenchmark the served model): vs_served compares with "
                             "the figures recorded at its push, from another run")


def served_note_check(note: str | None, paired: bool) -> list[Check]:
    """A run-wide note saying how the candidates were compared with the served version:
    `measured` is whether the comparison is paired (same run, same rounds)."""
    if note is None:
        return []
    return [Check("vs_served.measured", None, paired, True, True, note, kind=NOTE)]


def paired_p99_regression_check(name: str, model: ModelResult, batch_size: int,
                                limit_pct: float, inconclusive: str) -> Check | None:
    """`vs_served.max_p99_regression_pct` on the paired interval; None where the
    candidate has no paired figure (e.g. a searched row measured without the served one).

    A p99 regression of r% is a speedup of 1 / (1 + r/100) over the served version, so the
    limit is the speedup line 1 / (1 + limit/100), judged like the baseline speedups."""
    batch = model.at(batch_size)
    speedup = batch.served_speedup_p99 if batch else None
    if speedup is None or speedup <= 0:
        return None
    threshold = "vs_served.max_p99_regression_pct"
    low, high = batch.served_speedup_p99_interval or (None, None)
    line = 1.0 / (1.0 + limit_pct / 100.0)
    outcome = judge_at_least(low, high, line)
    regression = 100.0 * (1.0 / speedup - 1.0)
    label = (f"p99 latency at batch {batch_size} vs the served version ({PAIRED}): "
             f"{fmt(regression, '%', signed=True)}")
    if low is None or high is None or low <= 0:
        interval = "no confidence interval (too few rounds for the confidence)"
    else:
        worst, best = 100.0 * (1.0 / low - 1.0), 100.0 * (1.0 / high - 1.0)
        interval = (f"{batch.confidence:.0%} interval [{fmt(best, '%', signed=True)}, "
                    f"{fmt(worst, '%', signed=True)}] over {batch.windows} rounds")
    limit = fmt(limit_pct, "%", signed=True)
    if outcome == NOT_REGRESSED:
        passed, verdict = True, f"wholly <= max {limit}: not regressed"
    elif outcome == REGRESSED:
        passed, verdict = False, f"wholly > max {limit}: regressed against the served version"
    else:
        passed = inconclusive == "allow"
        verdict = (f"straddles max {limit}: inconclusive; "
                   f"{'allowed' if passed else 'blocked'} by inconclusive: {inconclusive}")
    return Check(threshold, name, regression, limit_pct, passed,
                 f"{label}, {interval}, {verdict}", kind=CHANGE,
                 interval=[low, high], outcome=outcome)


def served_stays(model: ModelResult | None, traffic: TrafficProfile) -> str | None:
    """Why the served version stays although the chosen pair (its row `model`) passed every
    check; None when the pair is faster than it with confidence, or cannot be compared.

    Faster with confidence: the paired interval of the pair's speedup over the served
    version, in the percentile the profile ranks by (p99 for weighted_p99_ms, else p50),
    lies wholly above 1 at one batch size of the profile, and wholly below 1 at none. A
    pair without paired figures (the served version was not measured in its rounds) is
    not held back: nothing measured says it is no faster."""
    if model is None:
        return None
    percentile = "p99" if traffic.objective == "weighted_p99_ms" else "p50"
    faster, figures = False, []
    for size in traffic.batch_sizes:
        batch = model.at(size)
        interval = getattr(batch, f"served_speedup_{percentile}_interval") if batch else None
        low, high = interval or (None, None)
        if low is None or high is None:
            continue
        figures.append(f"batch {size}: [{low:.3g}, {high:.3g}]")
        side = side_of_one(low, high)
        if side == BELOW_ONE:
            return (f"it is slower than the served version at batch {size} ({percentile} "
                    f"speedup interval [{low:.3g}, {high:.3g}]): the served version stays")
        faster = faster or side == ABOVE_ONE
    if not figures or faster:
        return None
    return (f"it is not faster than the served version with confidence ({percentile} "
            f"speedup intervals over it, {PAIRED}: {'; '.join(figures)}): the served "
            "version stays, nothing new is pushed")
