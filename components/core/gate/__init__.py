"""PusherGate library: decide whether (and which) optimized model may be pushed, and push it.

- `Thresholds` (thresholds.py): what a candidate must satisfy, from YAML or a dict.
- `evaluate_gate` (gate.py): checks every (candidate, TF Serving configuration) pair the
  benchmark measured against its metrics, the served model, the blessings and the safety
  scan; returns a `GateDecision` (the chosen pair, its whole server command once
  `with_destination` knows where it is pushed); `pairs_table` and `log_lines` (report.py)
  show it.
- `scan_ops` (components/core/safety/, re-exported): ops a model runs that do more than
  compute; `refuse_unsafe` runs it before optimize, the benchmark or push touches
  a model.
- `push_model` (push.py): publishes a SavedModel as a new TF Serving version, atomically.
No TFX import here: the TFX component and the CLI are adapters over these functions.
"""

import importlib

# Name -> the module that defines it, imported on first use: the thresholds, the metrics
# reader and the decision load without TensorFlow, so a command refuses a bad argument
# before TensorFlow is loaded (the safety scan, the push and the warm-ups need it).
_EXPORTS = {
    "load_metrics": "components.core.benchmark.schema",
    "CandidateResult": "components.core.gate.decision", "Check": "components.core.gate.decision",
    "GateBlocked": "components.core.gate.decision",
    "GateDecision": "components.core.gate.decision",
    "evaluate_gate": "components.core.gate.gate",
    "candidate_paths": "components.core.gate.metrics",
    "PushResult": "components.core.gate.push",
    "checked_destination": "components.core.gate.push",
    "push_model": "components.core.gate.push", "versions": "components.core.gate.push",
    "candidate_table": "components.core.gate.report",
    "decision_table": "components.core.gate.report",
    "log_lines": "components.core.gate.report", "pairs_table": "components.core.gate.report",
    "BaselineThresholds": "components.core.gate.thresholds",
    "ServedThresholds": "components.core.gate.thresholds",
    "ServerProfile": "components.core.gate.thresholds",
    "Thresholds": "components.core.gate.thresholds",
    "ValueThresholds": "components.core.gate.thresholds",
    "read_warmup_file": "components.core.gate.warmup",
    "warmup_logs": "components.core.gate.warmup",
    "write_warmup_file": "components.core.gate.warmup",
    "OpScan": "components.core.safety", "scan_ops": "components.core.safety",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
