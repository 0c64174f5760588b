"""TF1-style SavedModels, what TFX estimator Trainers export (the seed article's own
workflow): the vocabulary is an asset tensor in the assets collection, a Const holding
the exporting machine's absolute path that the loader feeds with the model's own copy,
and a main op initializes the table from it. Frozen, such a model must still read the
vocabulary it carries, on any machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from components.core.gate import scan_ops
from components.core.model_io import MAIN_OP_COLLECTION, read_saved_model, serving_meta_graph
from components.core.serving_session import ServingSession
from components.core.steps import optimize_model, parse_steps
from tests.model_zoo import VOCABULARY, word_examples


@pytest.fixture(scope="module")
def exported_elsewhere(tf1_vocab_model, tmp_path_factory) -> Path:
    """The TF1 model on a machine where the exporter's vocabulary path does not exist."""
    model = tmp_path_factory.mktemp("serving_machine") / "tf1_model"
    shutil.copytree(tf1_vocab_model, model)
    exporter_vocabulary = tf1_vocab_model.parent / f"{tf1_vocab_model.name}-vocab.txt"
    assert exporter_vocabulary.is_file()  # the path baked into the asset Const...
    exporter_vocabulary.rename(exporter_vocabulary.with_suffix(".moved"))  # ...is gone
    return model


def ids_of(model: Path, words: list[str]) -> np.ndarray:
    examples = word_examples(1)  # a template tf.Example with 'word' and 'size'
    from components.core.tf_setup import tf

    records = []
    for word in words:
        example = tf.train.Example.FromString(examples[0])
        example.features.feature["word"].bytes_list.value[:] = [word.encode()]
        records.append(example.SerializeToString())
    with ServingSession(model) as session:
        return session.run("predict", {"examples": np.array(records, dtype=object)})["ids"]


def test_a_tf1_model_reads_its_vocabulary_from_its_own_assets(exported_elsewhere):
    assert ids_of(exported_elsewhere, [VOCABULARY[0], VOCABULARY[7], "unknown"]).tolist() == [
        1, 8, 0]


def test_a_tf1_estimator_style_model_freezes_and_still_reads_its_own_vocabulary(
        exported_elsewhere, tmp_path):
    frozen = tmp_path / "frozen"
    report = optimize_model(exported_elsewhere, frozen, parse_steps("freeze,optimize"))
    assert [r.status for r in report.steps] == ["applied", "applied"]
    assert report.verification.passed and report.after.variable_count == 0
    assert set(report.after.signatures) == {"serving_default", "predict"}

    moved = tmp_path / "another_machine" / "frozen"  # served from somewhere else again
    shutil.copytree(frozen, moved)
    shutil.rmtree(frozen)
    assert ids_of(moved, [VOCABULARY[0], VOCABULARY[7], "unknown"]).tolist() == [1, 8, 0]

    meta_graph = serving_meta_graph(read_saved_model(moved), moved)
    [asset] = meta_graph.asset_file_def
    assert (moved / "assets" / asset.filename).is_file()
    asset_node = next(n for n in meta_graph.graph_def.node
                      if n.name == asset.tensor_info.name.split(":")[0])
    assert asset_node.op == "Placeholder"  # fed by the loader, no path baked in
    absolute = str(exported_elsewhere.parent).encode()
    assert absolute not in meta_graph.graph_def.SerializeToString()
    assert meta_graph.collection_def[MAIN_OP_COLLECTION].node_list.value  # init op kept


def test_a_tf1_models_vocabulary_table_passes_the_safety_scan(exported_elsewhere):
    scan = scan_ops(exported_elsewhere)
    assert scan.safe, scan.describe_unsafe()
    assert "InitializeTableFromTextFileV2" in scan.ops
