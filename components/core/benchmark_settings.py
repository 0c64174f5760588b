"""Benchmark settings from YAML (configs/benchmark.yaml) and from component parameters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.core.benchmark import BenchmarkConfig
from components.core.config import fill_dataclass, read_yaml

DEFAULT_BENCHMARK = Path(__file__).resolve().parents[2] / "configs" / "benchmark.yaml"


@dataclass
class BenchmarkSettings:
    """The YAML/parameter view of BenchmarkConfig (lists instead of tuples)."""

    backend: str = "session"
    batch_sizes: list[int] = field(default_factory=lambda: [1, 100])
    concurrency: list[int] = field(default_factory=lambda: [1, 2])
    warmup_requests: int = 10
    window_requests: int = 50
    window_seconds: float | None = 1.0  # None: windows of window_requests requests
    rewarm_requests: int = 3
    max_windows: int = 10
    stability_percent: float = 10.0
    signature: str = "serving_default"
    label_key: str | None = None
    intra_op_threads: int | None = None  # None: every core, as TF Serving's default
    inter_op_threads: int | None = None
    allowed_ops: list[str] = field(default_factory=list)  # unsafe op types models may run

    @classmethod
    def from_yaml(cls, path: str | Path = DEFAULT_BENCHMARK,
                  section: str | None = None) -> BenchmarkSettings:
        data = read_yaml(path)
        values = data.get(section) or {} if section else data
        return fill_dataclass(cls, values, path, section or "benchmark")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config(self, examples: Path | None = None,
               beam_pipeline_args: tuple[str, ...] = ()) -> BenchmarkConfig:
        threads = {k: v for k, v in (("intra_op_threads", self.intra_op_threads),
                                     ("inter_op_threads", self.inter_op_threads))
                   if v is not None}
        return BenchmarkConfig(
            **threads,
            backend=self.backend, batch_sizes=tuple(self.batch_sizes),
            concurrency=tuple(self.concurrency), warmup_requests=self.warmup_requests,
            window_requests=self.window_requests, window_seconds=self.window_seconds,
            rewarm_requests=self.rewarm_requests, max_windows=self.max_windows,
            stability_percent=self.stability_percent, signature=self.signature,
            examples=examples, label_key=self.label_key if examples else None,
            beam_pipeline_args=tuple(beam_pipeline_args),
            allowed_ops=tuple(self.allowed_ops))
