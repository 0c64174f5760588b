"""Give freed heap memory back to the machine.

glibc's malloc keeps what a process frees in its arenas for later use instead of returning
it to the kernel. Loading and running a large frozen model allocates several transient
copies of its constants (the GraphDef as imported, Grappler's working copies, the
executor's tensors): ResNet50's 100 MB of weights left a verifying process at 3.1 GB after
its Session was closed, 1.7 GB after `malloc_trim(0)`. Each pipeline step verifies several
models one after another, beside a oneDNN-off child doing the same, so memory freed but
kept adds up across processes. `release_freed_memory` is called where a model's Session or
a Grappler run has just ended.

Only glibc has `malloc_trim`; elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
from collections.abc import Iterable
from pathlib import Path

# A full garbage collection costs about 0.3 s once TensorFlow is imported: worth it to free
# a large model's graph (held in reference cycles by a closed Session's tf.Graph: 0.2 GB
# of ResNet50's), not after every small model a test suite runs.
LARGE_MODEL_BYTES = 32 << 20


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory(models: Iterable[str | os.PathLike] = ()) -> bool:
    """Returns the free pages of malloc's arenas to the kernel; True where it could. Where
    `models` (SavedModel directories or model files just dropped) are large together
    (LARGE_MODEL_BYTES), unreachable Python objects are freed first."""
    if sum(model_bytes(Path(model)) for model in models) >= LARGE_MODEL_BYTES:
        gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def model_bytes(path: Path) -> int:
    """The size of a model's graph and weights: its saved_model.pb (a frozen model's
    weights live there), variables and model.tflite; a file's own size; 0 if gone."""
    try:
        if path.is_file():
            return path.stat().st_size
        files = [path / "saved_model.pb", path / "model.tflite",
                 *(path / "variables").glob("variables.data-*")]
        return sum(f.stat().st_size for f in files if f.is_file())
    except OSError:
        return 0
