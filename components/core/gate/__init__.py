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

from components.core.benchmark.schema import load_metrics
from components.core.gate.decision import (
    CandidateResult,
    Check,
    GateBlocked,
    GateDecision,
)
from components.core.gate.gate import evaluate_gate
from components.core.gate.metrics import candidate_paths
from components.core.gate.push import PushResult, checked_destination, push_model, versions
from components.core.gate.report import candidate_table, decision_table, log_lines, pairs_table
from components.core.gate.thresholds import (
    BaselineThresholds,
    ServedThresholds,
    ServerProfile,
    Thresholds,
    ValueThresholds,
)
from components.core.gate.warmup import read_warmup_file, warmup_logs, write_warmup_file
from components.core.safety import OpScan, scan_ops

__all__ = [
    "BaselineThresholds", "CandidateResult", "Check", "GateBlocked", "GateDecision",
    "OpScan", "PushResult", "ServedThresholds", "Thresholds",
    "ServerProfile", "ValueThresholds", "candidate_paths", "candidate_table",
    "checked_destination", "decision_table", "evaluate_gate",
    "load_metrics", "log_lines", "pairs_table", "push_model", "read_warmup_file", "scan_ops",
    "versions", "warmup_logs", "write_warmup_file",
]
