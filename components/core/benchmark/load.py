"""How busy the rest of the machine was while a window was measured.

Interleaving cancels drift that moves every model alike; it does not cancel load that
slows runtimes differently. A TFLite row runs a request on one thread, a Session row on
every core: another process taking a core slows the Session far more (on the demo CNN a
full-int8 TFLite variant measured 2.3x the Trainer's Session at batch 100 on an idle
2-core machine and 4.0x beside a busy process). So every window records the share of the
machine's CPU time that other processes took while it ran, and the gate says so when a
ranking between runtimes with different thread counts rests on busy windows.

Linux only (/proc/stat); elsewhere the share is unknown (None).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

# A window is busy when other processes took more than this share of the machine's CPU
# time: on 2 cores, 0.25 is half a core taken from the measurement.
BUSY_SHARE = 0.25
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_seconds() -> float | None:
    """CPU seconds every CPU spent not idle since boot (/proc/stat, first line: user nice
    system idle iowait irq softirq steal ...; steal is time the hypervisor gave away)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class CpuMeter:
    """Started before a window, `other_share()` after it: the share of the machine's CPU
    capacity (wall time x cores) that processes other than this one used meanwhile."""

    machine: float | None
    own: float
    wall: float

    @classmethod
    def start(cls) -> CpuMeter:
        return cls(_machine_busy_seconds(), _own_seconds(), time.perf_counter())

    def other_share(self) -> float | None:
        machine = _machine_busy_seconds()
        wall = time.perf_counter() - self.wall
        if machine is None or self.machine is None or wall <= 0:
            return None
        others = (machine - self.machine) - (_own_seconds() - self.own)
        return min(1.0, max(0.0, others / (wall * (os.cpu_count() or 1))))

