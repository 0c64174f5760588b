"""Accuracy in the benchmark: a Beam pipeline over labelled TFRecords, with a known answer.

The models echo a "guess" feature as a one-hot class, so every number the pipeline
reports can be counted independently here: the baseline takes tensors (the "guess"
feature fed by name), the candidate takes serialized tf.Example and moves guess 3 to 4.
"""

from __future__ import annotations

from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
import pytest

from components.core.benchmark.accuracy import AccuracyModel, compute_accuracy
from components.core.benchmark.engines import EngineSpec
from components.core.errors import ServoptError

NUM_EXAMPLES = 120


class _GuessFromTensor(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="guess")])
    def serve(self, guess):
        return {"probabilities": tf.one_hot(guess, 10)}


class _GuessFromExample(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        guess = tf.io.parse_example(
            examples, {"guess": tf.io.FixedLenFeature([], tf.int64)})["guess"]
        moved = tf.where(tf.equal(guess, 3), tf.constant(4, tf.int64), guess)
        return {"probabilities": tf.one_hot(moved, 10)}


def _labels_and_guesses() -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(NUM_EXAMPLES) % 10
    guesses = np.where(np.arange(NUM_EXAMPLES) % 4 == 0, (labels + 1) % 10, labels)
    return labels, guesses


def _write(path: Path, rows: list[dict[str, int]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in rows:
            feature = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
                       for k, v in row.items()}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                         .SerializeToString())
    return path


@pytest.fixture(scope="module")
def guess_models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("guess")
    tensor, example = _GuessFromTensor(), _GuessFromExample()
    tf.saved_model.save(tensor, str(root / "tensor"), signatures={"serving_default": tensor.serve})
    tf.saved_model.save(example, str(root / "example"),
                        signatures={"serving_default": example.serve})
    return root / "tensor", root / "example"


@pytest.fixture(scope="module")
def labelled_examples(tmp_path_factory) -> Path:
    """A TFX Examples artifact: the eval split is the one read."""
    root = tmp_path_factory.mktemp("examples")
    labels, guesses = _labels_and_guesses()
    _write(root / "Split-eval" / "data.tfrecord",
           [{"label": int(lab), "guess": int(g)} for lab, g in zip(labels, guesses, strict=True)])
    _write(root / "Split-train" / "data.tfrecord", [{"label": 0, "guess": 9}] * 10)
    return root


def _model(name: str, path: Path) -> AccuracyModel:
    return AccuracyModel(name, EngineSpec("tensorflow", str(path), "serving_default", 1, 1))


def test_accuracy_agreement_and_difference_match_an_independent_count(guess_models,
                                                                      labelled_examples):
    tensor_model, example_model = guess_models
    results = compute_accuracy([_model("base", tensor_model), _model("cand", example_model)],
                               labelled_examples, label_key="label")
    labels, guesses = _labels_and_guesses()
    moved = np.where(guesses == 3, 4, guesses)
    base, cand = results["base"], results["cand"]
    assert base.num_examples == cand.num_examples == NUM_EXAMPLES  # eval split only
    assert base.accuracy == pytest.approx(np.mean(guesses == labels))  # 0.75
    assert cand.accuracy == pytest.approx(np.mean(moved == labels))
    assert cand.top1_agreement == pytest.approx(np.mean(guesses != 3))
    assert cand.max_abs_diff == pytest.approx(1.0)  # one-hot moved: 1 -> 0 and 0 -> 1
    assert base.top1_agreement is None and base.max_abs_diff is None


def test_without_labels_candidates_are_still_compared_with_the_baseline(guess_models,
                                                                       labelled_examples):
    tensor_model, example_model = guess_models
    results = compute_accuracy([_model("base", tensor_model), _model("cand", example_model)],
                               labelled_examples, label_key=None,
                               beam_pipeline_args=["--runner=DirectRunner"])
    _, guesses = _labels_and_guesses()
    assert results["base"].accuracy is None and results["cand"].accuracy is None
    assert results["cand"].top1_agreement == pytest.approx(np.mean(guesses != 3))


def test_examples_without_the_label_key_fail_naming_the_path_and_the_key(guess_models,
                                                                          labelled_examples):
    with pytest.raises(ServoptError) as error:
        compute_accuracy([_model("base", guess_models[0])], labelled_examples,
                         label_key="class")
    message = str(error.value)
    assert str(labelled_examples) in message and "'class'" in message
    assert "--label-key" in message and len(message.splitlines()) == 1


def test_an_example_missing_its_label_later_in_the_data_fails_with_one_line(guess_models,
                                                                            tmp_path):
    rows = [{"label": 1, "guess": 1}] * 20 + [{"guess": 2}] + [{"label": 1, "guess": 1}] * 5
    path = _write(tmp_path / "partly-labelled.tfrecord", rows)
    with pytest.raises(ServoptError) as error:
        compute_accuracy([_model("base", guess_models[0])], path, label_key="label")
    message = str(error.value)
    assert message == (f"{path}: an example has no label feature 'label'; every example "
                       "needs its label")
