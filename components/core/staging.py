"""Hidden staging directories that name their owner, so leftovers of killed runs go.

A run writes into `<prefix><uuid>.<pid>.<host>` and renames it into place when done; a
run killed midway leaves it behind. The next run removes such leftovers at once when
their owner is a process of this host that no longer exists, and, with `older_than_s`,
any leftover that old (its owner may be on another host sharing the directory, or its
pid reused, or it was named before owners were recorded).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

HOST = socket.gethostname().replace("/", "_")
STALE_S = 24 * 3600  # a leftover this old goes, whoever made it


def owned_name(prefix: str) -> str:
    """A fresh staging directory name that records this process and host."""
    return f"{prefix}{uuid.uuid4().hex}.{os.getpid()}.{HOST}"


def owner_gone(name: str, prefix: str) -> bool:
    """Whether the staging directory `name` belongs to a process of this host that no
    longer exists."""
    parts = name[len(prefix):].split(".", 2)
    if not name.startswith(prefix) or len(parts) != 3 or parts[2] != HOST or (
            not parts[1].isdigit()):
        return False  # another host's, or an older name: only age tells
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_abandoned(directory: Path, prefix: str, older_than_s: float | None = None
                     ) -> None:
    """Removes the staging directories under `directory` whose owner is gone (or that are
    older than `older_than_s`). Symlinks and files are left alone."""
    cutoff = time.time() - older_than_s if older_than_s is not None else None
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            if not (entry.name.startswith(prefix) and not entry.is_symlink()
                    and entry.is_dir()):
                continue
            if owner_gone(entry.name, prefix) or (
                    cutoff is not None and entry.stat().st_mtime < cutoff):
                shutil.rmtree(entry, ignore_errors=True)
