"""The TF Serving settings one benchmark row is measured with, and the flags that set them.

A `ServingConfig` is what the configuration search varies and what a pushed version needs
from its server. Each field is a `tensorflow_model_server` flag (tensorflow/serving
`model_servers/main.cc`, commit 9d981c5) or, for batching, a file beside the version:

- runtime "tensorflow" (saved_model.pb in a Session): `--tensorflow_intra_op_parallelism`,
  `--tensorflow_inter_op_parallelism` (0: TF's default, every core),
  `--mixed_precision=bfloat16` (saved_model_bundle_factory.cc turns on Grappler's
  auto_mixed_precision_onednn_bfloat16 for every model the server loads) and
  `--enable_batching` with per-model `batching_params.pbtxt` (see batching).
- runtime "tflite" (model.tflite under `--prefer_tflite_model=true`): `--num_tflite_pools`
  (default: the schedulable CPUs, server.h) and `--num_tflite_interpreters_per_pool`
  (default 1; > 1 splits large batches, see benchmark.engines).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from components.core.batching import BatchingParameters, batching_flags
from components.core.requirements import (
    MIXED_PRECISION_BF16_FLAG,
    PREFER_TFLITE_FLAG,
    TENSORFLOW_RUNTIME,
    TFLITE_RUNTIME,
)

DEFAULT_LABEL = "default"


@dataclass(frozen=True)
class ServingConfig:
    runtime: str = TENSORFLOW_RUNTIME
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    tflite_pools: int = 1
    tflite_interpreters_per_pool: int = 1
    mixed_precision: str | None = None  # "bfloat16": --mixed_precision=bfloat16
    batching: BatchingParameters | None = None  # --enable_batching, per model
    # What differs from the row's default configuration, e.g. {"tflite_interpreters_per_pool": 10}
    changed: tuple[str, ...] = field(default=(), compare=False)

    def flags(self) -> list[str]:
        """The tensorflow_model_server flags that run a model this way."""
        if self.runtime == TFLITE_RUNTIME:
            return [PREFER_TFLITE_FLAG, f"--num_tflite_pools={self.tflite_pools}",
                    f"--num_tflite_interpreters_per_pool={self.tflite_interpreters_per_pool}"]
        flags = [f"--tensorflow_intra_op_parallelism={self.intra_op_threads}",
                 f"--tensorflow_inter_op_parallelism={self.inter_op_threads}"]
        if self.mixed_precision == "bfloat16":
            flags.append(MIXED_PRECISION_BF16_FLAG)
        return flags + batching_flags(self.batching)

    def settings(self) -> dict[str, Any]:
        """The runtime's settings as measured (what metrics.json's `settings` holds)."""
        if self.runtime == TFLITE_RUNTIME:
            return {"num_tflite_pools": self.tflite_pools,
                    "num_tflite_interpreters_per_pool": self.tflite_interpreters_per_pool,
                    "threads_per_interpreter": 1, "delegate": "xnnpack"}
        settings: dict[str, Any] = {"intra_op_threads": self.intra_op_threads,
                                    "inter_op_threads": self.inter_op_threads}
        if self.mixed_precision:
            settings["mixed_precision"] = self.mixed_precision
        if self.batching:
            settings["batching"] = self.batching.to_dict()
        return settings

    def with_changes(self, **changes: Any) -> ServingConfig:
        """This configuration with `changes`, remembered as what differs from the default."""
        changed = tuple(dict.fromkeys((*self.changed, *changes)))
        return replace(self, changed=changed, **changes)

    def label(self) -> str:
        """"default", or what differs from it, e.g. "interpreters_per_pool=10"."""
        if not self.changed:
            return DEFAULT_LABEL
        parts = []
        for name in self.changed:
            value = getattr(self, name)
            if name == "batching":
                parts.append(value.label() if value else "no_batching")
            else:
                parts.append(f"{_SHORT.get(name, name)}={value}")
        return ",".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["batching"] = self.batching.to_dict() if self.batching else None
        data["changed"] = list(self.changed)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServingConfig:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if values.get("batching"):
            values["batching"] = BatchingParameters.from_dict(values["batching"])
        values["changed"] = tuple(values.get("changed", ()))
        return cls(**values)


_SHORT = {"intra_op_threads": "intra_op", "inter_op_threads": "inter_op",
          "tflite_pools": "pools", "tflite_interpreters_per_pool": "interpreters_per_pool"}
