"""Accuracy of every model on labelled examples, and candidates against the baseline,
as an Apache Beam pipeline (DirectRunner locally, any runner through pipeline args).

TFRecords of tf.Example are read, batched (`beam.BatchElements`), and run through every
model by one DoFn that loads each model once per worker (`setup`) the way it is served
(ServingSession, or the TFLite interpreter for tflite models). A signature that takes
serialized tf.Example is fed the records as they are; one that takes tensors is fed each
input from the feature of the same name (see components.core.examples). Labels are the
`label_key` feature of each example. Per-batch counts are combined into, per model:
accuracy against the labels, and for candidates top-1 agreement with the baseline and
the largest absolute output difference.

The classifier output is `output_key`, else the first float output shaped
[batch, classes >= 2] (top-1 = argmax), else a [batch] or [batch, 1] score in [0, 1]
(a binary classifier: positive above 0.5). Without such an output accuracy and agreement
are None; the output difference is still computed.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.core.benchmark.engines import EngineSpec
from components.core.benchmark.schema import AccuracyResult
from components.core.errors import ServoptError
from components.core.examples import (
    feature_values,
    read_records,
    records_to_feeds,
    tfrecord_files,
)

MAX_BATCH = 256
RESULT_FILE = "accuracy.json"


@dataclass(frozen=True)
class AccuracyModel:
    name: str
    engine: EngineSpec


def check_label_key(examples: Path, label_key: str) -> None:
    """Fails early, naming the path and the key, when the examples have no such label."""
    record = read_records(Path(examples), 1)[0]
    from components.core.tf_setup import tf

    example = tf.train.Example.FromString(record)
    if not feature_values(example, label_key):
        present = sorted(example.features.feature)
        raise ServoptError(f"{examples}: the examples have no label feature '{label_key}' "
                           f"(features: {present}); pass the label's feature name with "
                           "--label-key")


def classifier_output(outputs: dict[str, np.ndarray], output_key: str | None,
                      model: str) -> np.ndarray | None:
    """The output predictions are read from (see the module docstring)."""
    if output_key is not None:
        if output_key not in outputs:
            raise ServoptError(f"{model}: no output '{output_key}' (has {sorted(outputs)}); "
                               "choose the classifier output with --output-key")
        return np.asarray(outputs[output_key])
    floats = {k: np.asarray(v) for k, v in sorted(outputs.items())
              if np.issubdtype(np.asarray(v).dtype, np.floating)}
    for value in floats.values():
        if value.ndim == 2 and value.shape[1] >= 2:
            return value
    for value in floats.values():
        if value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1):
            return value
    return None


def top1(scores: np.ndarray | None) -> np.ndarray | None:
    """Predicted classes: argmax of [batch, classes], or a [0, 1] score above 0.5."""
    if scores is None or not np.issubdtype(scores.dtype, np.number):
        return None
    if scores.ndim == 2 and scores.shape[1] >= 2:
        return np.argmax(scores, axis=1)
    flat = scores.reshape(len(scores))
    if flat.size and (flat.min() < 0 or flat.max() > 1):
        return None  # not a probability: a regression or a logit, no class to read
    return (flat > 0.5).astype(np.int64)


def _labels(records: Sequence[bytes], label_key: str, source: Path) -> np.ndarray | None:
    from components.core.tf_setup import tf

    labels = []
    for record in records:
        values = feature_values(tf.train.Example.FromString(record), label_key)
        if not values:
            raise ServoptError(f"{source}: an example has no label feature '{label_key}'; "
                               "every example needs its label")
        labels.append(values[0])
    try:
        return np.asarray(labels).astype(np.int64)
    except (ValueError, TypeError):  # string labels: no class index to compare with
        return None


def _max_abs_diff(baseline: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                  base_scores: np.ndarray | None, cand_scores: np.ndarray | None
                  ) -> float | None:
    pairs = [(np.asarray(baseline[k]), np.asarray(candidate[k]))
             for k in sorted(set(baseline) & set(candidate))]
    if not pairs and base_scores is not None and cand_scores is not None:
        pairs = [(base_scores, cand_scores)]  # e.g. a TFLite model names outputs its own way
    diffs = [float(np.max(np.abs(c.astype(np.float64) - b.astype(np.float64))))
             for b, c in pairs if b.shape == c.shape and b.size
             and np.issubdtype(b.dtype, np.number) and np.issubdtype(c.dtype, np.number)]
    return max(diffs) if diffs else None


def _empty_counts() -> dict:
    return {"n": 0, "correct": 0, "labelled": 0, "agree": 0, "compared": 0,
            "max_abs_diff": None}


def merge_counts(partials: Iterable[dict]) -> dict:
    """Sums per-model counts (and keeps the largest difference): Beam's combine step."""
    merged: dict[str, dict] = {}
    for partial in partials:
        for name, counts in partial.items():
            total = merged.setdefault(name, _empty_counts())
            for key in ("n", "correct", "labelled", "agree", "compared"):
                total[key] += counts[key]
            diffs = [d for d in (total["max_abs_diff"], counts["max_abs_diff"]) if d is not None]
            total["max_abs_diff"] = max(diffs) if diffs else None
    return merged


def _predict_dofn():
    import apache_beam as beam

    class PredictDoFn(beam.DoFn):
        """Runs every model on each batch; loads the models once per worker."""

        def __init__(self, models: Sequence[AccuracyModel], label_key: str | None,
                     output_key: str | None, source: str):
            self.models, self.label_key = list(models), label_key
            self.output_key, self.source = output_key, source

        def setup(self):
            from components.core.benchmark.engines import make_engine
            from components.core.benchmark.feeds import read_signature

            self._engines = {m.name: make_engine(m.engine) for m in self.models}
            self._signatures = {
                m.name: read_signature(Path(m.engine.model_path), m.engine.runtime,
                                       m.engine.signature).signature for m in self.models}

        def process(self, records):
            source = Path(self.source)
            labels = _labels(records, self.label_key, source) if self.label_key else None
            counts, base = {}, None
            for index, model in enumerate(self.models):
                feeds = records_to_feeds(list(records), self._signatures[model.name], source)
                outputs = self._engines[model.name].run(feeds)
                scores = classifier_output(outputs, self.output_key, model.name)
                predicted = top1(scores)
                count = _empty_counts()
                count["n"] = len(records)
                if labels is not None and predicted is not None:
                    count["labelled"] = len(records)
                    count["correct"] = int(np.sum(predicted == labels))
                if index == 0:
                    base = (outputs, scores, predicted)
                else:
                    if predicted is not None and base[2] is not None:
                        count["compared"] = len(records)
                        count["agree"] = int(np.sum(predicted == base[2]))
                    count["max_abs_diff"] = _max_abs_diff(base[0], outputs, base[1], scores)
                counts[model.name] = count
            yield counts

        def teardown(self):
            for engine in getattr(self, "_engines", {}).values():
                engine.close()

    return PredictDoFn


def _gzipped(file: Path) -> bool:
    with open(file, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _read_transform(files: Sequence[Path]):
    import apache_beam as beam
    from apache_beam.io.filesystem import CompressionTypes

    class ReadRecords(beam.PTransform):
        def expand(self, pbegin):
            reads = [pbegin | f"Read{i}" >> beam.io.ReadFromTFRecord(
                str(file), validate=False,
                compression_type=(CompressionTypes.GZIP if _gzipped(file)
                                  else CompressionTypes.UNCOMPRESSED))
                for i, file in enumerate(files)]
            return tuple(reads) | beam.Flatten()

    return ReadRecords()


def compute_accuracy(models: Sequence[AccuracyModel], examples: Path,
                     label_key: str | None = None, output_key: str | None = None,
                     beam_pipeline_args: Sequence[str] = (), work_dir: Path | None = None
                     ) -> dict[str, AccuracyResult]:
    """Accuracy per model; the first model is the baseline candidates are compared with.

    `work_dir` receives the combined counts; with a distributed runner it must be a
    location both the workers and this process reach (default: a local temp dir).
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    if not models:
        return {}
    examples = Path(examples)
    files = tfrecord_files(examples)
    if label_key is not None:
        check_label_key(examples, label_key)
    scratch = Path(tempfile.mkdtemp(prefix="servopt-accuracy-")) if work_dir is None else None
    out_dir = Path(work_dir) if work_dir is not None else scratch
    beam_errors = logging.getLogger("apache_beam.runners.common")
    level = beam_errors.level
    beam_errors.setLevel(logging.CRITICAL)  # the error is re-raised below, in one line
    try:
        with beam.Pipeline(options=PipelineOptions(list(beam_pipeline_args))) as pipeline:
            _ = (pipeline
                 | "ReadExamples" >> _read_transform(files)
                 | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=MAX_BATCH)
                 | "Predict" >> beam.ParDo(_predict_dofn()(models, label_key, output_key,
                                                           str(examples)))
                 | "Combine" >> beam.CombineGlobally(merge_counts)
                 | "ToJson" >> beam.Map(json.dumps)
                 | "Write" >> beam.io.WriteToText(str(out_dir / RESULT_FILE),
                                                  shard_name_template=""))
        merged = json.loads((out_dir / RESULT_FILE).read_text())
    except ServoptError as err:
        raise ServoptError(str(err).split(" [while running")[0]) from None
    finally:
        beam_errors.setLevel(level)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    results = {}
    for index, model in enumerate(models):
        counts = merged.get(model.name, _empty_counts())
        results[model.name] = AccuracyResult(
            accuracy=counts["correct"] / counts["labelled"] if counts["labelled"] else None,
            top1_agreement=(counts["agree"] / counts["compared"]
                            if index and counts["compared"] else None),
            max_abs_diff=counts["max_abs_diff"] if index else None,
            num_examples=counts["n"])
    return results
