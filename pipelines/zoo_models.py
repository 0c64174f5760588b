"""The model zoo's models and their examples, built offline.

Each builder exports a SavedModel to `out` (what a Trainer hands the pipeline) and
returns its path; `write_examples` writes a TFX-style Examples directory
(`Split-eval/*.gz`, TFRecords of tf.Example) that the pipeline reads.

- demo CNN: the digits demo's model (pipelines/digits), trained one epoch, exported as its
  trainer exports it; examples: the digits eval split, true labels.
- MobileNetV2, ResNet50: `keras.applications` at their ImageNet shape (224x224x3, 1000
  classes), weights=None (no download here), batch norms given non-trivial statistics so
  that folding them is visible; examples: random images, labelled with the exported
  model's own top-1 class, so "accuracy" is the agreement with the source model.
- the text models (builders in pipelines/zoo_text.py: a BERT-like encoder, a classifier that
  tokenizes raw strings with TF Text in its graph): their builders leave real inputs in
  `<name>-inputs.npz` beside the SavedModel; `write_examples` uses them, labelled the
  same way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

IMAGE_SHAPE = (224, 224, 3)
EVAL_SPLIT = "Split-eval"
RECORDS_FILE = "data_tfrecord-00000-of-00001.gz"


def export_demo_cnn(out: Path) -> Path:
    import keras

    from pipelines.digits.config import TrainerSettings
    from pipelines.digits.model import digits_28x28, seed_cnn
    from pipelines.digits.trainer import export_for_serving

    images, labels = digits_28x28()
    settings = TrainerSettings()  # trained as the demo's Trainer trains it
    keras.utils.set_random_seed(settings.seed)
    model = seed_cnn(settings.dense_units)
    model.fit(images, labels, epochs=settings.epochs, batch_size=32, verbose=0)
    export_for_serving(model, out)
    return out


def digits_examples(model_dir: Path, out: Path, count: int) -> Path:
    """The digits demo's own examples (its eval split holds the true labels)."""
    from pipelines.digits.example_gen import write_examples

    write_examples(out)
    return out


def spread_batch_norms(model) -> None:
    """Untrained batch norms are identities (scale 1, offset 0); give them the statistics a
    trained net has, so folding them is numerically visible (the zoo and the tests)."""
    import keras

    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, shape).astype("f4"),
                               rng.normal(0, 0.1, shape).astype("f4"),
                               rng.normal(0, 0.1, shape).astype("f4"),
                               rng.uniform(0.5, 2.0, shape).astype("f4")])


def _export_application(name: str, out: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(input_shape=IMAGE_SHAPE, weights=None,
                                              classes=1000)
    spread_batch_norms(model)
    model.export(str(out), verbose=False)
    return out


def export_mobilenet_v2(out: Path) -> Path:
    return _export_application("MobileNetV2", out)


def export_resnet50(out: Path) -> Path:
    return _export_application("ResNet50", out)


def _random_inputs(signature, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs for every tensor of `signature` (a concrete function): floats in [0, 1),
    integers below 100 (masks: ones), strings of words."""
    from components.core.tf_setup import tf

    _, specs = signature.structured_input_signature
    feeds = {}
    for key, spec in specs.items():
        shape = [count, *[d if d is not None else 8 for d in spec.shape.as_list()[1:]]]
        if spec.dtype.is_floating:
            feeds[key] = rng.random(shape).astype(spec.dtype.as_numpy_dtype)
        elif spec.dtype.is_integer:
            values = (np.ones(shape) if "mask" in key else rng.integers(1, 100, shape))
            feeds[key] = values.astype(spec.dtype.as_numpy_dtype)
        elif spec.dtype == tf.string:
            words = np.array(["the", "model", "serves", "fast", "slow", "text", "zoo"])
            feeds[key] = np.array([" ".join(rng.choice(words, 6)) for _ in range(count)],
                                  dtype=object).reshape(shape[:1] + [1] * (len(shape) - 1))
        else:
            raise ValueError(f"input '{key}' has dtype {spec.dtype.name}, which the zoo "
                             "cannot make examples for; give the model its own examples")
    return feeds


def _top1(outputs: dict) -> np.ndarray | None:
    """The top-1 class of the first 2-D output (by name), None without one."""
    for key in sorted(outputs):
        values = np.asarray(outputs[key])
        if values.ndim == 2 and values.shape[1] > 1:
            return values.argmax(axis=1)
    return None


def _feature(values: np.ndarray):
    from components.core.tf_setup import tf

    flat = np.asarray(values).ravel()  # one example's value: an array, or a str of a text
    if flat.dtype == object or flat.dtype.kind in "US":
        return tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[str(v).encode() for v in flat]))
    if np.issubdtype(flat.dtype, np.integer):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=flat.tolist()))
    return tf.train.Feature(float_list=tf.train.FloatList(value=flat.tolist()))


def write_examples(model_dir: Path, out: Path, count: int, seed: int = 0) -> Path:
    """`count` examples for the serving signature of `model_dir`, one feature per input
    (named after it, as the pipeline feeds tensors), and `label`: the model's own top-1
    class where it has a classifier output."""
    from components.core.tf_setup import tf

    with contextlib.suppress(ImportError):  # TF Text ops load once registered
        import tensorflow_text  # noqa: F401
    loaded = tf.saved_model.load(str(model_dir))
    signature = loaded.signatures["serving_default"]
    given = Path(model_dir).parent / f"{Path(model_dir).name}-inputs.npz"
    if given.is_file():  # the builder's real inputs
        with np.load(given) as arrays:
            feeds = {key: arrays[key][:count] for key in arrays.files}
        feeds = {key: (values.astype(object) if values.dtype.kind == "U" else values)
                 for key, values in feeds.items()}
        count = min(len(values) for values in feeds.values())
    else:
        feeds = _random_inputs(signature, count, np.random.default_rng(seed))
    labels = []
    for start in range(0, count, 16):
        batch = {k: tf.constant(v[start:start + 16]) for k, v in feeds.items()}
        top1 = _top1({k: v.numpy() for k, v in signature(**batch).items()})
        labels.extend([] if top1 is None else top1.tolist())
    directory = out / EVAL_SPLIT
    directory.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(directory / RECORDS_FILE), options="GZIP") as writer:
        for index in range(count):
            features = {key: _feature(values[index]) for key, values in feeds.items()}
            if labels:
                features["label"] = _feature(np.array([labels[index]], dtype=np.int64))
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=features)).SerializeToString())
    return out
