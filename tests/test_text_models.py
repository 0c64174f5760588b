"""Text and transformer models, as TFX's BERT examples serve them: raw strings in,
tokenized in the graph with TF Text's ops (which TF Serving's model server links), and a
small BERT-like encoder on int token ids. Real SavedModels built here (pipelines/zoo_text.py);
tensorflow-text is a test dependency (pyproject's dev group) and the `text` extra."""

from __future__ import annotations

from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
import pytest

from components.core.errors import ServoptError
from components.core.examples import batches_for_signature
from components.core.gate.warmup import replay_warmup, warmup_logs
from components.core.inputs import example_feature_specs, generate_inputs
from components.core.model_io import read_serving_graph
from components.core.optimize import PASSES, GraphPass, dangling_inputs, optimize
from components.core.rewrite import remove_identity
from components.core.safety import libraries, op_category, scan_ops
from components.core.safety.categories import COMPUTE, FILES, NOT_LINKED, OUTSIDE_STATE
from components.core.safety.libraries import TF_DECISION_FORESTS, TF_TEXT, OpLibrary
from components.core.safety.op_classes import classify_library
from components.core.safety.op_table import LIBRARY_OP_TABLE, OP_TABLE
from components.core.serving_session import ServingSession
from components.core.steps import OptimizeConfig, Step, optimize_model
from pipelines import zoo_text
from tests.fresh_process import fresh_process_facts

TEXT_OPS = {"CaseFoldUTF8", "TFText>WhitespaceTokenizeWithOffsetsV2",
            "FastWordpieceTokenizeWithOffsets"}


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    return zoo_text.text_model(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def encoder_model(tmp_path_factory) -> Path:
    return zoo_text.transformer_model(tmp_path_factory.mktemp("encoder"))


def _inputs(model: Path) -> Path:
    return model.parent / f"{model.name}-inputs.npz"


# ------------------------------------------------------------------ the allowlist

def test_every_op_tf_text_registers_is_classified_as_tf_serving_links_it():
    """In a fresh process (TF alone first), importing the pinned tensorflow-text adds
    exactly the ops the table classifies, each as the rules give it; an upgrade that
    brings an op fails here until op_table.py is regenerated and reviewed."""
    facts = fresh_process_facts()
    assert facts.text_load is None, facts.text_load
    added = facts.text_ops
    table = LIBRARY_OP_TABLE[TF_TEXT.key]
    assert sorted(added) == sorted(table), (
        "tensorflow-text registers ops the table does not classify (or no longer registers "
        "some): regenerate components/core/safety/op_table.py (python -m "
        "components.core.safety.op_classes) and review the new entries")
    assert {op: table[op] for op in added} == {
        op: classify_library(TF_TEXT, op, stateful) for op, stateful in added.items()}
    # TF Serving's pinned TF Text (v2.20.0) links every op the pinned package registers,
    # with the same statefulness.
    assert {op: added[op] for op in TF_TEXT.linked} == TF_TEXT.linked
    assert set(added).isdisjoint(OP_TABLE)


def test_an_op_tf_serving_does_not_link_is_never_allowed():
    newer = OpLibrary(key="tensorflow_text", name="TF Text", package="tensorflow-text",
                      tf_serving_target="", linked={"CaseFoldUTF8": False})
    assert classify_library(newer, "CaseFoldUTF8", False) == COMPUTE
    assert classify_library(newer, "TFText>SomethingNew", False) == NOT_LINKED


def test_tf_decision_forests_inference_ops_are_classified_from_source():
    table = LIBRARY_OP_TABLE[TF_DECISION_FORESTS.key]
    assert set(table) == set(TF_DECISION_FORESTS.linked)
    assert table["SimpleMLInferenceOpWithHandle"] == COMPUTE
    assert table["SimpleMLLoadModelFromPathWithHandle"] == FILES  # a path computed at run time
    assert table["SimpleMLInferenceOp"] == OUTSIDE_STATE  # any model's, by identifier
    # No tensorflow-decision-forests release fits this TF: its compute ops say so.
    assert "no release for this TensorFlow" in op_category("SimpleMLCreateModelResource")


def test_tf_text_ops_are_allowed_when_the_package_imports(text_model):
    scan = scan_ops(text_model)
    assert scan.safe, scan.unsafe
    assert set(scan.ops) >= TEXT_OPS
    assert op_category("CaseFoldUTF8") == COMPUTE


def test_a_text_model_without_tensorflow_text_names_the_package(text_model, monkeypatch):
    missing = libraries.OpLibrary(**{**TF_TEXT.__dict__, "key": "servopt_no_such_module"})
    monkeypatch.setattr(libraries, "_loaded", {})
    assert libraries.load(missing) == missing.install_hint()
    monkeypatch.setattr(libraries, "_loaded", {TF_TEXT.key: missing.install_hint()})
    scan = scan_ops(text_model)
    assert set(scan.unsafe) == TEXT_OPS
    assert all("install tensorflow-text" in why and "pip install 'tfx-serving-optimizer[text]'"
               in why for why in scan.unsafe.values())
    with pytest.raises(ServoptError, match=r"CaseFoldUTF8.*TF Text ops.*install tensorflow-text"):
        ServingSession(text_model)


# ------------------------------------------------------------------ through the steps

def test_freeze_and_optimize_a_text_model_keep_lowered_conds_intact(text_model, tmp_path):
    """The issue's KeyError: lowered `cond`s (the Assert guards of ragged ops) anchor their
    branches' control edges on `pivot_t`/`pivot_f` Identity nodes after a Switch; removing
    them left nodes reading nodes that no longer existed."""
    report = optimize_model(text_model, tmp_path / "out", [Step("freeze"), Step("optimize")],
                            OptimizeConfig(examples=_inputs(text_model)))
    assert report.verification.passed and report.verification.num_examples == 128
    passes = report.steps[1].details["passes"]
    assert not [p for p in passes if p["skipped"]]
    graph = read_serving_graph(tmp_path / "out")
    assert not dangling_inputs(graph.graph_def)
    assert {n.op for n in graph.graph_def.node} >= TEXT_OPS
    with ServingSession(tmp_path / "out") as session:
        out = session.run("serving_default", {"text": np.array([b"The movie was GREAT",
                                                                 b""], dtype=object)})
    assert np.allclose(out["probabilities"].sum(axis=1), 1.0)


def test_remove_identity_keeps_switch_pivots_that_anchor_control_edges(text_model):
    graph = read_serving_graph(text_model)
    from components.core.freeze import freeze

    frozen = freeze(text_model).graph.graph_def
    pivots = {n.name for n in frozen.node if n.op == "Identity" and "/pivot_" in n.name}
    anchored = {i.lstrip("^") for n in frozen.node for i in n.input if i.startswith("^")}
    assert pivots & anchored  # the model has them
    remove_identity(frozen, set(graph.fetch_nodes() + graph.feed_nodes()))
    assert not dangling_inputs(frozen)
    assert pivots & anchored <= {n.name for n in frozen.node}


def test_a_pass_that_leaves_a_dangling_input_is_skipped_with_its_reason(text_model,
                                                                       monkeypatch):
    def drop_a_node(graph_def, keep):
        victim = next(n for n in graph_def.node if n.op == "StridedSlice")
        kept = [n for n in graph_def.node if n is not victim]
        del graph_def.node[:]
        graph_def.node.extend(kept)
        return {"dropped": 1}

    monkeypatch.setitem(PASSES, "broken", GraphPass("broken", "drops a node",
                                                    rewrite=drop_a_node))
    from components.core.freeze import freeze

    frozen = freeze(text_model).graph
    graph, results = optimize(frozen, ["broken"])
    assert results[0].skipped and "which it does not hold" in results[0].skipped
    assert "skipped" in results[0].summary()
    assert len(graph.graph_def.node) == len(frozen.graph_def.node)


def test_quantize_modes_on_a_text_model_verify_on_real_sentences(text_model, tmp_path):
    for mode in ("int8", "bfloat16"):
        report = optimize_model(text_model, tmp_path / mode,
                                [Step("freeze"), Step("quantize", mode)],
                                OptimizeConfig(examples=_inputs(text_model), num_examples=64))
        assert report.verification.passed, mode
        assert report.steps[-1].status == "applied", (mode, report.steps[-1].reason)


def test_tflite_of_a_text_model_is_skipped_because_tf_serving_tflite_lacks_tf_text(
        text_model, tmp_path):
    report = optimize_model(text_model, tmp_path / "out",
                            [Step("freeze"), Step("tflite", "dynamic_int8")],
                            OptimizeConfig(examples=_inputs(text_model), num_examples=32))
    tflite = report.steps[-1]
    assert tflite.status == "skipped"
    assert "TF Serving's TFLite runtime lacks" in tflite.reason
    assert "CaseFoldUTF8" in tflite.reason and "(TF Text)" in tflite.reason
    assert not (tmp_path / "out" / "model.tflite").exists()


def test_generated_inputs_for_a_raw_text_input_are_sentences(text_model):
    graph = read_serving_graph(text_model)
    signature = graph.signatures["serving_default"]
    feeds = generate_inputs(signature, example_feature_specs(graph.graph_def), 16,
                            np.random.default_rng(0))
    texts = [t.decode("utf-8") for t in feeds["text"]]  # valid UTF-8
    assert all(1 <= len(t.split()) <= 24 for t in texts)
    assert len(set(texts)) > 8


def test_generated_inputs_verify_a_text_model(text_model, tmp_path):
    report = optimize_model(text_model, tmp_path / "out", [Step("freeze")],
                            OptimizeConfig(num_examples=32))
    assert report.verification.passed


def test_warmup_requests_for_string_inputs_replay(text_model, tmp_path):
    logs = warmup_logs(text_model, _inputs(text_model), batch_sizes=(1, 3))
    request = logs[1].predict_log.request
    assert request.inputs["text"].dtype == tf.string.as_datatype_enum
    assert len(request.inputs["text"].string_val) == 3
    replay_warmup(text_model, logs)


def test_a_raw_text_input_reads_its_feature_from_tf_examples(text_model, tmp_path):
    records = tmp_path / "text.tfrecord"
    sentences = zoo_text.text_sentences(5)
    with tf.io.TFRecordWriter(str(records)) as writer:
        for sentence in sentences:
            feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[sentence.encode()]))
            writer.write(tf.train.Example(features=tf.train.Features(
                feature={"text": feature})).SerializeToString())
    signature = read_serving_graph(text_model).signatures["serving_default"]
    (batch,) = batches_for_signature(signature, records, 10, 10)
    assert [t.decode() for t in batch["text"]] == list(sentences)


# ------------------------------------------------------------------ the transformer

def test_a_transformer_encoder_through_optimize_and_bf16(encoder_model, tmp_path):
    """Token ids are generated in range (0 and 1 are ids of any vocabulary); the real
    inputs cover the whole vocabulary. Both verify."""
    for steps, examples in (
            ([Step("freeze"), Step("optimize")], None),
            ([Step("freeze"), Step("quantize", "bfloat16")], _inputs(encoder_model))):
        report = optimize_model(encoder_model, tmp_path / str(steps[-1]), steps,
                                OptimizeConfig(examples=examples, num_examples=64))
        assert report.verification.passed, steps
        assert report.steps[-1].status == "applied", (steps, report.steps[-1].reason)


def test_a_tflite_encoder_whose_inputs_tf_serving_would_lose_is_skipped(encoder_model,
                                                                        tmp_path):
    """The issue's `gather index out of bounds`: not invalid ids, but TF Serving's
    TfLiteSession copying `token_ids` in, then resizing `padding_mask` and re-allocating,
    which re-plans the arena under the copied ids (tflite_session.cc). The probe replays
    that sequence; the variant is skipped with the reason instead of failing at random."""
    report = optimize_model(encoder_model, tmp_path / "out",
                            [Step("freeze"), Step("tflite", "dynamic_int8")],
                            OptimizeConfig(examples=_inputs(encoder_model), num_examples=64))
    tflite = report.steps[-1]
    assert tflite.status == "skipped"
    assert "would be lost when a later input is resized" in tflite.reason
    assert "SetInputAndInvokeMiniBatch" in tflite.reason
    assert not (tmp_path / "out" / "model.tflite").exists()


class _FourPositions(tf.Module):
    """Position embeddings for 4 positions: a longer sequence is out of range."""

    def __init__(self):
        self.positions = tf.Variable(np.arange(8, dtype=np.float32).reshape(4, 2))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="token_ids")])
    def serve(self, token_ids):
        length = tf.shape(token_ids)[1]
        return {"encoded": tf.gather(self.positions, tf.range(length))[None]
                + tf.cast(token_ids, tf.float32)[:, :, None]}


def test_a_model_that_generated_inputs_do_not_fit_asks_for_real_inputs(tmp_path):
    module = _FourPositions()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default":
                                                                 module.serve})
    with pytest.raises(ServoptError, match=r"servopt generated these inputs .*--inputs"):
        optimize_model(tmp_path / "m", tmp_path / "out", [Step("freeze")],
                       OptimizeConfig(num_examples=4))
    np.savez(tmp_path / "real.npz", token_ids=np.ones((4, 3), np.int32))
    report = optimize_model(tmp_path / "m", tmp_path / "out", [Step("freeze")],
                            OptimizeConfig(num_examples=4, examples=tmp_path / "real.npz"))
    assert report.verification.passed


def test_the_zoo_writes_a_text_models_real_strings_as_examples(text_model, tmp_path):
    """Its builder's real inputs (`*-inputs.npz`, strings) become bytes features, labelled
    with the model's own top-1 (the zoo's text-tokenizing entry)."""
    from pipelines.zoo_models import write_examples

    out = write_examples(text_model, tmp_path / "examples", 8)
    records = list(tf.data.TFRecordDataset(
        [str(path) for path in out.rglob("*") if path.is_file()], compression_type="GZIP"))
    assert len(records) == 8
    example = tf.train.Example.FromString(records[0].numpy())
    texts = [key for key, feature in example.features.feature.items()
             if feature.WhichOneof("kind") == "bytes_list"]
    assert texts and example.features.feature[texts[0]].bytes_list.value[0]
    assert example.features.feature["label"].int64_list.value
