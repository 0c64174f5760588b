"""Where the ranking was measured, against where the chosen pair will serve.

Which (variant, configuration) pair is fastest depends on the CPU: int8 kernels use VNNI
dot products where the CPU has them (XNNPACK for TFLite, oneDNN for TF), bf16 graphs run on
bf16 units (avx512_bf16, AMX) and are emulated, slowly, without them, and AVX-512 widens
every kernel. A ranking measured on a CPU with such a feature is not the serving nodes'
ranking when they lack it (or the reverse). The check informs; it cannot block, since the
serving nodes may still run every candidate correctly (the `server` check refuses those
that cannot run there at all).
"""

from __future__ import annotations

from components.core.benchmark.schema import MachineInfo
from components.core.gate.decision import NOTE, Check
from components.core.gate.thresholds import ServerProfile

THRESHOLD = "measured_on"
# Feature groups that change rankings: a CPU has the group when it has any of its flags.
RANKING_FEATURES: dict[str, tuple[str, ...]] = {
    "bf16 units": ("avx512_bf16", "amx_bf16"),
    "VNNI int8 dot products": ("avx512_vnni", "avx_vnni", "amx_int8"),
    "AVX-512": ("avx512f",),
}


def measured_on(machine: MachineInfo | None) -> dict | None:
    """The CPU the benchmark measured on, as the decision records it."""
    if machine is None:
        return None
    return {"cpu_model": machine.cpu_model, "cores": machine.cores,
            "cpu_features": (None if machine.cpu_features is None
                             else sorted(machine.cpu_features))}


def ranking_cpu_check(machine: MachineInfo | None, server: ServerProfile) -> Check:
    """A run-wide, informational check: does the measuring CPU differ from the serving
    nodes (server.cpu_features) in a feature that changes rankings?"""
    measured = None if machine is None else machine.cpu_features
    if measured is None:
        return Check(THRESHOLD, None, None, None, True,
                     "not applicable: the benchmark recorded no CPU features",
                     kind=NOTE, applicable=False)
    if server.cpu_features is None:
        return Check(THRESHOLD, None, sorted(measured), None, True,
                     "not applicable: server.cpu_features not given (the serving nodes "
                     "are taken to be the measuring machine type)", kind=NOTE,
                     applicable=False)
    mine, theirs = set(measured), set(server.cpu_features)
    cpu = f"{machine.cpu_model}, {machine.cores} cores"
    differences = []
    for group, flags in RANKING_FEATURES.items():
        has, serving_has = bool(mine & set(flags)), bool(theirs & set(flags))
        if has != serving_has:
            named = "/".join(sorted((mine if has else theirs) & set(flags)))
            differences.append(
                f"the ranking was measured on a CPU {'with' if has else 'without'} {group} "
                f"({named}); the serving nodes {'lack' if has else 'have'} it")
    if not differences:
        return Check(THRESHOLD, None, sorted(measured), sorted(theirs), True,
                     f"measured on {cpu}: the serving nodes (server.cpu_features) have the "
                     "same features that change rankings (bf16, VNNI, AVX-512)",
                     kind=NOTE)
    return Check(THRESHOLD, None, sorted(measured), sorted(theirs), True,
                 f"measured on {cpu}: {'; '.join(differences)}; the best pair there may "
                 "differ: measure on the serving machine type", kind=NOTE)
