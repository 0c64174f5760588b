"""The gate's decision as tables, for the CLI and logs (components.core.table lays them out
for the width)."""

from __future__ import annotations

from components.core.gate.decision import GateDecision, fmt
from components.core.table import Cell, Column, Table


def decision_table(decision: GateDecision) -> Table:
    """One row per check: candidate, threshold, measured value, limit, result, reason."""
    verdict = (f"push '{decision.chosen}'" if decision.blessed else "nothing pushed")
    table = Table(title=f"PusherGate: {verdict}", caption=decision.reason, key_columns=2,
                  columns=(Column("candidate"), Column("check"), Column("measured", True),
                           Column("limit", True), Column("result"), Column("reason")))
    order = {result.name: index for index, result in enumerate(decision.candidates)}
    checks = sorted(decision.checks, key=lambda c: (
        -1 if c.candidate is None else order.get(c.candidate, len(order)), not c.applicable))
    for check in checks:
        if not check.applicable:
            result = Cell("n/a", "dim")
        else:
            result = Cell("pass", "green") if check.passed else Cell("FAIL", "red")
        candidate = Cell(check.candidate if check.candidate is not None else "(all)",
                         "bold" if check.candidate == _chosen(decision) else "")
        table.add_row(candidate, check.threshold, _cell(check.measured), _cell(check.limit),
                      result, check.reason)
    return table


def candidate_table(decision: GateDecision) -> Table:
    """One row per candidate: its verdict, objective metrics and what blocked it."""
    verdict = (f"push '{decision.chosen}'" if decision.blessed else "nothing pushed")
    table = Table(title=f"PusherGate: {verdict}", caption=decision.reason, columns=(
        Column("candidate"), Column("verdict"),
        *(Column(f"{metric} @{decision.primary_batch_size}" if metric.endswith("_ms")
                 else metric, numeric=True) for metric in decision.objective),
        Column("blocked by")))
    for result in decision.candidates:
        if result.name == _chosen(decision):
            verdict_cell = Cell("chosen", "bold green")
        else:
            verdict_cell = Cell("pass", "green") if result.passed else Cell("blocked", "red")
        blocked = "; ".join(f"{c.threshold}: {c.reason}"
                            for c in decision.failures(result.name))
        table.add_row(result.name, verdict_cell,
                      *(_cell(result.objective.get(m)) for m in decision.objective), blocked)
    return table


def _chosen(decision: GateDecision) -> str | None:
    """The chosen pair's name (decisions before the search name the version only)."""
    return (decision.chosen_pair or decision.chosen) if decision.blessed else None


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | int):
        return fmt(value)
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def log_lines(decision: GateDecision, table_width: int = 200) -> list[str]:
    """The decision for logs, with the pairs table laid out for `table_width`."""
    table = pairs_table(decision).plain(table_width) if decision.candidates else None
    return decision.summary_lines(table)


def pairs_table(decision: GateDecision) -> Table:
    """Every (version, TF Serving configuration) pair the gate judged: best first (those
    that passed by the objective, then the blocked ones), the chosen one marked, each
    blocked one with the first reason. With a traffic profile of several batch sizes, the
    p50 and p99 at each and the profile's objective over them; else at the primary
    batch size."""
    at = decision.primary_batch_size
    sizes = [int(e["batch_size"]) for e in (decision.traffic or {}).get("requests") or ()]
    profile = len(sizes) > 1
    verdict = (f"push '{decision.chosen}'" if decision.blessed else "nothing pushed")
    configuration = (f", configuration {decision.label}"
                     if decision.blessed and decision.label not in (None, "default") else "")
    if profile:
        from components.core.traffic import TrafficProfile

        judged = ("judged on the traffic profile "
                  + TrafficProfile.from_dict(decision.traffic, "decision").describe())
        objective = decision.traffic["objective"]
        figures_columns = (*(Column(f"{q} ms @{b}", True) for b in sizes
                             for q in ("p50", "p99")),
                           Column(objective, True), Column(f"speedup p50 @{at}", True))
    else:
        judged = f"judged at batch {at}"
        figures_columns = (Column("p50 ms", True), Column("p99 ms", True),
                           Column("examples/s", True), Column("speedup p50", True))
    table = Table(title=f"PusherGate: {verdict}{configuration}; the (version, TF Serving "
                        f"configuration) pairs {judged}", caption=decision.reason,
                  key_columns=3, columns=(
        Column("version"), Column("runtime"), Column("configuration"), *figures_columns,
        Column("verdict")))
    chosen = _chosen(decision)
    for result in decision.candidates:
        figures = result.figures
        if result.name == chosen:
            verdict_cell = Cell("chosen", "bold green")
        elif result.passed:
            verdict_cell = Cell("pass", "green")
        else:
            failures = decision.failures(result.name)
            first = (f"{failures[0].threshold}: {failures[0].reason}" if failures
                     else "; ".join(result.blocked_by[:1]))
            verdict_cell = Cell(f"blocked: {first}", "red")
        if profile:
            per_batch = {int(b): f for b, f in (result.per_batch or {}).items()}
            cells = [_cell(per_batch.get(b, {}).get(q)) for b in sizes
                     for q in ("p50_ms", "p99_ms")]
            cells += [_cell(result.weighted), _speedup(figures)]
        else:
            cells = [_cell(figures.get("p50_ms")), _cell(figures.get("p99_ms")),
                     _cell(figures.get("throughput")), _speedup(figures)]
        table.add_row(Cell(result.model, "bold" if result.name == chosen else ""),
                      result.runtime or "-", result.label, *cells, verdict_cell)
    return table


def _speedup(figures: dict) -> str:
    speedup = figures.get("speedup_p50")
    if speedup is None:
        return "-"
    low, high = figures.get("speedup_p50_interval") or (None, None)
    interval = "" if low is None or high is None else f" [{low:.2f}, {high:.2f}]"
    return f"{fmt(speedup, 'x')}{interval}"
