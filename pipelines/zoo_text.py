"""The zoo's text models (`servopt zoo run`, pipelines/zoo.py) and the suite's: a classifier
that tokenizes raw strings in its graph with TF Text, and a small BERT-like encoder.

Each builder takes the output directory, exports a SavedModel there and writes
`<name>-inputs.npz` (real inputs, keyed by the serving signature's input names) beside it;
each returns the SavedModel's path. They live in the package, not in tests/, so the zoo
runs from an installed wheel too.
"""

from __future__ import annotations

from pathlib import Path

from components.core.tf_setup import tf

import numpy as np

TEXT_WORDS = ["the", "a", "movie", "film", "plot", "actor", "good", "great", "bad",
              "boring", "fun", "was", "is", "very", "not", "really", "story", "end",
              "love", "hate", "music", "scene", "slow", "fast", "best", "worst"]
# WordPiece vocabulary: [UNK], whole words, and suffix pieces for words it does not hold.
TEXT_VOCABULARY = ["[UNK]", *TEXT_WORDS, "##s", "##ed", "##ing", "##ly", "##er", "##y"]
TEXT_MAX_TOKENS = 16


def text_sentences(count: int, seed: int = 0) -> np.ndarray:
    """`count` short English-like sentences (mixed case, words in and out of the
    vocabulary, suffixes), as the unicode array an .npz keeps without pickling."""
    rng = np.random.default_rng(seed)
    extra = ["Movies", "acting", "loved", "Boringly", "plots", "zebra", "ok!"]
    pool = TEXT_WORDS + extra
    return np.array([" ".join(pool[i] for i in rng.integers(0, len(pool),
                                                            int(rng.integers(2, 14))))
                     for _ in range(count)])


class _TextClassifier(tf.Module):
    """Raw strings in, class probabilities out, tokenized in the graph with TF Text (the
    pattern of TFX's BERT examples): case folding, whitespace words, WordPiece ids,
    an embedding, masked mean pooling and a dense layer."""

    def __init__(self, classes: int = 3, width: int = 32):
        import tensorflow_text as text

        rng = np.random.default_rng(0)
        self.words = text.WhitespaceTokenizer()
        self.pieces = text.FastWordpieceTokenizer(
            TEXT_VOCABULARY, token_out_type=tf.int64, no_pretokenization=True,
            unknown_token="[UNK]", support_detokenization=False)
        self.embedding = tf.Variable(rng.normal(size=(len(TEXT_VOCABULARY), width))
                                     .astype(np.float32), name="embedding")
        self.kernel = tf.Variable(rng.normal(size=(width, classes)).astype(np.float32) * 2,
                                  name="kernel")
        self.bias = tf.Variable(np.zeros(classes, np.float32), name="bias")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, sentences):
        import tensorflow_text as text

        words = self.words.tokenize(text.case_fold_utf8(sentences))
        ids = self.pieces.tokenize(words).merge_dims(1, 2)[:, :TEXT_MAX_TOKENS]
        dense = ids.to_tensor(default_value=-1, shape=[None, TEXT_MAX_TOKENS])
        mask = tf.cast(dense >= 0, tf.float32)[:, :, None]
        vectors = tf.gather(self.embedding, tf.maximum(dense, 0)) * mask
        pooled = tf.reduce_sum(vectors, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)
        logits = tf.matmul(pooled, self.kernel) + self.bias
        return {"probabilities": tf.nn.softmax(logits)}


def export_text_classifier(out: Path) -> Path:
    """A text classifier whose serving signature takes raw strings (`text`, [None]) and
    tokenizes them with TF Text ops (CaseFoldUTF8, TFText>WhitespaceTokenizeWithOffsetsV2,
    FastWordpieceTokenizeWithOffsets); needs tensorflow-text. Random weights (seeded)."""
    module = _TextClassifier()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    np.savez(out.parent / f"{out.name}-inputs.npz", text=text_sentences(128))
    return out


def text_model(tmp_path: Path) -> Path:
    """The text classifier (export_text_classifier) in `tmp_path`/text_model."""
    return export_text_classifier(Path(tmp_path) / "text_model")


ENCODER_VOCABULARY_SIZE = 120
ENCODER_SEQUENCE_LENGTH = 16


def export_transformer_encoder(out: Path, layers: int = 2, width: int = 32) -> Path:
    """A small BERT-like encoder built in Keras by hand (token and position embeddings,
    `layers` blocks of MultiHeadAttention + LayerNorm + feed-forward, mean pooling over
    the unpadded tokens, a 3-class head); its serving signature takes int32 `token_ids`
    and `padding_mask` [None, 16], as keras_hub's BERT does. Random weights (seeded).
    Real inputs: valid ids in `<name>-inputs.npz`."""
    import keras

    keras.utils.set_random_seed(0)
    token_ids = keras.Input((ENCODER_SEQUENCE_LENGTH,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((ENCODER_SEQUENCE_LENGTH,), dtype="int32", name="padding_mask")
    tokens = keras.layers.Embedding(ENCODER_VOCABULARY_SIZE, width)(token_ids)
    positions = keras.layers.Embedding(ENCODER_SEQUENCE_LENGTH, width)(
        keras.ops.arange(ENCODER_SEQUENCE_LENGTH)[None, :])
    x = keras.layers.LayerNormalization()(tokens + positions)
    mask = keras.ops.cast(padding_mask, "bool")
    attention_mask = keras.ops.logical_and(mask[:, :, None], mask[:, None, :])
    for _ in range(layers):
        attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=width // 2)(
            x, x, attention_mask=attention_mask)
        x = keras.layers.LayerNormalization()(x + attended)
        hidden = keras.layers.Dense(width * 2, activation="gelu")(x)
        x = keras.layers.LayerNormalization()(x + keras.layers.Dense(width)(hidden))
    weights = keras.ops.cast(padding_mask, "float32")[:, :, None]
    pooled = keras.ops.sum(x * weights, 1) / keras.ops.maximum(keras.ops.sum(weights, 1), 1.0)
    probabilities = keras.layers.Dense(3, activation="softmax")(pooled)
    model = keras.Model([token_ids, padding_mask], probabilities)
    model.export(str(out), verbose=False)
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, ENCODER_SEQUENCE_LENGTH + 1, 128)
    positions_ = np.arange(ENCODER_SEQUENCE_LENGTH)[None, :]
    mask_ = (positions_ < lengths[:, None]).astype(np.int32)
    ids = rng.integers(1, ENCODER_VOCABULARY_SIZE, (128, ENCODER_SEQUENCE_LENGTH)) * mask_
    np.savez(out.parent / f"{out.name}-inputs.npz", token_ids=ids.astype(np.int32),
             padding_mask=mask_)
    return out


def transformer_model(tmp_path: Path) -> Path:
    """The transformer encoder (export_transformer_encoder) in `tmp_path`/transformer."""
    return export_transformer_encoder(Path(tmp_path) / "transformer")
