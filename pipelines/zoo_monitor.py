"""Time and memory of each stage of a pipeline run, read from /proc (Linux; no psutil).

`ProcessTreeMonitor` samples the process tree under one process (the `kfp run-local`
run) every `interval_s`: each descendant is attributed to the stage of its nearest
ancestor (or itself) whose command line names one (kfp.local runs each task as
`python -m kfp.dsl.executor_main ... --function_to_execute NAME`; the benchmark's workers
are children of its task), else to `orchestrator`. Per stage it records when it was
first and last seen (its wall time, to the sampling interval), the largest sum of the
memory of its processes in one sample (what the stage held at once), and the largest
single process's peak (VmHWM, exact between samples too). For the whole tree: the largest
sum in one sample.

A process's memory is its proportional set size (Pss, /proc/PID/smaps_rollup): its own
pages, plus each page it shares divided by the number of processes sharing it. Summing
VmRSS instead counts TensorFlow's shared libraries once per process (about 500 MB each,
read-only and in memory once); the sum of Pss is what the processes take from the machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from components.core.benchmark.memory import PROC, process_memory, read_proc_file

ORCHESTRATOR = "orchestrator"


def kfp_task_name(cmdline: list[str]) -> str | None:
    """The kfp.local task a command line runs (`--function_to_execute NAME`), else None."""
    for index, arg in enumerate(cmdline[:-1]):
        if arg == "--function_to_execute":
            return cmdline[index + 1]
    for arg in cmdline:  # kfp.local may wrap the command in `sh -c "..."`
        if "--function_to_execute" in arg:
            words = arg.split()
            at = words.index("--function_to_execute") if "--function_to_execute" in words \
                else -1
            if 0 <= at < len(words) - 1:
                return words[at + 1].strip("'\"")
    return None


def parent_pids(proc: Path = PROC) -> dict[int, int]:
    """pid -> its parent's pid, for every process now."""
    parents = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_proc_file(entry / "stat")
        if stat:  # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 1:
                parents[int(entry.name)] = int(fields[1])
    return parents


def memory_kib(pid: int, proc: Path = PROC) -> tuple[int, int]:
    """(Pss, VmHWM) of `pid` in KiB; (0, 0) when it is gone. Pss falls back to VmRSS
    where smaps_rollup cannot be read (kernels before 4.14); see benchmark.memory."""
    memory = process_memory(pid, proc)
    return memory.pss_bytes // 1024, memory.peak_rss_bytes // 1024


def command_line(pid: int, proc: Path = PROC) -> list[str]:
    text = read_proc_file(proc / str(pid) / "cmdline") or ""
    return [part for part in text.split("\0") if part]


@dataclass
class StageUsage:
    first_seen_s: float
    last_seen_s: float
    peak_memory_bytes: int = 0  # the largest sum of its processes' Pss in one sample
    peak_process_bytes: int = 0  # the largest VmHWM of one of its processes
    processes: int = 0

    @property
    def wall_s(self) -> float:
        return self.last_seen_s - self.first_seen_s

    def to_dict(self) -> dict:
        return {"wall_s": round(self.wall_s, 1), "start_s": round(self.first_seen_s, 1),
                "peak_memory_bytes": self.peak_memory_bytes,
                "peak_process_bytes": self.peak_process_bytes, "processes": self.processes}


@dataclass
class ProcessTreeMonitor:
    """Samples the tree under `root_pid` in a thread, from `start()` to `stop()`."""

    root_pid: int
    interval_s: float = 0.5
    stage_of: Callable[[list[str]], str | None] = kfp_task_name
    proc: Path = PROC
    stages: dict[str, StageUsage] = field(default_factory=dict)
    peak_memory_bytes: int = 0  # the whole tree, the largest Pss sum in one sample
    _started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _labels: dict[int, str | None] = field(default_factory=dict)
    _seen: dict[str, set[int]] = field(default_factory=dict)

    def start(self) -> ProcessTreeMonitor:
        self._started = time.monotonic()
        self.sample()  # at once: a step that fails fast ends before the first interval
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()  # the last state

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def _label(self, pid: int, parents: dict[int, int]) -> str:
        """The stage of `pid`: its own or its nearest ancestor's (below the root)."""
        chain, current = [], pid
        while current != self.root_pid and current in parents and current > 1:
            chain.append(current)
            current = parents[current]
        for member in chain:  # nearest first
            if member not in self._labels:
                self._labels[member] = self.stage_of(command_line(member, self.proc))
            if self._labels[member]:
                return self._labels[member]
        return ORCHESTRATOR

    def sample(self) -> None:
        now = time.monotonic() - self._started
        parents = parent_pids(self.proc)
        children: dict[int, list[int]] = {}
        for pid, parent in parents.items():
            children.setdefault(parent, []).append(pid)
        tree, todo = [], [self.root_pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, ()))
        by_stage: dict[str, list[tuple[int, int, int]]] = {}
        for pid in tree:
            pss, hwm = memory_kib(pid, self.proc)
            if pss == 0 and hwm == 0:
                continue
            stage = ORCHESTRATOR if pid == self.root_pid else self._label(pid, parents)
            by_stage.setdefault(stage, []).append((pid, pss, hwm))
        total = 0
        for stage, members in by_stage.items():
            usage = self.stages.setdefault(stage, StageUsage(now, now))
            usage.last_seen_s = now
            pss_sum = sum(pss for _, pss, _ in members) * 1024
            total += pss_sum
            usage.peak_memory_bytes = max(usage.peak_memory_bytes, pss_sum)
            usage.peak_process_bytes = max(usage.peak_process_bytes,
                                           max(hwm for _, _, hwm in members) * 1024)
            self._seen.setdefault(stage, set()).update(pid for pid, _, _ in members)
            usage.processes = len(self._seen[stage])
        self.peak_memory_bytes = max(self.peak_memory_bytes, total)
