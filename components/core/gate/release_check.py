"""The gate's checks before a promotion: the canary against the stable version, both
measured in the same benchmark run (paired: same machine, same moment, same inputs).

The stable version is the baseline (the benchmark's first model), the canary the one
candidate: the gate's `vs_baseline` thresholds (accuracy drop, top-1 agreement, speedup
decided on its confidence interval) and `value` thresholds judge it, as they judge a
candidate against the Trainer's model. Before that, the canary's warm-up requests are
replayed as TF Serving replays them at load (its load check): a version whose warm-up
fails never becomes available, and cannot be promoted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from components.core.gate.thresholds import Thresholds


def promotion_check(destination: str | Path, thresholds: Thresholds, benchmark=None,
                    examples: str | Path | None = None, allowed_ops: Iterable[str] = (),
                    progress: Callable[[str], None] | None = None
                    ) -> Callable[[int, int], None]:
    """A `check(stable, canary)` for release.promote: raises GateBlocked (the gate's
    summary) when the canary may not replace the stable version. `benchmark`: a
    BenchmarkConfig (default: the packaged benchmark.yaml, without the configuration
    search: the versions are compared as they are configured). `examples`: eval examples
    (accuracy needs labelled ones); without them the inputs are generated."""
    allowed = tuple(sorted(set(allowed_ops)))

    def check(stable: int, canary: int) -> None:
        from components.core.benchmark.config import BenchmarkConfig, ModelSpec
        from components.core.benchmark.run import run_benchmark
        from components.core.gate.gate import evaluate_gate
        from components.core.gate.warmup import (
            WARMUP_DIR,
            WARMUP_FILE,
            read_warmup_file,
            replay_warmup,
        )

        base = Path(destination)
        canary_dir = base / str(canary)
        carried = canary_dir / WARMUP_DIR / WARMUP_FILE
        if carried.is_file():
            replay_warmup(canary_dir, read_warmup_file(carried), None, allowed)
        config = benchmark or replace(BenchmarkConfig.from_yaml(), search_budget_s=0)
        if examples is not None:
            config = replace(config, examples=Path(examples))
        elif config.examples is None:
            config = replace(config, label_key=None)  # no labels without examples
        stable_name, canary_name = f"stable-{stable}", f"canary-{canary}"
        metrics = run_benchmark([ModelSpec(stable_name, base / str(stable)),
                                 ModelSpec(canary_name, canary_dir)], config, progress)
        decision = evaluate_gate(metrics, thresholds, {canary_name: canary_dir},
                                 allowed_ops=allowed)
        decision.raise_if_blocked()

    return check
