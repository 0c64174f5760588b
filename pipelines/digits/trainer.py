"""DigitsTrainer: trains the seed CNN and writes a Trainer-compatible Model and ModelRun.

The Model holds the SavedModel under `Format-Serving/`, as TFX's Trainer writes it, with
two signatures: `serving_default` takes the image tensor (what the seed experiment
served), `serving_examples` takes serialized tf.Example (TFX's serving convention).
Export goes through Keras' ExportArchive, which TF Serving's Session loader runs; a Keras 3
model passed straight to tf.saved_model.save tracks its variables twice and does not run
in a Session. Where full TFX installs, swap in `tfx.components.Trainer` with a run_fn
that exports the same way.
"""


import json
from pathlib import Path

import numpy as np
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from pipelines.digits.model import IMAGE_KEY, IMAGE_SIZE, LABEL_KEY, seed_cnn

SERVING_DIR = "Format-Serving"


def read_split(examples_uri: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    from components.core.tf_setup import tf

    files = sorted(str(p) for p in (Path(examples_uri) / f"Split-{split}").glob("*"))
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([IMAGE_SIZE * IMAGE_SIZE], tf.float32),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096).map(
        lambda records: tf.io.parse_example(records, spec))
    batches = list(dataset.as_numpy_iterator())
    images = np.concatenate([b[IMAGE_KEY] for b in batches])
    labels = np.concatenate([b[LABEL_KEY] for b in batches])
    return images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1), labels


def export_for_serving(model, out_dir: Path) -> None:
    from components.core.tf_setup import tf

    import keras

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1],
                                                tf.float32, name=IMAGE_KEY)])
    def serve_images(image):
        return {"probabilities": model(image, training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        features = tf.io.parse_example(examples, {
            IMAGE_KEY: tf.io.FixedLenFeature([IMAGE_SIZE * IMAGE_SIZE], tf.float32)})
        images = tf.reshape(features[IMAGE_KEY], [-1, IMAGE_SIZE, IMAGE_SIZE, 1])
        return {"probabilities": model(images, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_images)
    archive.add_endpoint("serving_examples", serve_examples)
    archive.write_out(str(out_dir), verbose=False)


def train(examples_uri: str, serving_dir: Path, epochs: int, seed: int,
          dense_units: int = 512) -> dict:
    import keras

    keras.utils.set_random_seed(seed)
    train_x, train_y = read_split(examples_uri, "train")
    eval_x, eval_y = read_split(examples_uri, "eval")
    model = seed_cnn(dense_units)
    history = model.fit(train_x, train_y, epochs=epochs, batch_size=32, verbose=0,
                        validation_data=(eval_x, eval_y))
    _, eval_accuracy = model.evaluate(eval_x, eval_y, verbose=0)
    export_for_serving(model, serving_dir)
    return {"eval_accuracy": float(eval_accuracy),
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}


@component
def DigitsTrainer(examples: InputArtifact[standard_artifacts.Examples],
                  model: OutputArtifact[standard_artifacts.Model],
                  model_run: OutputArtifact[standard_artifacts.ModelRun],
                  epochs: Parameter[int] = 4, seed: Parameter[int] = 0,
                  dense_units: Parameter[int] = 512) -> None:
    summary = train(examples.uri, Path(model.uri) / SERVING_DIR, epochs, seed, dense_units)
    Path(model_run.uri).mkdir(parents=True, exist_ok=True)
    (Path(model_run.uri) / "training_summary.json").write_text(json.dumps(summary, indent=2))
    model.set_float_custom_property("eval_accuracy", summary["eval_accuracy"])
    model_run.set_float_custom_property("eval_accuracy", summary["eval_accuracy"])
