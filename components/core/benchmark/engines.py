"""The things that run a model in-process: an `Engine` is loaded once and called with
one batch of feeds (signature input key -> array) per request.

- `SessionEngine`: the way TF Serving runs a SavedModel (see serving_session): loaded
  into a `tf.compat.v1.Session`, signature tensors fed and fetched via `make_callable`,
  thread pools set explicitly.
- `TFLiteEngine`: a `.tflite` model in `tf.lite.Interpreter` with `num_threads` set,
  called through its signature runner.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from components.core.tf_setup import tf

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from components.core.errors import ServoptError
from components.core.model_io import resolve_saved_model_dir
from components.core.serving_session import ServingSession, first_line

Feeds = Mapping[str, np.ndarray]


class Engine(Protocol):
    def run(self, feeds: Feeds) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EngineSpec:
    """Everything a worker process needs to load one model: picklable, backend-neutral."""

    backend: str  # "session" or "tflite"
    model_path: str  # resolved: the SavedModel directory or the .tflite file
    signature: str
    intra_op_threads: int
    inter_op_threads: int


def resolve_model_path(path: Path, backend: str) -> Path:
    """The SavedModel directory (any layout model_io knows) or, for tflite, the file."""
    if backend != "tflite":
        return resolve_saved_model_dir(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ServoptError(f"{path}: no such file or directory; pass a .tflite file or a "
                           "directory that holds one")
    found = sorted(path.rglob("*.tflite"))
    if len(found) != 1:
        what = "no .tflite file" if not found else f"{len(found)} .tflite files"
        raise ServoptError(f"{path}: holds {what}; pass the .tflite file itself")
    return found[0]


class SessionEngine:
    def __init__(self, model_dir: Path, signature: str, intra_op_threads: int,
                 inter_op_threads: int):
        self.session = ServingSession(model_dir, intra_op_threads, inter_op_threads)
        self.session.signature(signature)  # an unknown signature fails at load time
        self.signature = signature

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return self.session.run(self.signature, feeds)

    def close(self) -> None:
        self.session.close()


def _interpreter(path: Path, threads: int | None = None):
    with warnings.catch_warnings():  # tf.lite.Interpreter warns that LiteRT replaces it
        warnings.simplefilter("ignore")
        try:
            return tf.lite.Interpreter(model_path=str(path), num_threads=threads)
        except (ValueError, RuntimeError) as err:
            raise ServoptError(f"{path}: the TFLite interpreter cannot load this model: "
                               f"{first_line(err)}; convert the model again") from None


def _signature_runner(interpreter, path: Path, signature: str):
    available = sorted(interpreter.get_signature_list())
    if signature not in available:
        raise ServoptError(f"{path}: no signature '{signature}' (has {available}); convert "
                           "with TFLiteConverter.from_saved_model to keep signatures")
    return interpreter.get_signature_runner(signature)


class TFLiteEngine:
    """An interpreter runs one request at a time, so each client thread gets its own
    (created on the thread's first request, which the benchmark does not time), as a
    server keeps a pool of interpreters."""

    def __init__(self, path: Path, signature: str, threads: int):
        self.path, self.signature, self.threads = Path(path), signature, threads
        self._local = threading.local()
        self._local.runner = self._new_runner()

    def _new_runner(self):
        return _signature_runner(_interpreter(self.path, self.threads), self.path,
                                 self.signature)

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        runner = getattr(self._local, "runner", None)
        if runner is None:
            runner = self._local.runner = self._new_runner()
        try:
            return runner(**feeds)
        except (ValueError, RuntimeError) as err:
            raise ServoptError(f"{self.path}: the TFLite interpreter failed to run the "
                               f"model: {first_line(err)}") from None

    def close(self) -> None:
        self._local = threading.local()


def make_engine(spec: EngineSpec) -> Engine:
    if spec.backend == "tflite":
        return TFLiteEngine(Path(spec.model_path), spec.signature, spec.intra_op_threads)
    return SessionEngine(Path(spec.model_path), spec.signature, spec.intra_op_threads,
                         spec.inter_op_threads)


def tflite_signature(path: Path, signature: str) -> meta_graph_pb2.SignatureDef:
    """A `.tflite` model's signature as a SignatureDef (batch dimension unknown), so that
    inputs are built for it exactly as for a SavedModel."""
    runner = _signature_runner(_interpreter(path), path, signature)
    proto = meta_graph_pb2.SignatureDef()
    for kind, details in (("inputs", runner.get_input_details()),
                          ("outputs", runner.get_output_details())):
        for key, detail in details.items():
            info = getattr(proto, kind)[key]
            info.name = detail["name"]
            info.dtype = tf.dtypes.as_dtype(detail["dtype"]).as_datatype_enum
            dims = list(detail.get("shape_signature", detail["shape"]))
            for index, size in enumerate(dims):
                info.tensor_shape.dim.add().size = -1 if index == 0 else int(size)
    return proto
