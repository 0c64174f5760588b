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

`server_command` is the one function that turns a row's flags into the whole
`tensorflow_model_server` command: the gate prints it for the push destination
(gate.decision) and the `tfserving` backend runs it (benchmark.tfserving), so the command
that was measured is the command the push prints (the backend's ports, scratch model base
path and `BENCHMARK_ONLY_FLAGS` aside). `row_flags` is the one rule for a row's flags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from components.core.batching import (
    SERVER_BATCHING_FILE,
    SERVER_BATCHING_FILE_PLACEHOLDER,
    BatchingParameters,
    batching_flags,
)
from components.core.requirements import (
    MIXED_PRECISION_BF16_FLAG,
    PREFER_TFLITE_FLAG,
    TENSORFLOW_RUNTIME,
    TFLITE_RUNTIME,
    ServingRequirements,
)

DEFAULT_LABEL = "default"
# How TF Serving's Docker image starts the server (tensorflow_serving/tools/docker/
# Dockerfile, tf_serving_entrypoint.sh): gRPC on 8500 (`--port`, main.cc:88; server.h:43's
# default), REST on 8501 (`--rest_api_port`, main.cc:95; off by default, server.h:51).
SERVER_BINARY = "tensorflow_model_server"
GRPC_PORT = 8500
REST_API_PORT = 8501
# How a row's flags name a file beside the versions (batching.batching_flags): replaced by
# the model base path once it is known (the push destination, or the backend's scratch).
MODEL_BASE_PATH_PLACEHOLDER = SERVER_BATCHING_FILE_PLACEHOLDER.removesuffix(
    f"/{SERVER_BATCHING_FILE}")
# saved_model_bundle_factory.cc: without --prefer_tflite_model=true the version's
# saved_model.pb is served even where model.tflite lies beside it (main.cc:263, default
# false, server.h:98); written out so the command says which file runs.
NO_TFLITE_FLAG = "--prefer_tflite_model=false"


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


def row_flags(config: ServingConfig, beside_tflite: bool = False,
              requirements: ServingRequirements | None = None) -> list[str]:
    """The tensorflow_model_server flags that serve one version the way its row was
    measured: the configuration's (`ServingConfig.flags`), `--prefer_tflite_model=false`
    for the saved_model.pb of a version that holds model.tflite too, then the flags the
    version's serving requirements add for that runtime (requirements.py)."""
    flags = ([NO_TFLITE_FLAG] if config.runtime == TENSORFLOW_RUNTIME and beside_tflite
             else []) + config.flags()
    return with_requirements(flags, config.runtime, requirements)


def with_requirements(flags: Sequence[str], runtime: str | None,
                      requirements: ServingRequirements | None) -> list[str]:
    """`flags`, and those `requirements` add where they describe `runtime` (a TFLite
    variant's requirements describe its model.tflite, not the float graph beside it)."""
    flags = list(flags)
    if requirements is not None and requirements.runtime == (runtime or TENSORFLOW_RUNTIME):
        flags += [flag for flag in requirements.server_flags if flag not in flags]
    return flags


def server_command(flags: Sequence[str], model_base_path: str, model_name: str,
                   environment: Mapping[str, str] | None = None, *,
                   binary: str = SERVER_BINARY, grpc_port: int = GRPC_PORT,
                   rest_api_port: int = REST_API_PORT,
                   extra_flags: Sequence[str] = ()) -> list[str]:
    """The whole command that serves `model_name` from `model_base_path` (the directory
    holding its numeric versions) with a row's `flags`: environment assignments first
    (e.g. TF_ENABLE_ONEDNN_OPTS=1), then the binary, the ports, the model, the flags
    (those naming files beside the versions get the base path), then `extra_flags`.

    Every flag is one of tensorflow/serving model_servers/main.cc's (commit 9d981c5):
    --port (line 88), --rest_api_port (95), --model_name (145), --model_base_path (148);
    the row's flags: --enable_batching (107), --batching_parameters_file (114),
    --enable_per_model_batching_parameters (120), --tensorflow_intra_op_parallelism
    (205), --tensorflow_inter_op_parallelism (211), --prefer_tflite_model (263),
    --num_tflite_pools (271), --num_tflite_interpreters_per_pool (277),
    --mixed_precision (304)."""
    env = [f"{key}={value}" for key, value in sorted((environment or {}).items())]
    flags = [flag.replace(MODEL_BASE_PATH_PLACEHOLDER, model_base_path) for flag in flags]
    return [*env, binary, f"--port={grpc_port}", f"--rest_api_port={rest_api_port}",
            f"--model_name={model_name}", f"--model_base_path={model_base_path}", *flags,
            *extra_flags]


_SHORT = {"intra_op_threads": "intra_op", "inter_op_threads": "inter_op",
          "tflite_pools": "pools", "tflite_interpreters_per_pool": "interpreters_per_pool"}
