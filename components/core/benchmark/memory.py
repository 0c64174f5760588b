"""What processes hold in memory (Linux /proc), and the memory budget the benchmark's
workers share.

A process's memory here is two figures from /proc/PID/smaps_rollup:
- **Pss** (proportional set size): a page shared by N processes counts 1/N in each, so a
  sum over workers counts TensorFlow's shared libraries (about 500 MB) once, not once per
  worker as VmRSS would;
- **private** (Private_Clean + Private_Dirty): what this process alone holds, i.e. what
  one more worker like it adds to the machine (the shared pages are already there).
Where smaps_rollup cannot be read (kernels before 4.14) both are VmRSS, which counts
more than either: safe for a budget.

The budget (BenchmarkConfig.memory_budget_mb) bounds what the workers hold at once, within
what the machine (or the container's cgroup: a KFP pod's memory limit) has available. The
benchmark keeps the baseline and the served version running and starts the candidates in
groups that fit next to them (run.BenchmarkSession, `plan_group`): every group is measured
in interleaved rounds with the baseline and the served version, so every speedup stays
paired.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
# Of the memory the machine has available when the benchmark starts, the share its
# workers may take: the rest is for the benchmark's own process (FLOPs, accuracy) and
# whatever else runs there.
AVAILABLE_SHARE = 0.8
MB = 1 << 20


def read_proc_file(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # gone, or not readable
        return None


def proc_fields(text: str, keys: Sequence[str]) -> dict[str, int]:
    """`Key:  123 kB` lines of a /proc file, in KiB."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in keys and rest.split():
            values[key] = int(rest.split()[0])
    return values


@dataclass(frozen=True)
class ProcessMemory:
    pss_bytes: int
    private_bytes: int
    peak_rss_bytes: int  # VmHWM: the kernel's own high-water mark of its resident set
    rss_bytes: int = 0  # VmRSS now

    @property
    def peak_private_bytes(self) -> int:
        """What it held privately at its peak (loading a model holds transient copies of
        its graph): the peak resident set less the pages it shares now."""
        return max(self.private_bytes,
                   self.peak_rss_bytes - max(self.rss_bytes - self.private_bytes, 0))


def process_memory(pid: int, proc: Path = PROC) -> ProcessMemory:
    """What `pid` holds now (zeros when it is gone); see the module docstring."""
    status = proc_fields(read_proc_file(proc / str(pid) / "status") or "", ("VmRSS", "VmHWM"))
    rollup = proc_fields(read_proc_file(proc / str(pid) / "smaps_rollup") or "",
                         ("Pss", "Private_Clean", "Private_Dirty"))
    rss = status.get("VmRSS", 0)
    pss = rollup.get("Pss", rss)
    private = (rollup["Private_Clean"] + rollup.get("Private_Dirty", 0)
               if "Private_Clean" in rollup else rss)
    return ProcessMemory(pss * 1024, private * 1024, status.get("VmHWM", 0) * 1024, rss * 1024)


def available_bytes(proc: Path = PROC, cgroup: Path = Path("/sys/fs/cgroup")) -> float:
    """Memory this process may still take: MemAvailable, or less where its cgroup (v2:
    memory.max less memory.current) limits it; inf where neither can be read."""
    meminfo = proc_fields(read_proc_file(proc / "meminfo") or "", ("MemAvailable",))
    available = meminfo["MemAvailable"] * 1024 if "MemAvailable" in meminfo else math.inf
    limit = (read_proc_file(cgroup / "memory.max") or "max").strip()
    current = (read_proc_file(cgroup / "memory.current") or "").strip()
    if limit.isdigit() and current.isdigit():
        available = min(available, int(limit) - int(current))
    return available


def workers_budget_bytes(memory_budget_mb: float | None,
                         available: Callable[[], float] = available_bytes) -> float:
    """What the workers may hold together: the setting (None: no limit of its own), never
    more than AVAILABLE_SHARE of what the machine has available now."""
    setting = math.inf if memory_budget_mb is None else memory_budget_mb * MB
    return min(setting, AVAILABLE_SHARE * available())


# Before any worker was measured: what one is assumed to hold, TensorFlow's runtime plus
# PRIOR_SIZE_FACTOR times its model's size on disk. Frozen ResNet50 (100 MB) measured 1.0
# to 1.7 GB private after its largest requests and about 1 GB more while it loaded; a tiny
# model's worker, about 0.3 GB. Only which workers start with the baseline rests on it:
# every load is checked against what the running workers were measured to hold.
PRIOR_RUNTIME_BYTES = 300 * MB
PRIOR_SIZE_FACTOR = 20


def prior_estimate(size_bytes: int) -> int:
    """What a worker for a model of `size_bytes` on disk is assumed to hold, unmeasured."""
    return PRIOR_RUNTIME_BYTES + PRIOR_SIZE_FACTOR * size_bytes


def plan_group(pending: Sequence[str], estimate: Callable[[str], int],
               room: float) -> list[str]:
    """The next group: the longest run of `pending`, in order, whose estimated memory
    fits in `room` bytes; at least one row (each candidate is measured, if alone)."""
    group, used = [], 0
    for name in pending:
        if group and used + estimate(name) > room:
            break
        group.append(name)
        used += estimate(name)
    return group


@dataclass
class MemoryPlan:
    """The budget of one benchmark's workers and what each row was measured to hold."""

    room: float  # bytes the workers may hold together (inf: no limit)
    runtimes: dict[str, str]  # row -> its runtime ("tensorflow", "tflite")
    private: dict[str, int] = field(default_factory=dict)  # row -> its private bytes
    # row -> what its worker held privately while loading, above what it holds after
    transient: dict[str, int] = field(default_factory=dict)

    @property
    def limited(self) -> bool:
        return not math.isinf(self.room)

    def record(self, name: str, runner) -> None:
        """What the worker of `name` holds now (after its load and its largest requests)
        and what loading it took above that."""
        pid = runner_pid(runner)
        if pid is not None:
            memory = process_memory(pid)
            self.private[name] = memory.private_bytes
            self.transient[name] = memory.peak_private_bytes - memory.private_bytes

    def estimate(self, name: str) -> int:
        """What a worker for `name` will add once loaded: the most a measured row of its
        runtime holds privately, else the most any measured row holds (the baseline's
        first)."""
        return _like(name, self.private, self.runtimes)

    def load_headroom(self, names: Iterable[str]) -> int:
        """Room to keep free while loading any of `names`, one at a time: the largest
        transient of their runtimes (a frozen ResNet50's worker peaks about 1 GB above
        what it holds once loaded, while TensorFlow optimizes its graph)."""
        return max((_like(name, self.transient, self.runtimes) for name in names), default=0)

    def held(self, runners: Iterable) -> int:
        """What the running workers of `runners` hold together (Pss: shared pages once)."""
        pids = [runner_pid(runner) for runner in runners]
        return sum(process_memory(pid).pss_bytes for pid in pids if pid is not None)


def _like(name: str, measured: dict[str, int], runtimes: dict[str, str]) -> int:
    """The most `measured` holds for a row of `name`'s runtime, else for any row."""
    same = [value for row, value in measured.items()
            if runtimes.get(row) == runtimes.get(name)]
    return max(same or measured.values() or [0])


def runner_pid(runner) -> int | None:
    """The process a runner's model runs in: a worker's, a started TF Serving's; None
    where it runs elsewhere (a host's TF Serving)."""
    return getattr(runner, "pid", None)
