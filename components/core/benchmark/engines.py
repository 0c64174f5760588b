"""The things that run a model in-process: an `Engine` is loaded once and called with
one batch of feeds (signature input key -> array) per request.

Which engine runs a model is the runtime TF Serving would use for it, chosen per model:

- `SessionEngine` (runtime "tensorflow"): a SavedModel the way TF Serving runs it (see
  serving_session): loaded into a `tf.compat.v1.Session`, signature tensors fed and fetched
  via `make_callable`, thread pools set explicitly; with `--mixed_precision=bfloat16`'s
  rewrite option, and with server-side batching through TF's batch scheduler (see
  batch_function): concurrent client threads' requests are merged into batches.
- `TfLiteSessionEngine` (runtime "tflite"): a `.tflite` model the way TF Serving's
  TfLiteSession runs `model.tflite` under `--prefer_tflite_model=true`: through
  `components.core.tflite_session.TfLiteSession`, the one model of that runtime (its
  signatures, Predict rules, ops and 1-thread interpreters, each rule cited there), not
  the Python interpreter's signature runners. On top of it, from tensorflow/serving
  (commit 9d981c5, servables/tensorflow/tflite_session.cc, tflite_interpreter_pool.cc):
  * `--num_tflite_pools` interpreters (default: the schedulable CPUs, server.h); a request
    takes a free interpreter (blocking while all are busy) and runs its whole batch on
    it: the input tensor is resized to the request's shape, so float batches are never
    padded (fixed-size reuse applies to string inputs).
  * ops resolved by `tflite::ops::builtin::BuiltinOpResolver`, whose default delegate is
    XNNPACK (TF Serving's .bazelrc builds it in); no Flex ops. The Python interpreter's
    default resolver applies the same XNNPACK delegate, here with 1 thread.
  * `--mixed_precision` has no effect on it (TfLiteSession runs no Grappler). TF Serving
    would wrap it in a BatchingSession under `--enable_batching`; that is not modelled
    here (TF's BatchFunction runs TF functions only): such a spec is refused.
  * `--num_tflite_interpreters_per_pool` > 1 turns on a BasicBatchScheduler with one batch
    thread per interpreter, large-batch splitting and a maximum execution batch of
    ceil(500 / interpreters_per_pool) (500 = kInitialBatchSize): a request larger than
    that is split into chunks run on different interpreters in parallel, outputs
    concatenated. (The scheduler also merges concurrent small requests into one batch;
    with its zero batch timeout that rarely happens and is not modelled.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import components.core.tf_setup  # noqa: F401  (TensorFlow quietly, before tensorflow.*)

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from components.core.batching import BatchingParameters
from components.core.errors import ServoptError
from components.core.model_paths import resolve_saved_model_dir
from components.core.requirements import TENSORFLOW_RUNTIME, TFLITE_RUNTIME, has_tflite_model
from components.core.serving_session import ServingSession
from components.core.tflite_session import TfLiteSession

Feeds = Mapping[str, np.ndarray]
RUNTIMES = (TENSORFLOW_RUNTIME, TFLITE_RUNTIME)
TFLITE_INITIAL_BATCH_SIZE = 500  # tflite_interpreter_pool.h: internal::kInitialBatchSize


class Engine(Protocol):
    def run(self, feeds: Feeds) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EngineSpec:
    """Everything a worker process needs to load one model: picklable."""

    runtime: str  # "tensorflow" (a SavedModel in a Session) or "tflite"
    model_path: str  # resolved: the SavedModel directory or the .tflite file
    signature: str
    intra_op_threads: int
    inter_op_threads: int
    tflite_pools: int = 1  # tflite: --num_tflite_pools
    tflite_interpreters_per_pool: int = 1  # tflite: --num_tflite_interpreters_per_pool
    mixed_precision: str | None = None  # tensorflow: --mixed_precision ("bfloat16")
    batching: BatchingParameters | None = None  # tensorflow: --enable_batching, per model


@dataclass(frozen=True)
class ResolvedModel:
    """A model path as found on disk: the SavedModel directory and/or the .tflite file."""

    saved_model: Path | None  # the directory holding saved_model.pb
    tflite: Path | None  # model.tflite beside it, or a bare .tflite file

    def runtimes(self) -> list[str]:
        """The runtimes this model is measured on, in row order: a TFLite variant
        (SavedModel + model.tflite) on both paths TF Serving can take."""
        return [r for r, path in ((TFLITE_RUNTIME, self.tflite),
                                  (TENSORFLOW_RUNTIME, self.saved_model)) if path]

    def path_for(self, runtime: str) -> Path:
        return self.tflite if runtime == TFLITE_RUNTIME else self.saved_model


def resolve_model(path: Path) -> ResolvedModel:
    """A .tflite file, a SavedModel directory (any layout model_io knows; with the
    `model.tflite` TF Serving prefers beside it, if present), or a directory holding
    exactly one .tflite file and no SavedModel."""
    path = Path(path)
    if path.is_file() and path.suffix == ".tflite":
        return ResolvedModel(None, path)
    try:
        model_dir = resolve_saved_model_dir(path)
    except ServoptError:
        found = sorted(path.rglob("*.tflite")) if path.is_dir() else []
        if len(found) == 1:
            return ResolvedModel(None, found[0])
        raise
    tflite = model_dir / "model.tflite" if has_tflite_model(model_dir) else None
    return ResolvedModel(model_dir, tflite)


class SessionEngine:
    """A ServingSession; with `batching`, requests from concurrent client threads calling
    `run` at once are merged into batches by TF's batch scheduler (each call blocks until
    its batch has run, as a TF Serving request does)."""

    def __init__(self, model_dir: Path, signature: str, intra_op_threads: int,
                 inter_op_threads: int, mixed_precision: str | None = None,
                 batching: BatchingParameters | None = None, count_batches: bool = False):
        self.session = ServingSession(model_dir, intra_op_threads, inter_op_threads,
                                      mixed_precision, batching, count_batches)
        try:
            # An unknown signature, or one the batch scheduler cannot run, fails at load.
            self.session.prepare(signature)
        except BaseException:
            self.session.close()
            raise
        self.signature = signature

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return self.session.run(self.signature, feeds)

    def batch_counts(self):
        """Batches formed so far (with count_batches): see ServingSession.batch_counts."""
        return self.session.batch_counts(self.signature)

    def close(self) -> None:
        self.session.close()


class TfLiteSessionEngine:
    """A TfLiteSession with `pools` 1-thread interpreters, used the way TF Serving uses
    it (see the module docstring). Concurrent client threads each take a free one."""

    def __init__(self, path: Path, signature: str, pools: int = 1,
                 interpreters_per_pool: int = 1):
        self.path, self.signature = Path(path), signature
        self.session = TfLiteSession(self.path, pools)
        self.session.signature(signature)  # an unknown signature fails at load time
        self.max_execution_batch = (math.ceil(TFLITE_INITIAL_BATCH_SIZE / interpreters_per_pool)
                                    if interpreters_per_pool > 1 else None)
        # The scheduler's batch threads: created once, so they stay warm between requests.
        self._threads = (ThreadPoolExecutor(max(1, pools), "tflite-batch")
                         if self.max_execution_batch else None)

    def _invoke(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return self.session.run(self.signature, feeds)

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        size = len(next(iter(feeds.values())))
        if self._threads is None or size <= self.max_execution_batch:
            return self._invoke(feeds)
        chunks = [{k: v[start:start + self.max_execution_batch] for k, v in feeds.items()}
                  for start in range(0, size, self.max_execution_batch)]
        outputs = list(self._threads.map(self._invoke, chunks))
        return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False)
        self.session.close()


def make_engine(spec: EngineSpec) -> Engine:
    if spec.runtime == TFLITE_RUNTIME:
        if spec.batching is not None:
            raise ServoptError(f"{spec.model_path}: server-side batching of a TFLite model "
                               "(TF Serving's BatchingSession around TfLiteSession) is not "
                               "modelled: measure batching on the tensorflow runtime")
        return TfLiteSessionEngine(Path(spec.model_path), spec.signature, spec.tflite_pools,
                                   spec.tflite_interpreters_per_pool)
    return SessionEngine(Path(spec.model_path), spec.signature, spec.intra_op_threads,
                         spec.inter_op_threads, spec.mixed_precision, spec.batching)


def tflite_signature(path: Path, signature: str) -> meta_graph_pb2.SignatureDef:
    """A `.tflite` model's signature as TF Serving resolves it, batch dimension unknown,
    so that inputs are built for it exactly as for a SavedModel."""
    with TfLiteSession(path) as session:
        proto = meta_graph_pb2.SignatureDef()
        proto.CopyFrom(session.signature(signature))
    for infos in (proto.inputs, proto.outputs):
        for info in infos.values():
            if info.tensor_shape.dim:
                info.tensor_shape.dim[0].size = -1
    return proto
