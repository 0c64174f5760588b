"""Which ops a model runs, and whether it may run them: the safety scan every command
runs before it loads an untrusted model (optimize, the benchmark, the gate, push).

Modules, each above those it imports:
- categories.py: what an op may do (the allowlist's categories).
- libraries.py: the custom-op libraries TF Serving's model server links (TF Text with
  SentencePiece, TF Decision Forests' inference), and loading their ops here.
- op_classes.py: the classification rules, and the generator of op_table.py.
- op_table.py: the allowlist, generated from TF's op registry and the libraries'.
- allowlist.py: `op_category`, `register_libraries`: the lookup.
- scan.py: `scan_ops` / `refuse_unsafe`: what TF Serving's loader and the serving
  signatures run, checked against the allowlist.

The names below are exported lazily, so that `python -m components.core.safety.op_classes`
regenerates op_table.py without importing it.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "COMPUTE": "categories", "FILES": "categories", "NETWORK": "categories",
    "PYTHON": "categories", "op_category": "allowlist", "register_libraries": "allowlist",
    "MAX_NODES": "scan", "NOT_AN_ASSET": "scan", "NOT_OWN_CHECKPOINT": "scan",
    "OpScan": "scan", "refuse_unsafe": "scan", "scan_ops": "scan",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
