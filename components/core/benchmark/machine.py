"""The machine and software a benchmark ran on: results mean little without them."""

from __future__ import annotations

import platform
from pathlib import Path

from components.core.benchmark.config import available_cores
from components.core.benchmark.schema import MachineInfo
from components.core.requirements import cpu_flags


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# The /proc/cpuinfo flags that decide which variant and configuration win: VNNI (int8
# dot products), bf16 units, AVX-512 and AMX (TF turns oneDNN on by default with them).
RANKING_CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                        "amx_bf16", "amx_int8", "amx_tile")


def ranking_features(flags: set[str]) -> list[str]:
    return [feature for feature in RANKING_CPU_FEATURES if feature in flags]


def machine_info() -> MachineInfo:
    from components.core.tf_setup import tf

    return MachineInfo(cpu_model=cpu_model(), cores=available_cores(),
                       tensorflow_version=tf.__version__,
                       python_version=platform.python_version(),
                       platform=platform.platform(),
                       cpu_features=ranking_features(cpu_flags()))
