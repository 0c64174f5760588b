"""heap.release_freed_memory: what a process freed goes back to the machine (glibc)."""

from __future__ import annotations

import os

import pytest

from components.core.benchmark.memory import process_memory
from components.core.heap import release_freed_memory

MB = 1 << 20


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_freed_heap_pages_go_back_to_the_kernel():
    """300 MB in 4 KiB blocks (malloc's heap, not mmap), every 64th kept: the heap cannot
    shrink from its top, so glibc keeps the freed pages resident until malloc_trim."""
    blocks = [bytes(4000) + bytes([i % 251]) for i in range(75_000)]
    kept = blocks[::64]
    before = process_memory(os.getpid()).rss_bytes
    del blocks
    freed = process_memory(os.getpid()).rss_bytes
    assert release_freed_memory() is True  # glibc: Debian, TF's manylinux wheels
    after = process_memory(os.getpid()).rss_bytes
    assert before - after > 150 * MB, (before / MB, freed / MB, after / MB)
    assert len(kept) == 1172


def test_a_large_model_dropped_is_collected_first(tmp_path, monkeypatch):
    """A full collection (0.3 s with TensorFlow imported) runs for a large model only."""
    import gc

    from components.core import heap

    collected = []
    monkeypatch.setattr(gc, "collect", lambda *args: collected.append(1) or 0)
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir()
    large.mkdir()
    (small / "saved_model.pb").write_bytes(b"x" * 1000)
    with open(large / "saved_model.pb", "wb") as f:
        f.truncate(heap.LARGE_MODEL_BYTES)  # sparse: its size, not its pages
    assert heap.model_bytes(large) == heap.LARGE_MODEL_BYTES
    assert heap.model_bytes(tmp_path / "gone") == 0
    release_freed_memory([small])
    assert collected == []
    release_freed_memory([small, large])
    assert collected == [1]
