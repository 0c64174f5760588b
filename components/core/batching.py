"""TF Serving's server-side batching (`--enable_batching`): its parameters and files.

From tensorflow/serving (commit 9d981c5) and the TensorFlow it links (2.21 headers):

- `servables/tensorflow/session_bundle_config.proto` `BatchingParameters`: the shared batch
  scheduler's queue options (max_batch_size, batch_timeout_micros, max_enqueued_batches,
  enable_large_batch_splitting, max_execution_batch_size), its thread pool
  (num_batch_threads, thread_pool_name) and BatchingSession's allowed_batch_sizes.
  Scalars are wrapped (`google.protobuf.Int64Value`): a field left out keeps the default of
  tensorflow `core/kernels/batching_util/shared_batch_scheduler.h` (QueueOptions:
  input_batch_size_limit 1000, batch_timeout_micros 0, max_enqueued_batches 10; Options:
  num_batch_threads = port::MaxParallelism(), the schedulable CPUs).
- `model_servers/server.cc`: `--enable_batching` without `--batching_parameters_file` uses
  those defaults (thread pool "model_server_batch_threads"); the file is an ASCII
  BatchingParameters; the file without `--enable_batching` is an error.
- `servables/tensorflow/bundle_factory_util.cc` `GetPerModelBatchingParams`: with
  `--enable_per_model_batching_parameters`, a version directory holding
  `batching_params.pbtxt` is batched with the queue options read from it; one without it
  is not batched at all. The batch thread pool is created once per server from the global
  parameters (saved_model_bundle_factory.cc `CreateBatchScheduler`,
  bundle_factory_util.h): num_batch_threads in a per-model file is ignored, it comes from
  `--batching_parameters_file` (or the default, every schedulable CPU) and is shared by
  every model the server batches.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from components.core.errors import ServoptError

BATCHING_PARAMS_FILE = "batching_params.pbtxt"  # bundle_factory_util.cc kBatchingParamsFilename
# The server-wide file of --batching_parameters_file (any name: the flag gives it); placed
# beside the version directories, where TF Serving ignores it (versions are numeric).
SERVER_BATCHING_FILE = "batching_parameters.pbtxt"
SERVER_BATCHING_FILE_PLACEHOLDER = f"<model_base_path>/{SERVER_BATCHING_FILE}"
ENABLE_BATCHING_FLAG = "--enable_batching"
PER_MODEL_FLAG = "--enable_per_model_batching_parameters"

# shared_batch_scheduler.h QueueOptions defaults (what a field left out means).
DEFAULT_MAX_BATCH_SIZE = 1000  # input_batch_size_limit
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10


def schedulable_cpus() -> int:
    """port::MaxParallelism() on Linux: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class BatchingParameters:
    """One model's batching, as TF Serving reads it. Defaults are TF's (module docstring);
    num_batch_threads None means the server's default, every schedulable CPU."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    num_batch_threads: int | None = None
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    allowed_batch_sizes: tuple[int, ...] = ()
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None  # with splitting; None: max_batch_size

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_batch_sizes", tuple(self.allowed_batch_sizes))

    @property
    def batch_threads(self) -> int:
        """The batch threads a server on this machine runs: the value, or TF's default."""
        return self.num_batch_threads or schedulable_cpus()

    @property
    def execution_batch_limit(self) -> int:
        """The largest batch one execution runs (shared_batch_scheduler.h)."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    def validate(self, source: str = "batching parameters") -> BatchingParameters:
        """TF Serving's and its scheduler's rules; the first broken one as a ServoptError."""
        def fail(cause: str, fix: str) -> None:
            raise ServoptError(f"{source}: {cause}; {fix}")

        # shared_batch_scheduler.h AddQueueAfterRewritingOptions / SharedBatchScheduler::Create
        if self.max_batch_size < 1:
            fail(f"max_batch_size {self.max_batch_size} is not positive (TF's batch "
                 "scheduler refuses the queue)", "set max_batch_size >= 1")
        if self.batch_timeout_micros < 0:
            fail(f"batch_timeout_micros {self.batch_timeout_micros} is negative (TF's batch "
                 "scheduler refuses the queue)", "set batch_timeout_micros >= 0")
        if self.num_batch_threads is not None and self.num_batch_threads < 1:
            fail(f"num_batch_threads {self.num_batch_threads} is not positive (TF's batch "
                 "scheduler refuses it)", "set num_batch_threads >= 1, or leave it out")
        if self.max_enqueued_batches < 0 or (
                self.max_enqueued_batches == 0 and self.enable_large_batch_splitting):
            # 0 without splitting is rewritten to 1 (AddQueue); with splitting it fails.
            fail(f"max_enqueued_batches {self.max_enqueued_batches} is not positive (TF's "
                 "batch scheduler refuses the queue)", "set max_enqueued_batches >= 1")
        if self.max_execution_batch_size is not None:
            if not self.enable_large_batch_splitting:
                fail("max_execution_batch_size is set but enable_large_batch_splitting is "
                     "not (session_bundle_config.proto: relevant only with splitting)",
                     "turn on enable_large_batch_splitting or drop max_execution_batch_size")
            if not 1 <= self.max_execution_batch_size <= self.max_batch_size:
                fail(f"max_execution_batch_size {self.max_execution_batch_size} is not in "
                     f"1..max_batch_size {self.max_batch_size} (shared_batch_scheduler.h: "
                     "input_batch_size_limit must be >= max_execution_batch_size)",
                     "lower max_execution_batch_size or raise max_batch_size")
        sizes = self.allowed_batch_sizes
        if sizes:
            # session_bundle_config.proto: "entries must be in increasing order"
            if sizes[0] < 1 or any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
                fail(f"allowed_batch_sizes {list(sizes)} are not positive and increasing "
                     "(session_bundle_config.proto)", "list them in increasing order")
            # bundle_factory_util.cc WrapSessionForBatching: fails the model's load
            if sizes[-1] != self.max_batch_size:
                fail("Last entry in allowed_batch_sizes must match max_batch_size; last "
                     f"entry was {sizes[-1]}; expected {self.max_batch_size} (TF Serving "
                     "fails the model's load)", "end allowed_batch_sizes with max_batch_size")
        return self

    def label(self) -> str:
        parts = [f"batching={self.max_batch_size}", f"{self.batch_timeout_micros}us"]
        if self.num_batch_threads is not None:
            parts.append(f"threads={self.num_batch_threads}")
        if self.allowed_batch_sizes:
            parts.append("sizes=" + "-".join(map(str, self.allowed_batch_sizes)))
        if self.enable_large_batch_splitting:
            parts.append(f"split={self.execution_batch_limit}")
        return ",".join(parts)

    def to_pbtxt(self) -> str:
        """The per-model `batching_params.pbtxt`: every queue option written out, so the
        file does not depend on TF's defaults. num_batch_threads is left out: TF Serving
        takes it from the server's file (see `server_batching_file`)."""
        lines = [f"max_batch_size {{ value: {self.max_batch_size} }}",
                 f"batch_timeout_micros {{ value: {self.batch_timeout_micros} }}",
                 f"max_enqueued_batches {{ value: {self.max_enqueued_batches} }}"]
        if self.enable_large_batch_splitting:
            lines.append("enable_large_batch_splitting { value: true }")
        if self.max_execution_batch_size is not None:
            lines.append(f"max_execution_batch_size {{ value: {self.max_execution_batch_size} }}")
        lines += [f"allowed_batch_sizes: {size}" for size in self.allowed_batch_sizes]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse_pbtxt(cls, text: str, source: str = BATCHING_PARAMS_FILE) -> BatchingParameters:
        """A BatchingParameters text proto read as TF Serving reads it (protobuf text
        format, ParseProtoTextFile): fields left out keep TF's defaults; an unknown field,
        or one TF Serving has but this model does not, is an error naming the file."""
        proto = _proto_class()()
        try:
            text_format.Parse(text, proto)
        except text_format.ParseError as err:
            raise ServoptError(f"{source}: not a tensorflow.serving.BatchingParameters text "
                               f"proto: {err}; fix the file (e.g. `max_batch_size "
                               "{ value: 32 }`)") from None
        if proto.pad_variable_length_inputs:
            raise ServoptError(f"{source}: pad_variable_length_inputs is not modelled here "
                               "(the benchmark feeds fixed-shape inputs); drop it")

        def get(name: str, default: Any) -> Any:
            return getattr(proto, name).value if proto.HasField(name) else default

        return cls(max_batch_size=get("max_batch_size", DEFAULT_MAX_BATCH_SIZE),
                   batch_timeout_micros=get("batch_timeout_micros",
                                            DEFAULT_BATCH_TIMEOUT_MICROS),
                   num_batch_threads=get("num_batch_threads", None),
                   max_enqueued_batches=get("max_enqueued_batches",
                                            DEFAULT_MAX_ENQUEUED_BATCHES),
                   allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
                   enable_large_batch_splitting=get("enable_large_batch_splitting", False),
                   max_execution_batch_size=get("max_execution_batch_size", None))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["allowed_batch_sizes"] = list(self.allowed_batch_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchingParameters:
        return cls(**{**data, "allowed_batch_sizes": tuple(data.get("allowed_batch_sizes", ()))})


def server_batching_file(params: BatchingParameters) -> str | None:
    """The server-wide `--batching_parameters_file` text, where one is needed: only the
    batch thread pool counts under per-model parameters (module docstring). None where
    TF's default (every schedulable CPU) is asked for."""
    if params.num_batch_threads is None:
        return None
    return (f"num_batch_threads {{ value: {params.num_batch_threads} }}\n"
            'thread_pool_name { value: "model_server_batch_threads" }\n')


def batching_flags(params: BatchingParameters | None,
                   parameters_file: str = SERVER_BATCHING_FILE_PLACEHOLDER) -> list[str]:
    """The tensorflow_model_server flags that batch one model with `params` (main.cc,
    server.cc): the per-model file beside the version (`write_batching_params`) gives the
    queue options; a set num_batch_threads needs the server-wide file too, at
    `parameters_file` (its text: `server_batching_file`). That thread pool is shared by
    every model the server batches."""
    if params is None:
        return []
    flags = [ENABLE_BATCHING_FLAG, PER_MODEL_FLAG]
    if server_batching_file(params) is not None:
        flags.append(f"--batching_parameters_file={parameters_file}")
    return flags


def _write_atomically(target: Path, text: str) -> Path:
    """`text` at `target` via a rename: a server polling the directory never reads half
    a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_batching_params(version_dir: Path, params: BatchingParameters) -> Path:
    """`batching_params.pbtxt` in the version directory (atomic)."""
    params.validate()
    return _write_atomically(Path(version_dir) / BATCHING_PARAMS_FILE, params.to_pbtxt())


def write_server_batching_file(path: Path, params: BatchingParameters) -> Path | None:
    """The server-wide `--batching_parameters_file` at `path` where `params` need one
    (`server_batching_file`); None where TF's default thread pool is asked for."""
    text = server_batching_file(params.validate())
    return _write_atomically(Path(path), text) if text is not None else None


def read_batching_params(version_dir: Path) -> BatchingParameters | None:
    """What a server with per-model parameters batches this version with (None: not
    batched, GetPerModelBatchingParams)."""
    path = Path(version_dir) / BATCHING_PARAMS_FILE
    if not path.is_file():
        return None
    return BatchingParameters.parse_pbtxt(path.read_text(), str(path)).validate(str(path))


def batching_candidates(cores: int, clients: int, request_batch: int = 1
                        ) -> list[BatchingParameters]:
    """A few settings worth measuring at `clients` concurrent requests of `request_batch`
    examples, from TF Serving's batching guide (batching/README.md "CPU-only: One
    Approach"): num_batch_threads = `cores` (left out where that is TF's default, every
    schedulable CPU, so no server-wide file is needed), max_batch_size
    high (here every request in flight: more can never form), batch_timeout_micros 0, then
    1-10 ms; and max_batch_size at half of that ("use max_batch_size * 2 client threads",
    session_bundle_config.proto), so one batch fills while another runs.
    max_enqueued_batches = clients: no request in flight is ever turned away."""
    everything = max(1, clients) * request_batch
    half = max(request_batch, everything // 2)
    common = {"max_enqueued_batches": max(1, clients),
              "num_batch_threads": None if cores == schedulable_cpus() else cores}
    candidates = [BatchingParameters(max_batch_size=everything, batch_timeout_micros=0, **common),
                  BatchingParameters(max_batch_size=everything, batch_timeout_micros=1000,
                                     **common),
                  BatchingParameters(max_batch_size=everything, batch_timeout_micros=5000,
                                     **common)]
    if half != everything:
        candidates.append(BatchingParameters(max_batch_size=half, batch_timeout_micros=0,
                                             **common))
    return [c.validate() for c in candidates]


@lru_cache(maxsize=1)
def _proto_class():
    """tensorflow.serving.BatchingParameters built from its .proto fields (the pip
    tensorflow-serving-api does not ship it), so text is parsed by protobuf itself."""
    file = descriptor_pb2.FileDescriptorProto(
        name="servopt/session_bundle_config_batching.proto", package="tensorflow.serving",
        syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    message = file.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    wrapped = {"max_batch_size": (1, "Int64Value"), "batch_timeout_micros": (2, "Int64Value"),
               "max_enqueued_batches": (3, "Int64Value"), "num_batch_threads": (4, "Int64Value"),
               "thread_pool_name": (5, "StringValue"),
               "enable_large_batch_splitting": (8, "BoolValue"),
               "max_execution_batch_size": (9, "Int64Value")}
    for name, (number, kind) in wrapped.items():
        message.field.add(name=name, number=number, label=field.LABEL_OPTIONAL,
                          type=field.TYPE_MESSAGE, type_name=f".google.protobuf.{kind}")
    message.field.add(name="allowed_batch_sizes", number=6, label=field.LABEL_REPEATED,
                      type=field.TYPE_INT64)
    message.field.add(name="pad_variable_length_inputs", number=7,
                      label=field.LABEL_OPTIONAL, type=field.TYPE_BOOL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))
