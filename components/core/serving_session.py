"""Run a SavedModel the way TF Serving runs it.

TF Serving loads a SavedModel with the C++ SavedModel loader into a Session (variables
restored, init op run with the asset paths fed) and serves each request by feeding the
signature's input tensors and fetching its output tensors. This module does the same
through `tf.compat.v1.saved_model.loader.load` and `Session.make_callable`, with thread
pools set explicitly. Python eager calls (`loaded.signatures[...]`) add per-call overhead
that hides graph-level gains, so nothing here uses them.

Two server settings change how the Session runs, as in tensorflow/serving (commit 9d981c5):
- `--mixed_precision=bfloat16`: saved_model_bundle_factory.cc sets the session config's
  `graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = ON` for every
  model (any other value is ignored there with a warning; refused here). Grappler runs
  that rewrite only where TF runs oneDNN (see onednn); elsewhere the model runs float32.
- `--enable_batching`: every signature's requests go through TF's batch scheduler
  (see batch_function), with the model's BatchingParameters.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
from tensorflow.core.protobuf import rewriter_config_pb2

from components.core.batching import BatchingParameters
from components.core.errors import ServoptError, first_line  # noqa: F401 (re-exported)
from components.core.heap import release_freed_memory
from components.core.model_io import (
    SERVING_TAG,
    read_saved_model,
    serving_meta_graph,
    serving_signatures,
)
from components.core.safety.allowlist import register_libraries

# Every run of an untrusted model ends: a model can block forever (a dequeue from a queue
# nothing fills) or loop without end. DirectSession applies `operation_timeout_in_ms` as
# the deadline of every step it runs that sets none itself (direct_session.cc
# RunInternal): the loader's restore and init op, and every request.
RUN_TIMEOUT_S = 300.0
BFLOAT16 = "bfloat16"  # the one --mixed_precision value TF Serving acts on


@dataclass(frozen=True)
class BatchCounts:
    """What a batched signature's function ran: batches, and examples in them (padding
    included)."""

    batches: int
    examples: int


def session_config(intra_op_threads: int, inter_op_threads: int,
                   mixed_precision: str | None = None) -> tf.compat.v1.ConfigProto:
    """The ConfigProto TF Serving gives a model's Session with these settings."""
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra_op_threads,
                                      inter_op_parallelism_threads=inter_op_threads,
                                      operation_timeout_in_ms=int(RUN_TIMEOUT_S * 1000))
    if mixed_precision is not None:
        if mixed_precision != BFLOAT16:
            raise ServoptError(f"--mixed_precision={mixed_precision}: TF Serving supports only "
                               f"'{BFLOAT16}' (saved_model_bundle_factory.cc ignores any "
                               f"other value): use --mixed_precision={BFLOAT16} or none")
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = (
            rewriter_config_pb2.RewriterConfig.ON)
    return config


class ServingSession:
    """A SavedModel loaded into a Session, with one cached callable per signature.

    `mixed_precision` ("bfloat16") and `batching` are TF Serving's `--mixed_precision` and
    batching parameters (module docstring); `count_batches` adds counters of the batches
    formed (`batch_counts`), for tests and reports."""

    def __init__(self, model_dir: Path, intra_op_threads: int = 0, inter_op_threads: int = 0,
                 mixed_precision: str | None = None,
                 batching: BatchingParameters | None = None, count_batches: bool = False):
        self.model_dir = Path(model_dir)
        proto = read_saved_model(self.model_dir)
        meta_graph = serving_meta_graph(proto, self.model_dir)
        self.signatures = serving_signatures(meta_graph)
        # TF Serving's model server links TF Text's ops (safety/libraries.py): here they
        # exist once their package is imported.
        register_libraries({n.op for n in meta_graph.graph_def.node}
                           | {n.op for f in meta_graph.graph_def.library.function
                              for n in f.node_def}, str(self.model_dir))
        self.config = session_config(intra_op_threads, inter_op_threads, mixed_precision)
        self.batching = batching.validate() if batching is not None else None
        self.count_batches = count_batches
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=self.config)
        try:
            with self.graph.as_default():
                tf.compat.v1.saved_model.loader.load(
                    self.session, list(meta_graph.meta_info_def.tags) or [SERVING_TAG],
                    str(self.model_dir))
        except tf.errors.DeadlineExceededError:
            self.session.close()
            raise ServoptError(f"{self.model_dir}: loading the model did not finish within "
                               f"{RUN_TIMEOUT_S:g} s (its init op blocks or loops); it was "
                               "stopped: fix the model's init op") from None
        except (tf.errors.OpError, ValueError, KeyError, RuntimeError) as err:
            self.session.close()
            raise ServoptError(f"{self.model_dir}: TF Serving's SavedModel loader cannot load "
                               f"this model: {first_line(err)}") from None
        self._callables: dict[str, tuple[list[str], list[str], object]] = {}
        self._counters: dict[str, tuple] = {}
        self._lock = threading.Lock()  # concurrent clients' first calls build one callable

    def signature(self, name: str):
        if name not in self.signatures:
            raise ServoptError(f"{self.model_dir}: no signature '{name}' (has "
                               f"{sorted(self.signatures)})")
        return self.signatures[name]

    def _callable(self, name: str):
        with self._lock:
            if name not in self._callables:
                self._callables[name] = self._build_callable(name)
            return self._callables[name]

    def _build_callable(self, name: str):
        signature = self.signature(name)
        input_keys, output_keys = sorted(signature.inputs), sorted(signature.outputs)
        if self.batching is not None:
            from components.core.batch_function import batch_signature

            try:
                batched = batch_signature(self.graph, self.session, name, signature,
                                          self.batching, self.count_batches)
            except (tf.errors.OpError, ValueError, TypeError) as err:
                raise ServoptError(f"{self.model_dir}: signature '{name}' cannot be run "
                                   f"through TF's batch scheduler: {first_line(err)}"
                                   ) from None
            feeds, fetches = batched.inputs, batched.outputs
            if batched.counters:
                self._counters[name] = batched.counters
        else:
            feeds = [self.graph.get_tensor_by_name(signature.inputs[k].name)
                     for k in input_keys]
            fetches = [self.graph.get_tensor_by_name(signature.outputs[k].name)
                       for k in output_keys]
        return input_keys, output_keys, self.session.make_callable(fetches, feed_list=feeds)

    def prepare(self, name: str) -> None:
        """Builds the signature's callable now (with batching: its BatchFunction node), so
        that a model the batch scheduler cannot run fails at load."""
        self._callable(name)

    def batch_counts(self, name: str) -> BatchCounts:
        """The batches the signature's batched function has run (needs count_batches)."""
        if name not in self._counters:
            raise ServoptError(f"{self.model_dir}: signature '{name}' is not batched with "
                               "count_batches=True")
        batches, examples = self.session.run(list(self._counters[name]))
        return BatchCounts(int(batches), int(examples))

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
        """Feeds `inputs` (by signature input key) and returns outputs by output key."""
        input_keys, output_keys, run = self._callable(signature_name)
        missing = set(input_keys) - set(inputs)
        if missing:
            raise ServoptError(f"{self.model_dir}: signature '{signature_name}' needs inputs "
                               f"{sorted(missing)}")
        try:
            values = run(*[inputs[k] for k in input_keys])
        except tf.errors.DeadlineExceededError:
            raise ServoptError(f"{self.model_dir}: signature '{signature_name}' did not "
                               f"finish within {RUN_TIMEOUT_S:g} s (the model blocks, e.g. "
                               "on a queue nothing fills, or loops); it was stopped"
                               ) from None
        except tf.errors.OpError as err:
            hint = (f" (batching {self.batching.label()}: TF Serving's batch scheduler "
                    "refuses the request the same way)" if self.batching is not None else "")
            raise ServoptError(f"{self.model_dir}: signature '{signature_name}' failed to run "
                               f"in a Session, as TF Serving would run it: {first_line(err)}"
                               f"{hint}") from None
        return dict(zip(output_keys, values, strict=True))

    def close(self) -> None:
        self.session.close()
        self._callables.clear()
        release_freed_memory()  # the Session's executors and Grappler's copies (heap)

    def __enter__(self) -> ServingSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


SignatureFeeds = dict[str, list[dict[str, np.ndarray]]]  # signature -> one feed per batch


def run_signatures(model_dir: Path, inputs: SignatureFeeds) -> SignatureFeeds:
    """The model's outputs on `inputs`, for each signature it has, run as TF Serving runs it."""
    try:
        return _run_once(model_dir, inputs)
    finally:  # the model is gone once _run_once returns: its graph too, not only its heap
        release_freed_memory([model_dir])


def _run_once(model_dir: Path, inputs: SignatureFeeds) -> SignatureFeeds:
    with ServingSession(model_dir) as candidate:
        return {name: [candidate.run(name, feed) for feed in feeds]
                for name, feeds in inputs.items() if name in candidate.signatures}
