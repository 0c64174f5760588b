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
