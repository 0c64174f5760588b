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


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory(collect_garbage: bool = False) -> bool:
    """Returns the free pages of malloc's arenas to the kernel; True where it could.
    `collect_garbage` first frees unreachable Python objects (a closed Session's tf.Graph
    is held in reference cycles, with its constants)."""
    if collect_garbage:
        gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
