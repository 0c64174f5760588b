"""Representative inputs for a serving signature, when the user gives no examples.

Tensor inputs get random values of the signature's dtype and shape (unknown batch
dimension -> the batch size). A signature that takes serialized `tf.Example`s (TFX's
serving convention) gets real `tf.Example`s built from the feature spec of the graph's
ParseExample op, with string features drawn from the model's vocabulary assets so lookup
tables see known tokens as well as out-of-vocabulary ones. Any other string input (raw
text, as a model that tokenizes in its graph takes it) gets sentences: words of the
vocabulary assets, or of a small English word list, in mixed case with punctuation, so
tokenizers see words, pieces they must split and unknown words. Random bytes would be
no text at all (often not even UTF-8).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from components.core.errors import ServoptError
from components.core.model_paths import inside

UNKNOWN_DIM = 8  # size for unknown non-batch dimensions (e.g. image height/width)
# Generated integers are 0 and 1: ids of any vocabulary (an embedding has at least 2
# rows), valid segment ids, masks and class indices. What they cannot be is said here.
GENERATED_INPUTS = (f"servopt generated these inputs (integers 0 and 1, unknown dimensions "
                    f"{UNKNOWN_DIM}, strings as sentences): a model that needs other values "
                    "(ids in another range, a longer or shorter sequence) needs real inputs: "
                    "pass them with --inputs (components: examples)")
STRING_BYTES = 256  # what a string input (a serialized tf.Example) is counted as
MEMORY_SHARE = 0.5  # inputs may take at most this share of the memory available now


def available_memory_bytes() -> int:
    """Memory available to this process now (Linux MemAvailable; else physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def example_bytes(signature: meta_graph_pb2.SignatureDef) -> int:
    """About how many bytes one example of `signature`'s inputs takes in memory."""
    total = 0
    for info in signature.inputs.values():
        dtype = tf.dtypes.as_dtype(info.dtype)
        dims = [] if info.tensor_shape.unknown_rank else [d.size for d in
                                                          info.tensor_shape.dim][1:]
        count = int(np.prod([d if d >= 0 else UNKNOWN_DIM for d in dims], dtype=np.float64))
        total += count * (STRING_BYTES if dtype == tf.string else dtype.size)
    return max(total, 1)


def refuse_oversized_batches(signature: meta_graph_pb2.SignatureDef, batch_size: int,
                             copies: int = 1) -> None:
    """Raises ServoptError when `copies` batches of `batch_size` examples of `signature`
    would not fit in the memory this machine has free (before anything is allocated)."""
    per_example = example_bytes(signature)
    budget = available_memory_bytes() * MEMORY_SHARE
    needed = per_example * batch_size * copies
    if needed > budget:
        fits = max(int(budget // (per_example * copies)), 0)
        raise ServoptError(f"batch size {batch_size}: its inputs need about "
                           f"{needed / 2**30:.1f} GiB ({copies} batches of {per_example} "
                           f"bytes per example), more than half the {budget * 2 / 2**30:.1f} "
                           f"GiB of memory available; use batch sizes up to {fits}")


@dataclass
class FeatureSpec:
    key: str
    dtype: tf.dtypes.DType
    shape: tuple[int, ...] | None  # None: a sparse (variable-length) feature


def _scopes(graph_def: graph_pb2.GraphDef):
    """Each scope's nodes by name: the graph itself and every function body."""
    yield {n.name: n for n in graph_def.node}
    for function in graph_def.library.function:
        yield {n.name: n for n in function.node_def}


def _const_strings(nodes: dict, input_name: str) -> list[str]:
    node = nodes.get(input_name.lstrip("^").split(":")[0])
    if node is None or node.op != "Const":
        return []
    return [s.decode() for s in node.attr["value"].tensor.string_val]


def example_feature_specs(graph_def: graph_pb2.GraphDef) -> list[FeatureSpec]:
    """Feature spec of the first ParseExample/ParseExampleV2 op found in the graph."""
    for nodes in _scopes(graph_def):
        for node in nodes.values():
            if node.op == "ParseExampleV2":
                num_sparse = node.attr["num_sparse"].i
                sparse_keys = _const_strings(nodes, node.input[2])[:num_sparse]
                dense_keys = _const_strings(nodes, node.input[3])
                sparse_types = list(node.attr["sparse_types"].list.type)
            elif node.op == "ParseExample":
                n_sparse, n_dense = node.attr["Nsparse"].i, node.attr["Ndense"].i
                sparse_keys = [k for i in node.input[2:2 + n_sparse]
                               for k in _const_strings(nodes, i)]
                dense_keys = [k for i in node.input[2 + n_sparse:2 + n_sparse + n_dense]
                              for k in _const_strings(nodes, i)]
                sparse_types = list(node.attr["sparse_types"].list.type)
            else:
                continue
            dense_types = list(node.attr["Tdense"].list.type)
            dense_shapes = [tuple(max(d.size, 1) for d in s.dim)
                            for s in node.attr["dense_shapes"].list.shape]
            specs = [FeatureSpec(k, tf.dtypes.as_dtype(t), s)
                     for k, t, s in zip(dense_keys, dense_types, dense_shapes, strict=False)]
            specs += [FeatureSpec(k, tf.dtypes.as_dtype(t), None)
                      for k, t in zip(sparse_keys, sparse_types, strict=False)]
            return specs
    return []


def vocabulary_tokens(model_dir: Path | None) -> list[str]:
    """Lines of the model's text assets (vocabularies), for realistic string features."""
    tokens: list[str] = []
    assets = model_dir / "assets" if model_dir else None
    if assets and assets.is_dir():
        for path in sorted(p for p in assets.rglob("*")
                           if p.is_file() and inside(model_dir, p)):  # never outside
            try:
                lines = path.read_text().splitlines()
            except UnicodeDecodeError:
                continue
            tokens += [line.split("\t")[0] for line in lines[:1000] if line]
    return tokens


# Words for raw text inputs when the model has no vocabulary asset (TF Text's tokenizers
# keep theirs inside the graph).
TEXT_WORDS = ("the", "a", "of", "and", "to", "in", "is", "was", "it", "this", "that", "not",
              "very", "good", "bad", "great", "movie", "story", "people", "time", "day",
              "running", "played", "quickly", "Hello", "World", "don't", "U.S.", "2024",
              "naïve", "café", "unbelievable", "tokenization", "!", "?", ",")


def sentence(rng: np.random.Generator, tokens: list[str]) -> bytes:
    """One sentence of 1 to 24 words, UTF-8: words from `tokens` (a vocabulary; WordPiece
    suffixes `##x` dropped) mixed with TEXT_WORDS."""
    words = [t for t in tokens if t and not t.startswith("##") and not t.startswith("[")]
    pool = list(TEXT_WORDS) + words[:2000]
    count = int(rng.integers(1, 25))
    picked = [pool[i] for i in rng.integers(0, len(pool), count)]
    picked = [w.capitalize() if rng.random() < 0.1 else w for w in picked]
    return " ".join(picked).encode()


def _example(specs: list[FeatureSpec], rng: np.random.Generator, tokens: list[str]) -> bytes:
    features = {}
    for spec in specs:
        count = int(np.prod(spec.shape)) if spec.shape is not None else int(rng.integers(1, 4))
        if spec.dtype == tf.string:
            pool = tokens + ["<out-of-vocabulary>"] if tokens else ["a", "b", "c"]
            values = [pool[i].encode() for i in rng.integers(0, len(pool), count)]
            features[spec.key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif spec.dtype.is_integer:
            values = rng.integers(0, 3, count).tolist()
            features[spec.key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            values = rng.random(count).tolist()
            features[spec.key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _random_tensor(info: meta_graph_pb2.TensorInfo, batch_size: int,
                   rng: np.random.Generator, examples) -> np.ndarray:
    dtype = tf.dtypes.as_dtype(info.dtype)
    if info.tensor_shape.unknown_rank:
        shape: tuple[int, ...] = (batch_size,)
    else:
        dims = [d.size for d in info.tensor_shape.dim]
        shape = tuple(batch_size if (i == 0 and d < 0) else (UNKNOWN_DIM if d < 0 else d)
                      for i, d in enumerate(dims))
    if dtype == tf.string:
        count = int(np.prod(shape))
        return np.array([examples() for _ in range(count)], dtype=object).reshape(shape)
    if dtype == tf.bool:
        return rng.random(shape) < 0.5
    if dtype.is_integer:
        return rng.integers(0, 2, shape).astype(dtype.as_numpy_dtype)
    return rng.random(shape).astype(dtype.as_numpy_dtype)


def generate_inputs(signature: meta_graph_pb2.SignatureDef, specs: Sequence[FeatureSpec],
                    batch_size: int, rng: np.random.Generator,
                    tokens: list[str] = ()) -> dict[str, np.ndarray]:
    """One batch of inputs for `signature`, keyed by signature input key; string inputs
    are serialized tf.Examples of `specs` (example_feature_specs of the model's graph)
    where the model parses them, else sentences."""
    refuse_oversized_batches(signature, batch_size)
    tokens = list(tokens)

    def examples() -> bytes:
        return _example(specs, rng, tokens) if specs else sentence(rng, tokens)

    return {key: _random_tensor(info, batch_size, rng, examples)
            for key, info in sorted(signature.inputs.items())}
