"""Run a SavedModel the way TF Serving runs it.

TF Serving loads a SavedModel with the C++ SavedModel loader into a Session (variables
restored, init op run with the asset paths fed) and serves each request by feeding the
signature's input tensors and fetching its output tensors. This module does the same
through `tf.compat.v1.saved_model.loader.load` and `Session.make_callable`, with thread
pools set explicitly. Python eager calls (`loaded.signatures[...]`) add per-call overhead
that hides graph-level gains, so nothing here uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np

from components.core.errors import ServoptError, first_line  # noqa: F401 (re-exported)
from components.core.model_io import (
    SERVING_TAG,
    read_saved_model,
    serving_meta_graph,
    serving_signatures,
)

# Every run of an untrusted model ends: a model can block forever (a dequeue from a queue
# nothing fills) or loop without end. DirectSession applies `operation_timeout_in_ms` as
# the deadline of every step it runs that sets none itself (direct_session.cc
# RunInternal): the loader's restore and init op, and every request.
RUN_TIMEOUT_S = 300.0


class ServingSession:
    """A SavedModel loaded into a Session, with one cached callable per signature."""

    def __init__(self, model_dir: Path, intra_op_threads: int = 0, inter_op_threads: int = 0):
        self.model_dir = Path(model_dir)
        proto = read_saved_model(self.model_dir)
        meta_graph = serving_meta_graph(proto, self.model_dir)
        self.signatures = serving_signatures(meta_graph)
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra_op_threads,
                                          inter_op_parallelism_threads=inter_op_threads,
                                          operation_timeout_in_ms=int(RUN_TIMEOUT_S * 1000))
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
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

    def signature(self, name: str):
        if name not in self.signatures:
            raise ServoptError(f"{self.model_dir}: no signature '{name}' (has "
                               f"{sorted(self.signatures)})")
        return self.signatures[name]

    def _callable(self, name: str):
        if name not in self._callables:
            signature = self.signature(name)
            input_keys, output_keys = sorted(signature.inputs), sorted(signature.outputs)
            feeds = [self.graph.get_tensor_by_name(signature.inputs[k].name)
                     for k in input_keys]
            fetches = [self.graph.get_tensor_by_name(signature.outputs[k].name)
                       for k in output_keys]
            run = self.session.make_callable(fetches, feed_list=feeds)
            self._callables[name] = (input_keys, output_keys, run)
        return self._callables[name]

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
            raise ServoptError(f"{self.model_dir}: signature '{signature_name}' failed to run "
                               f"in a Session, as TF Serving would run it: {first_line(err)}"
                               ) from None
        return dict(zip(output_keys, values, strict=True))

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ServingSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
