"""The gate's decision: every check made, the candidate chosen and why.

`GateDecision.to_dict()` is what decision.json holds; `summary_lines()` is for logs.
A candidate passes when every check on it passes, and so do the run-wide checks
(blessings, candidate None). Not-applicable checks (e.g. against a served model on the
first push) pass and are recorded with the reason they do not apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from components.core.errors import ServoptError

REQUIREMENT = "requirement"  # benchmark result present, stable latency, safe ops, blessing
VALUE = "value"  # TFMA value threshold: a bound on the candidate's own measurement
CHANGE = "change"  # TFMA change threshold: against the baseline or the served model


class GateBlocked(ServoptError):
    """No candidate may be pushed; for adapters that fail the run on a blocked gate."""

    exit_code = 4


@dataclass
class Check:
    threshold: str  # e.g. "value.max_p99_ms", "vs_served.max_p99_regression_pct", "safety"
    candidate: str | None  # None: a run-wide check (blessings) that applies to every one
    measured: float | bool | str | list | None
    limit: float | bool | str | list | None
    passed: bool
    reason: str
    kind: str = VALUE
    applicable: bool = True
    # Checks decided on a confidence interval (the speedups): the interval [low, high] of
    # `measured` and the outcome, "regressed", "not regressed" or "inconclusive".
    interval: list[float | None] | None = None
    outcome: str | None = None


@dataclass
class CandidateResult:
    name: str
    path: str
    passed: bool
    blocked_by: list[str]  # reasons of the checks that failed, run-wide ones included
    objective: dict[str, float | None]  # the objective's metrics, in objective order
    row: str | None = None  # the benchmark row it was judged by (the server's runtime)
    server_flags: list[str] = field(default_factory=list)  # what serving it needs
    environment: dict[str, str] = field(default_factory=dict)  # e.g. TF_ENABLE_ONEDNN_OPTS
    signatures: list[str] = field(default_factory=list)  # served on the judged runtime
    runtime: str | None = None  # the runtime the server runs it on (its judged row's)


@dataclass
class GateDecision:
    blessed: bool  # True: push `chosen`; False: push nothing
    chosen: str | None
    chosen_path: str | None
    reason: str  # why `chosen`, or why nothing is pushed
    primary_batch_size: int
    objective: list[str]
    first_push: bool  # no model served yet: checks against it did not apply
    candidates: list[CandidateResult]  # passing ones best first, then the blocked ones
    checks: list[Check]
    thresholds: dict = field(default_factory=dict)
    server_flags: list[str] = field(default_factory=list)  # the chosen one's, to serve it
    environment: dict[str, str] = field(default_factory=dict)
    signatures: list[str] = field(default_factory=list)  # what the pushed version serves
    runtime: str | None = None  # the runtime the server runs it on: warm-ups replay there

    def checks_for(self, candidate: str) -> list[Check]:
        """Checks that decide `candidate`: its own and the run-wide ones."""
        return [c for c in self.checks if c.candidate in (candidate, None)]

    def failures(self, candidate: str | None = None) -> list[Check]:
        checks = self.checks if candidate is None else self.checks_for(candidate)
        return [c for c in checks if not c.passed]

    def candidate(self, name: str) -> CandidateResult:
        for result in self.candidates:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GateDecision:
        """The inverse of to_dict: a decision read back from decision.json."""
        return cls(**{**data,
                      "candidates": [CandidateResult(**c) for c in data["candidates"]],
                      "checks": [Check(**c) for c in data["checks"]]})

    def summary_lines(self) -> list[str]:
        head = (f"PusherGate: blessed: push '{self.chosen}'" if self.blessed
                else "PusherGate: not blessed: nothing is pushed")
        lines = [head, f"  why: {self.reason}"]
        run_wide = [c for c in self.checks if c.candidate is None and c.applicable]
        lines += [f"  {'ok' if c.passed else 'BLOCKS ALL'}: {c.reason}" for c in run_wide]
        for result in self.candidates:
            if result.passed:
                count = sum(1 for c in self.checks_for(result.name) if c.applicable)
                values = ", ".join(f"{k} {fmt(v)}" for k, v in result.objective.items())
                lines.append(f"  candidate '{result.name}': passed {count} checks ({values})")
            else:
                own = [c for c in self.failures(result.name) if c.candidate is not None]
                lines.append(f"  candidate '{result.name}': blocked"
                             + ("" if own else " (by the run-wide check above)"))
                lines += [f"    {c.threshold}: {c.reason}" for c in own]
        not_applicable: dict[str, list[str]] = {}
        for check in self.checks:
            if not check.applicable and check.threshold not in not_applicable.get(
                    check.reason, []):
                not_applicable.setdefault(check.reason, []).append(check.threshold)
        lines += [f"  {reason}: {', '.join(names)}" for reason, names in
                  not_applicable.items()]
        if self.blessed:
            if self.signatures:
                lines.append(f"  '{self.chosen}' serves signatures: "
                             f"{', '.join(self.signatures)}")
            lines.append(f"  serve '{self.chosen}' with: {self.serving_command()}")
        return lines

    def serving_command(self) -> str:
        """The tensorflow_model_server flags (and environment) the pushed version needs."""
        env = " ".join(f"{k}={v}" for k, v in sorted(self.environment.items()))
        flags = " ".join(self.server_flags) or "(no flags recorded: as the benchmarked " \
                                               "server was started)"
        return f"{env + ' ' if env else ''}tensorflow_model_server {flags}"

    def raise_if_blocked(self) -> None:
        """Raises GateBlocked (with the summary) when nothing may be pushed."""
        if not self.blessed:
            raise GateBlocked("; ".join(line.strip() for line in self.summary_lines()[1:]))


def fmt(value: float | None, unit: str = "", signed: bool = False) -> str:
    """4 significant digits, without exponents for large values (21400000, not 2.14e+07)."""
    if value is None:
        return "not measured"
    sign = "+" if signed else ""
    text = f"{value:{sign}.4g}" if abs(value) < 1e4 else f"{value:{sign}.0f}"
    return f"{text}{unit}"
