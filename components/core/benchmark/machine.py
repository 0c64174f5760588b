"""The machine and software a benchmark ran on: results mean little without them."""

from __future__ import annotations

import platform
from pathlib import Path

from components.core.benchmark.config import available_cores
from components.core.benchmark.schema import MachineInfo


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> MachineInfo:
    from components.core.tf_setup import tf

    return MachineInfo(cpu_model=cpu_model(), cores=available_cores(),
                       tensorflow_version=tf.__version__,
                       python_version=platform.python_version(),
                       platform=platform.platform())
