"""DigitsExampleGen: scikit-learn's handwritten digits as a TFX Examples artifact.

Writes gzipped TFRecords of tf.Example (`image`: 784 floats of a 28x28 image in [0, 1],
`label`: int64) in TFX's layout, `Split-train/` and `Split-eval/`, exactly as ExampleGen
does, so any TFX component that reads Examples reads these. Where full TFX installs,
swap in `tfx.components.ImportExampleGen(input_base=...)` over the same TFRecords.
"""


from pathlib import Path

import numpy as np
from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from pipelines.digits.model import IMAGE_KEY, LABEL_KEY, digits_28x28

SPLITS = ("train", "eval")


def write_examples(root: Path, eval_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    """Writes Split-train/ and Split-eval/ under `root`; returns the example counts."""
    from components.core.tf_setup import tf

    images, labels = digits_28x28()
    order = np.random.default_rng(seed).permutation(len(labels))
    n_eval = int(round(len(labels) * eval_fraction))
    indices = {"eval": order[:n_eval], "train": order[n_eval:]}
    for split in SPLITS:
        directory = root / f"Split-{split}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "data_tfrecord-00000-of-00001.gz"
        with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
            for i in indices[split]:
                example = tf.train.Example(features=tf.train.Features(feature={
                    IMAGE_KEY: tf.train.Feature(float_list=tf.train.FloatList(
                        value=images[i].ravel())),
                    LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
                        value=[int(labels[i])]))}))
                writer.write(example.SerializeToString())
    return {split: len(indices[split]) for split in SPLITS}


@component
def DigitsExampleGen(examples: OutputArtifact[standard_artifacts.Examples],
                     eval_fraction: Parameter[float] = 0.2, seed: Parameter[int] = 0) -> None:
    counts = write_examples(Path(examples.uri), eval_fraction, seed)
    examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
    for split, count in counts.items():
        examples.set_int_custom_property(f"num_{split}_examples", count)
