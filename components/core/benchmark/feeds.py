"""The input batches every model is measured on: identical for all of them.

From `examples` (TFRecords of tf.Example, a directory or a TFX Examples artifact, or an
.npz keyed by input name) when given, else generated from the signature (random tensors,
or real tf.Examples built from the model's parsing spec; see components.core.inputs).
Each batch size gets a small pool of distinct batches that requests cycle through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import components.core.tf_setup  # noqa: F401  (TensorFlow, quietly, first)

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from components.core.benchmark.engines import Feeds, tflite_signature
from components.core.errors import ServoptError
from components.core.examples import (
    check_feeds,
    load_npz,
    npz_mismatch,
    read_records,
    records_to_feeds,
)
from components.core.inputs import (
    FeatureSpec,
    example_feature_specs,
    generate_inputs,
    refuse_oversized_batches,
    vocabulary_tokens,
)
from components.core.model_io import read_saved_model, serving_meta_graph
from components.core.requirements import TFLITE_RUNTIME


@dataclass
class ModelSignature:
    """What inputs are built from: a model's signature and, read from its graph, the
    tf.Example features it parses (not the graph: a frozen one holds every weight)."""

    signature: meta_graph_pb2.SignatureDef
    feature_specs: list[FeatureSpec]
    tokens: list[str]
    name: str  # the signature's key


def read_signature(model_path: Path, runtime: str, name: str) -> ModelSignature:
    """The named signature of a resolved model (SavedModel dir, or .tflite for tflite)."""
    if runtime == TFLITE_RUNTIME:
        return ModelSignature(tflite_signature(model_path, name), [], [], name)
    meta_graph = serving_meta_graph(read_saved_model(model_path), model_path)
    signatures = {k: v for k, v in meta_graph.signature_def.items()
                  if not k.startswith("__")}
    if name not in signatures:
        raise ServoptError(f"{model_path}: no signature '{name}' (has {sorted(signatures)}); "
                           "choose one with --signature")
    return ModelSignature(signatures[name], example_feature_specs(meta_graph.graph_def),
                          vocabulary_tokens(model_path), name)


def _cycled(count: int, start: int, available: int) -> list[int]:
    return [(start + i) % available for i in range(count)]


def input_pools(model: ModelSignature, batch_sizes: Sequence[int], pool: int, seed: int,
                examples: Path | None = None) -> dict[int, list[Feeds]]:
    """`pool` batches for each batch size. Examples fewer than a batch are repeated."""
    refuse_oversized_batches(model.signature, max(batch_sizes), pool * len(batch_sizes))
    if examples is None:
        rng = np.random.default_rng(seed)
        return {size: [generate_inputs(model.signature, model.feature_specs, size, rng,
                                       model.tokens) for _ in range(pool)]
                for size in batch_sizes}
    examples = Path(examples)
    needed = max(batch_sizes) * pool
    if examples.suffix == ".npz":
        arrays = load_npz(examples)
        if not set(model.signature.inputs) <= set(arrays):
            raise npz_mismatch(examples, arrays, {model.name: model.signature})
        check_feeds(examples, arrays, model.signature)
        available = min(len(arrays[k]) for k in model.signature.inputs)
        return {size: [{k: np.take(arrays[k], _cycled(size, i * size, available), axis=0)
                        for k in model.signature.inputs} for i in range(pool)]
                for size in batch_sizes}
    records = read_records(examples, needed)
    return {size: [records_to_feeds([records[j] for j in _cycled(size, i * size, len(records))],
                                    model.signature, examples) for i in range(pool)]
            for size in batch_sizes}
