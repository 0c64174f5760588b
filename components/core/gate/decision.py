"""The gate's decision: every check made, the candidate chosen and why.

`GateDecision.to_dict()` is what decision.json holds; `summary_lines()` is for logs (with the
pairs table: report.log_lines, which sits above this module).
A candidate passes when every check on it passes, and so do the run-wide checks
(blessings, candidate None). Not-applicable checks (e.g. against a served model on the
first push) pass and are recorded with the reason they do not apply.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict, dataclass, field, replace

from components.core.errors import ServoptError
from components.core.serving_config import (  # noqa: F401 (re-exported)
    GRPC_PORT,
    MODEL_BASE_PATH_PLACEHOLDER,
    REST_API_PORT,
    SERVER_BINARY,
    server_command,
)

REQUIREMENT = "requirement"  # benchmark result present, stable latency, safe ops, blessing
VALUE = "value"  # TFMA value threshold: a bound on the candidate's own measurement
CHANGE = "change"  # TFMA change threshold: against the baseline or the served model
NOTE = "note"  # informs, never blocks (e.g. the ranking was measured on another CPU)

# Placeholders in the command of a decision made without a destination (`servopt gate`):
# shell variables, as TF Serving's Docker entrypoint names them.
MODEL_NAME_VAR = "${MODEL_NAME}"
MODEL_BASE_PATH_VAR = "${MODEL_BASE_PATH}"


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
    """One (version, TF Serving configuration) pair: `name` is the version for its default
    configuration, `version:label` for a configuration the benchmark's search measured."""

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
    version: str | None = None  # the model pushed (None in old decisions: `name`)
    label: str = "default"  # the configuration's label (ServingConfig.label)
    configuration: dict | None = None  # ServingConfig.to_dict(); None: not recorded
    # At the primary batch size: p50_ms, p99_ms, throughput, speedup_p50 and its interval.
    figures: dict = field(default_factory=dict)
    # At each batch size of the traffic profile: the same figures and the requests the
    # percentiles came from; and the profile's objective over them (e.g. the
    # request-weighted mean p50). Empty / None in decisions made before profiles.
    per_batch: dict[int, dict] = field(default_factory=dict)
    weighted: float | None = None

    @property
    def model(self) -> str:
        return self.version or self.name


@dataclass
class GateDecision:
    blessed: bool  # True: push `chosen`; False: push nothing
    chosen: str | None  # the version (model) to push
    chosen_path: str | None
    reason: str  # why `chosen`, or why nothing is pushed
    primary_batch_size: int  # the traffic profile's batch size most requests carry
    objective: list[str]  # the profile's objective first, then the tie-breakers
    first_push: bool  # no model served yet: checks against it did not apply
    candidates: list[CandidateResult]  # passing pairs best first, then the blocked ones
    checks: list[Check]
    thresholds: dict = field(default_factory=dict)
    server_flags: list[str] = field(default_factory=list)  # the chosen one's, to serve it
    environment: dict[str, str] = field(default_factory=dict)
    signatures: list[str] = field(default_factory=list)  # what the pushed version serves
    runtime: str | None = None  # the runtime the server runs it on: warm-ups replay there
    chosen_pair: str | None = None  # the chosen pair's name (CandidateResult.name)
    row: str | None = None  # the benchmark row the chosen pair was measured as
    label: str | None = None  # the chosen configuration's label
    configuration: dict | None = None  # the chosen configuration (ServingConfig.to_dict())
    # The whole command that serves the pushed version (environment first); empty until
    # the destination is known (with_destination).
    server_command: list[str] = field(default_factory=list)
    measured_on: dict | None = None  # the benchmark's CPU: cpu_model, cores, cpu_features
    traffic: dict | None = None  # the traffic profile judged on (TrafficProfile.to_dict())
    # Why the version served now stays although `chosen` passed (vs_served.served_stays):
    # nothing new is pushed. None: push `chosen`.
    served_stays: str | None = None

    def chosen_candidate(self) -> CandidateResult | None:
        """The chosen pair."""
        return self.candidate(self.chosen_pair or self.chosen) if self.chosen else None

    def command_for(self, model_base_path: str, model_name: str) -> list[str]:
        """The tensorflow_model_server command (environment assignments first) that serves
        the chosen pair from `model_base_path` (the directory holding its versions)."""
        return server_command(self.server_flags, model_base_path, model_name,
                              self.environment)

    def with_destination(self, base_dir: str, model_name: str | None = None) -> GateDecision:
        """This decision with its server command for the push destination: versions go
        into `base_dir/model_name` (or `base_dir`), served under `model_name` (default: that
        directory's name, as in TF Serving's Docker image)."""
        if not self.blessed:
            return self
        path = f"{str(base_dir).rstrip('/')}/{model_name}" if model_name else str(base_dir)
        if "://" not in path:
            path = os.path.abspath(path)
        name = model_name or path.rstrip("/").rsplit("/", 1)[-1]
        return replace(self, server_command=self.command_for(path, name))

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
                      "candidates": [CandidateResult(**{
                          **c, "per_batch": {int(b): f for b, f in
                                             (c.get("per_batch") or {}).items()}})
                                     for c in data["candidates"]],
                      "checks": [Check(**c) for c in data["checks"]]})

    def summary_lines(self, table: str | None = None) -> list[str]:
        """The decision for logs; `table`, the pairs table laid out as text, after the
        candidates (report.log_lines passes it; callers that print the table themselves
        leave it out)."""
        head = (f"PusherGate: blessed: push '{self.chosen}'" if self.blessed
                else "PusherGate: not blessed: nothing is pushed")
        lines = [head, f"  why: {self.reason}"]
        if self.measured_on:
            features = self.measured_on.get("cpu_features")
            lines.append(f"  measured on: {self.measured_on['cpu_model']}, "
                         f"{self.measured_on['cores']} cores"
                         + ("" if features is None else
                            f" (CPU features: {', '.join(features) or 'none listed'})"))
        if self.traffic:
            from components.core.traffic import TrafficProfile

            lines.append("  traffic profile: "
                         + TrafficProfile.from_dict(self.traffic, "decision").describe())
        run_wide = [c for c in self.checks if c.candidate is None and c.applicable]
        lines += [f"  {_verdict(c, 'BLOCKS ALL')}: {c.reason}" for c in run_wide]
        for result in self.candidates:
            if result.passed:
                count = sum(1 for c in self.checks_for(result.name) if c.applicable)
                values = ", ".join(f"{k} {fmt(v)}" for k, v in result.objective.items())
                lines.append(f"  candidate '{result.name}': passed {count} checks ({values})"
                             + _per_batch_text(result.per_batch))
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
        if table is not None:
            lines += ["  " + line if line else line for line in table.splitlines()]
        if self.blessed and self.served_stays:
            lines.append(f"  nothing new is pushed: '{self.chosen}' passed, but "
                         f"{self.served_stays}")
        if self.blessed:
            if self.signatures:
                lines.append(f"  '{self.chosen}' serves signatures: "
                             f"{', '.join(self.signatures)}")
            configuration = ("" if self.label in (None, "default")
                             else f" (configuration {self.label})")
            lines.append(f"  serve '{self.chosen}'{configuration} with: "
                         f"{self.serving_command()}")
        return lines

    def serving_command(self) -> str:
        """The whole tensorflow_model_server command line (environment first) that serves
        the pushed version; with ${MODEL_NAME} and ${MODEL_BASE_PATH} where the decision
        was made without a destination."""
        command = self.server_command or self.command_for(MODEL_BASE_PATH_VAR,
                                                          MODEL_NAME_VAR)
        return " ".join(_shell_word(word) for word in command)

    def raise_if_blocked(self) -> None:
        """Raises GateBlocked (with the summary) when nothing may be pushed."""
        if not self.blessed:
            raise GateBlocked("; ".join(line.strip() for line in
                                        self.summary_lines()[1:]))


def _shell_word(word: str) -> str:
    """`word` quoted for a shell, the ${MODEL_...} placeholders left to expand."""
    rest = word.replace(MODEL_NAME_VAR, "").replace(MODEL_BASE_PATH_VAR, "")
    if rest != word and (not rest or shlex.quote(rest) == rest):
        return word
    return shlex.quote(word)


def _per_batch_text(per_batch: dict) -> str:
    """'; batch 1: p50 0.08 ms, p99 0.2 ms; batch 100: ...' for the summary."""
    return "".join(f"; batch {size}: p50 {fmt(f.get('p50_ms'), ' ms')}, p99 "
                   f"{fmt(f.get('p99_ms'), ' ms')}" for size, f in sorted(per_batch.items()))


def _verdict(check: Check, failed: str) -> str:
    if check.kind == NOTE:
        return "note"
    return "ok" if check.passed else failed


def fmt(value: float | None, unit: str = "", signed: bool = False) -> str:
    """4 significant digits, without exponents for large values (21400000, not 2.14e+07)."""
    if value is None:
        return "not measured"
    sign = "+" if signed else ""
    text = f"{value:{sign}.4g}" if abs(value) < 1e4 else f"{value:{sign}.0f}"
    return f"{text}{unit}"
