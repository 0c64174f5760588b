"""Real models built here, offline, for the tests: each exported as a SavedModel.

- seed CNN (the seed experiment's architecture), trained briefly on the digits
- MobileNetV2 from keras.applications (weights=None), trained briefly on the digits
- a TFX-style model whose serving signature parses serialized tf.Example and looks words
  up in a vocabulary asset (what TFX Transform produces)
- a model with two signatures (classify and regress) that share weights
- a TF1-style estimator export (tf.compat.v1 graph, vocabulary in the assets collection)
Trained models make top-1 agreement meaningful: an untrained classifier scores every
class about the same, and its argmax flips on noise.
"""

from __future__ import annotations

from pathlib import Path

from components.core.tf_setup import tf

import numpy as np

from pipelines.digits.model import digits_28x28, seed_cnn
from pipelines.zoo_models import spread_batch_norms


def _fit_quietly(model, images, labels, epochs: int) -> None:
    import keras

    keras.utils.set_random_seed(0)
    model.fit(images, labels, epochs=epochs, batch_size=64, verbose=0)


def export_seed_cnn(out: Path) -> Path:
    images, labels = digits_28x28()
    model = seed_cnn()
    _fit_quietly(model, images, labels, epochs=3)
    model.export(str(out), verbose=False)
    np.savez(out.parent / f"{out.name}-inputs.npz", image=images[:256])
    return out


def export_mobilenet_v2(out: Path) -> Path:
    import keras

    images, labels = digits_28x28()
    rgb = np.repeat(np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)  # 32x32x3
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35,
                                           weights=None, classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    _fit_quietly(model, rgb, labels, epochs=2)
    model.export(str(out), verbose=False)
    input_key = model.inputs[0].name
    np.savez(out.parent / f"{out.name}-inputs.npz", **{input_key: rgb[:256]})
    return out


VOCABULARY = [f"word{i:04d}" for i in range(2000)]


class _ExampleVocabModel(tf.Module):
    """Parses tf.Example, looks the word up in a vocabulary asset, classifies it."""

    def __init__(self, vocabulary: Path):
        initializer = tf.lookup.TextFileInitializer(
            str(vocabulary), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)
        self.table = tf.lookup.StaticHashTable(initializer, default_value=-1)
        rng = np.random.default_rng(0)
        self.embedding = tf.Variable(rng.normal(size=(len(VOCABULARY) + 1, 64)).astype("f4"))
        self.hidden = tf.Variable(rng.normal(size=(65, 128)).astype("f4") / 8)
        self.logits = tf.Variable(rng.normal(size=(128, 5)).astype("f4") / 8)

    def scores(self, ids, size):
        x = tf.concat([tf.gather(self.embedding, ids), size[:, None]], axis=1)
        return tf.matmul(tf.nn.relu(tf.matmul(x, self.hidden)), self.logits)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        features = tf.io.parse_example(examples, {
            "word": tf.io.FixedLenFeature([], tf.string),
            "size": tf.io.FixedLenFeature([], tf.float32)})
        ids = self.table.lookup(features["word"]) + 1  # out-of-vocabulary -> row 0
        return {"probabilities": tf.nn.softmax(self.scores(ids, features["size"]))}

    def train(self, steps: int = 300) -> None:
        """A synthetic task (class = word index mod 5) so the classifier is confident."""
        ids = np.arange(1, len(VOCABULARY) + 1)
        labels = (ids - 1) % 5
        optimizer = tf.keras.optimizers.Adam(0.01)
        variables = [self.embedding, self.hidden, self.logits]
        rng = np.random.default_rng(0)
        for _ in range(steps):
            batch = rng.integers(0, len(ids), 256)
            with tf.GradientTape() as tape:
                sizes = tf.constant(rng.random(256), tf.float32)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels[batch], self.scores(ids[batch], sizes)))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables,
                                          strict=True))


def export_example_vocab_model(out: Path) -> Path:
    vocabulary = out.parent / f"{out.name}-vocab.txt"
    vocabulary.write_text("\n".join(VOCABULARY) + "\n")
    module = _ExampleVocabModel(vocabulary)
    module.train()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    return out


def word_examples(count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(count):
        word = (VOCABULARY + ["unknown-word"])[rng.integers(0, len(VOCABULARY) + 1)]
        example = tf.train.Example(features=tf.train.Features(feature={
            "word": tf.train.Feature(bytes_list=tf.train.BytesList(value=[word.encode()])),
            "size": tf.train.Feature(float_list=tf.train.FloatList(value=[rng.random()]))}))
        records.append(example.SerializeToString())
    return np.array(records, dtype=object)


class _TwoSignatureModel(tf.Module):
    """Two signatures over shared layers: `serving_default` classifies, `regress` scores."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.w1 = tf.Variable(rng.normal(size=(16, 512)).astype("f4") / 4)
        self.b1 = tf.Variable(np.zeros(512, "f4"))
        self.w2 = tf.Variable(rng.normal(size=(512, 512)).astype("f4") / 22)
        self.w_class = tf.Variable(rng.normal(size=(512, 6)).astype("f4") / 22)
        self.w_reg = tf.Variable(rng.normal(size=(512, 1)).astype("f4") / 22)

    def _hidden(self, x):
        h = tf.nn.relu(tf.matmul(tf.identity(x), tf.identity(self.w1)) + self.b1)
        return tf.nn.relu(tf.matmul(h, self.w2))

    def class_scores(self, features):
        return tf.matmul(self._hidden(features), self.w_class)

    @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="features")])
    def classify(self, features):
        return {"probabilities": tf.nn.softmax(self.class_scores(features))}

    @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="features")])
    def regress(self, features):
        return {"value": tf.matmul(self._hidden(features), self.w_reg)}

    def train(self, steps: int = 200) -> None:
        """A synthetic task (class = the largest of the first 6 features)."""
        optimizer = tf.keras.optimizers.Adam(0.003)
        variables = [self.w1, self.b1, self.w2, self.w_class]
        rng = np.random.default_rng(0)
        for _ in range(steps):
            x = rng.random((256, 16)).astype("f4")
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    np.argmax(x[:, :6], axis=1), self.class_scores(x)))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables,
                                          strict=True))


def export_two_signature_model(out: Path) -> Path:
    module = _TwoSignatureModel()
    module.train()
    tf.saved_model.save(module, str(out), signatures={
        "serving_default": module.classify, "regress": module.regress})
    return out


def export_demo_cnn(out: Path) -> Path:
    """The demo pipeline's model as its trainer exports it (ExportArchive, two signatures
    that share every weight: image tensor and serialized tf.Example)."""
    from pipelines.digits.trainer import export_for_serving

    images, labels = digits_28x28()
    model = seed_cnn()
    _fit_quietly(model, images, labels, epochs=1)
    export_for_serving(model, out)
    np.savez(out.parent / f"{out.name}-inputs.npz", image=images[:128])
    return out


def export_resnet50(out: Path) -> Path:
    """keras.applications.ResNet50 (weights=None, 32x32x3) with non-trivial BN statistics."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=10)
    spread_batch_norms(model)
    model.export(str(out), verbose=False)
    rgb = np.random.default_rng(1).random((32, 32, 32, 3)).astype("f4")
    np.savez(out.parent / f"{out.name}-inputs.npz", **{model.inputs[0].name: rgb})
    return out


def export_tf1_vocab_model(out: Path, vocabulary_size: int = 50) -> Path:
    """A TF1-style SavedModel like a TFX estimator export (the seed's own kind): built with
    tf.compat.v1 (placeholders, variables, a Session), a vocabulary registered in the
    assets collection, a table initialized from it by the main op, and `predict` and
    `classification` (serving_default) signatures over serialized tf.Example. The asset
    tensor holds the exporting machine's absolute vocabulary path; the loader feeds it
    the model's own `assets/` copy instead."""
    v1 = tf.compat.v1
    vocabulary = out.parent / f"{out.name}-vocab.txt"
    vocabulary.write_text("\n".join(VOCABULARY[:vocabulary_size]) + "\n")
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, [None], name="input_example_tensor")
        features = v1.io.parse_example(serialized, {
            "word": v1.io.FixedLenFeature([], tf.string),
            "size": v1.io.FixedLenFeature([], tf.float32)})
        asset = tf.constant(str(vocabulary), name="vocabulary_asset")
        table = v1.lookup.StaticHashTable(v1.lookup.TextFileInitializer(
            asset, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)
        if asset.name not in {t.name for t in v1.get_collection(
                v1.GraphKeys.ASSET_FILEPATHS)}:  # the initializer registers it itself
            v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset)
        ids = table.lookup(features["word"]) + 1  # out-of-vocabulary -> row 0
        embedding = v1.get_variable("embedding", initializer=rng.normal(
            size=(vocabulary_size + 1, 8)).astype("f4"), use_resource=False)  # TF1's kind
        weights = v1.get_variable("weights", initializer=rng.normal(size=(9, 3)).astype("f4"),
                                  use_resource=False)
        hidden = tf.concat([tf.gather(embedding, ids), features["size"][:, None]], axis=1)
        scores = tf.nn.softmax(tf.matmul(hidden, weights), name="scores")
        classes = tf.tile(tf.constant([["0", "1", "2"]]), [tf.shape(scores)[0], 1])
        signatures = {
            "serving_default": v1.saved_model.classification_signature_def(
                serialized, classes, scores),
            "predict": v1.saved_model.predict_signature_def(
                {"examples": serialized}, {"scores": scores, "ids": ids})}
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(out))
            builder.add_meta_graph_and_variables(
                session, [tf.saved_model.SERVING], signature_def_map=signatures,
                assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
                main_op=v1.tables_initializer())
            builder.save()
    return out


def tflite_variant(saved_model: Path, out: Path, int8: bool = True) -> Path:
    """A TFLite variant as TF Serving's --prefer_tflite_model serves it: a copy of the
    SavedModel with `model.tflite` beside `saved_model.pb` and its serving requirements."""
    import shutil

    from components.core.requirements import (
        PREFER_TFLITE_FLAG,
        TFLITE_MODEL_FILE,
        TFLITE_RUNTIME,
        ServingRequirements,
        write_requirements,
    )

    shutil.copytree(saved_model, out)
    (out / TFLITE_MODEL_FILE).write_bytes(tflite_bytes(saved_model, int8))
    write_requirements(out, ServingRequirements(
        runtime=TFLITE_RUNTIME, precision="int8" if int8 else "float32",
        server_flags=(PREFER_TFLITE_FLAG,)))
    return out


def tflite_bytes(saved_model: Path, int8: bool = True) -> bytes:
    """model.tflite as the Quantizer writes it (every signature that converts, in the
    primary subgraph, with signature_defs_metadata): dynamic-range int8 or float32."""
    from components.core.freeze import freeze
    from components.core.tflite import convert_signatures
    from components.core.verify import Reference

    reference = Reference(saved_model, num_examples=16, batch_size=16)
    mode = "dynamic_int8" if int8 else "float32"
    return convert_signatures(freeze(saved_model).graph, mode, reference).flatbuffer


def converter_tflite_bytes(saved_model: Path) -> bytes:
    """The TFLite converter's own output, without signature_defs_metadata (what servopt
    wrote before TF Serving's signature rules were modelled)."""
    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert()
