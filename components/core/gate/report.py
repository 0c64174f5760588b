"""The gate's decision as a rich Table, for the CLI."""

from __future__ import annotations

from rich.table import Table

from components.core.gate.decision import GateDecision, fmt


def decision_table(decision: GateDecision) -> Table:
    """One row per check: candidate, threshold, measured value, limit, result, reason."""
    verdict = (f"push '{decision.chosen}'" if decision.blessed else "nothing pushed")
    table = Table(title=f"PusherGate: {verdict}", caption=decision.reason)
    for column, justify in (("candidate", "left"), ("check", "left"),
                            ("measured", "right"), ("limit", "right"), ("result", "center"),
                            ("reason", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    order = {result.name: index for index, result in enumerate(decision.candidates)}
    checks = sorted(decision.checks, key=lambda c: (
        -1 if c.candidate is None else order.get(c.candidate, len(order)), not c.applicable))
    for check in checks:
        if not check.applicable:
            result = "[dim]n/a[/dim]"
        else:
            result = "[green]pass[/green]" if check.passed else "[red]FAIL[/red]"
        candidate = check.candidate if check.candidate is not None else "(all)"
        if check.candidate is not None and check.candidate == decision.chosen:
            candidate = f"[bold]{candidate}[/bold]"
        table.add_row(candidate, check.threshold, _cell(check.measured), _cell(check.limit),
                      result, check.reason)
    return table


def candidate_table(decision: GateDecision) -> Table:
    """One row per candidate: its verdict, objective metrics and what blocked it."""
    verdict = (f"push '{decision.chosen}'" if decision.blessed else "nothing pushed")
    table = Table(title=f"PusherGate: {verdict}", caption=decision.reason)
    table.add_column("candidate")
    table.add_column("verdict", justify="center")
    for metric in decision.objective:
        table.add_column(f"{metric} @{decision.primary_batch_size}"
                         if metric.endswith("_ms") else metric, justify="right")
    table.add_column("blocked by", overflow="fold")
    for result in decision.candidates:
        if result.name == decision.chosen:
            verdict_cell = "[bold green]chosen[/]"
        else:
            verdict_cell = "[green]pass[/]" if result.passed else "[red]blocked[/]"
        blocked = "; ".join(f"{c.threshold}: {c.reason}"
                            for c in decision.failures(result.name))
        table.add_row(result.name, verdict_cell,
                      *(_cell(result.objective.get(m)) for m in decision.objective), blocked)
    return table


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
