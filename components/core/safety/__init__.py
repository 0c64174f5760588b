"""Which ops a model runs, and whether it may run them: the safety scan every command
runs before it loads an untrusted model (optimize, the benchmark, the gate, push).

- `scan_ops` / `refuse_unsafe` (scan.py): what TF Serving's loader and the serving
  signatures run, checked against the allowlist.
- op_classes.py / op_table.py: the allowlist, derived from TF's op registry.
"""

from components.core.safety.op_classes import COMPUTE, FILES, NETWORK, PYTHON, op_category
from components.core.safety.scan import (
    MAX_NODES,
    NOT_AN_ASSET,
    NOT_OWN_CHECKPOINT,
    OpScan,
    refuse_unsafe,
    scan_ops,
)

__all__ = ["COMPUTE", "FILES", "MAX_NODES", "NETWORK", "NOT_AN_ASSET", "NOT_OWN_CHECKPOINT",
           "PYTHON", "OpScan", "op_category", "refuse_unsafe", "scan_ops"]
