"""The safety scan: a model whose serving path reads or writes files, runs Python or opens
the network is blocked unless its ops are allowed; a normal model passes, although every
TF2 SavedModel carries SaveV2 in its (unserved) checkpoint functions."""

from __future__ import annotations

import shutil
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
import pytest

from components.core.errors import ServoptError
from components.core.freeze import freeze
from components.core.gate import Thresholds, evaluate_gate, scan_ops
from components.core.grappler import all_nodes
from components.core.model_io import read_saved_model, read_serving_graph, write_serving_graph
from components.core.safety import NOT_AN_ASSET, op_category
from components.core.serving_session import ServingSession
from tests.test_gate_decision import NO_LIMITS


class _FileWritingModel(tf.Module):
    """Writes every request's first value to a file while serving it."""

    def __init__(self, target: Path):
        self.target = str(target)
        self.scale = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        tf.io.write_file(self.target, tf.strings.as_string(x[0]))
        return {"y": x * self.scale}


class _PythonModel(tf.Module):
    """Runs a Python function on the serving path."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        return {"y": tf.py_function(lambda v: np.asarray(v) * 2, [x], tf.float32)}


@pytest.fixture(scope="module")
def file_writing_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unsafe") / "writes_files"
    module = _FileWritingModel(out.parent / "pwned.txt")
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    return out


@pytest.fixture(scope="module")
def python_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unsafe") / "runs_python"
    module = _PythonModel()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    return out


class _SecretReadingModel(tf.Module):
    """Fills a lookup table from an arbitrary host file on every request and returns its
    lines: the attack through the op that vocabulary files use."""

    def __init__(self, secret: str):
        self.secret = secret

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="x")])
    def serve(self, x):
        return {"lines": _table_lines(tf.constant(self.secret))}


class _RequestPathModel(tf.Module):
    """Opens the file the request names."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="x")])
    def serve(self, x):
        return {"lines": _table_lines(tf.strings.join(["/", x[0]]))}


def _table_lines(filename):
    table = tf.raw_ops.HashTableV2(key_dtype=tf.string, value_dtype=tf.int64)
    init = tf.raw_ops.InitializeTableFromTextFileV2(
        table_handle=table, filename=filename, key_index=-2, value_index=-1)
    with tf.control_dependencies([init]):
        keys, _ = tf.raw_ops.LookupTableExportV2(table_handle=table, Tkeys=tf.string,
                                                 Tvalues=tf.int64)
    return keys


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory) -> Path:
    secret = tmp_path_factory.mktemp("host") / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    return secret


@pytest.fixture(scope="module")
def secret_reading_model(tmp_path_factory, secret_file) -> Path:
    out = tmp_path_factory.mktemp("unsafe") / "reads_host_file"
    module = _SecretReadingModel(str(secret_file))
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    return out


SAFETY_ONLY = Thresholds.from_dict(NO_LIMITS)  # only the requirements (safety) are checked


def metrics_for(*names: str) -> dict:
    entry = {"path": "", "role": "candidate", "error": None, "size_bytes": 1000,
             "batches": {"100": {"p50_ms": 1.0, "p99_ms": 1.2, "throughput": 1e5,
                                 "stable": True}}, "accuracy": None}
    return {"schema_version": 1, "baseline": "trainer", "settings": {},
            "machine": {"cpu_model": "test", "cores": 2, "tensorflow_version": "2.21.0",
                        "python_version": "3.11", "platform": "linux"},
            "models": {name: dict(entry) for name in names}}


def test_a_normal_model_passes_although_its_checkpoint_functions_hold_save_ops(
        two_signature_model):
    every_op = {node.op for node in all_nodes(read_serving_graph(two_signature_model).graph_def)}
    assert {"SaveV2", "MergeV2Checkpoints"} <= every_op  # in the SavedModel, not served
    scan = scan_ops(two_signature_model)
    assert scan.safe and scan.unsafe == {} and scan.allowed == {}
    assert {"MatMul", "Softmax", "RestoreV2"} <= set(scan.ops)  # serving path and restore
    assert "SaveV2" not in scan.ops


def test_a_model_that_writes_files_while_serving_is_found(file_writing_model):
    scan = scan_ops(file_writing_model)
    assert not scan.safe
    assert scan.unsafe == {"WriteFile": "reads or writes files"}
    assert scan.describe_unsafe() == "WriteFile (reads or writes files)"


def test_a_model_that_runs_python_while_serving_is_found(python_model):
    assert scan_ops(python_model).unsafe == {"EagerPyFunc": "runs Python"}


def test_the_gate_blocks_an_unsafe_model_and_names_its_ops(file_writing_model,
                                                           two_signature_model):
    candidates = {"writer": file_writing_model, "normal": two_signature_model}
    decision = evaluate_gate(metrics_for("writer", "normal"), SAFETY_ONLY, candidates)
    assert decision.chosen == "normal"
    [safety] = [c for c in decision.checks if c.threshold == "safety" and c.candidate == "writer"]
    assert not safety.passed and safety.measured == ["WriteFile"]
    assert safety.reason == ("unsafe ops on the serving path: WriteFile (reads or writes "
                             "files); pass them in allowed_ops if the model must run them")


def test_an_allow_list_overrides_the_block(file_writing_model):
    candidates = {"writer": file_writing_model}
    blocked = evaluate_gate(metrics_for("writer"), SAFETY_ONLY, candidates)
    assert not blocked.blessed
    allowed = evaluate_gate(metrics_for("writer"), SAFETY_ONLY, candidates,
                            allowed_ops=["WriteFile"])
    assert allowed.blessed and allowed.chosen == "writer"
    [safety] = [c for c in allowed.checks if c.threshold == "safety"]
    assert safety.passed and safety.limit == ["WriteFile"]
    assert safety.reason.endswith("; allowed by allowed_ops: WriteFile")
    assert scan_ops(file_writing_model, ["WriteFile"]).allowed == {
        "WriteFile": "reads or writes files"}


def test_a_candidate_that_cannot_be_scanned_is_blocked(tmp_path):
    decision = evaluate_gate(metrics_for("ghost"), SAFETY_ONLY, {"ghost": tmp_path / "nope"})
    [safety] = [c for c in decision.checks if c.threshold == "safety"]
    assert not safety.passed
    assert safety.reason.startswith("cannot scan the model's ops: ") and "nope" in safety.reason


def test_the_allowlist_refuses_files_python_and_the_network_and_checks_file_readers():
    for op in ("ReadFile", "WriteFile", "MatchingFiles", "SaveV2", "TextLineDataset"):
        assert op_category(op) == "reads or writes files", op
    for op in ("PyFunc", "PyFuncStateless", "EagerPyFunc"):
        assert op_category(op) == "runs Python"
    assert op_category("RpcCall") == "opens the network"
    assert op_category("RestoreV2") == "restores a checkpoint"  # checked: own variables/
    assert op_category("InitializeTableFromTextFileV2") == "fills a table from a file"
    assert op_category("MatMul") == "compute"
    assert op_category("MyCustomOp").startswith("not a TensorFlow op")


def test_a_table_filled_from_a_host_file_instead_of_an_asset_is_blocked(
        secret_reading_model, secret_file):
    with ServingSession(secret_reading_model) as session:  # the attack is real...
        served = session.run("serving_default", {"x": np.array([b"?"], dtype=object)})
    assert served["lines"].tolist() == [secret_file.read_bytes().strip()]
    scan = scan_ops(secret_reading_model)  # ...and the scan sees it
    assert scan.unsafe == {"InitializeTableFromTextFileV2": NOT_AN_ASSET}
    decision = evaluate_gate(metrics_for("reader"), SAFETY_ONLY,
                             {"reader": secret_reading_model})
    assert not decision.blessed
    [safety] = [c for c in decision.checks if c.threshold == "safety"]
    assert "InitializeTableFromTextFileV2 (reads a file that is not one of the model's " \
           "assets)" in safety.reason
    assert scan_ops(secret_reading_model, ["InitializeTableFromTextFileV2"]).safe  # opt-in


def test_a_table_filled_from_a_file_the_request_names_is_blocked(tmp_path):
    module = _RequestPathModel()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default":
                                                                 module.serve})
    assert scan_ops(tmp_path / "m").unsafe == {"InitializeTableFromTextFileV2": NOT_AN_ASSET}


def test_vocabulary_tables_read_from_the_models_own_assets_pass_before_and_after_freezing(
        example_vocab_model, tmp_path):
    scan = scan_ops(example_vocab_model)
    assert scan.safe and "InitializeTableFromTextFileV2" in scan.ops
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    write_serving_graph(freeze(example_vocab_model).graph, frozen)
    scan = scan_ops(frozen)
    assert scan.safe and "InitializeTableFromTextFileV2" in scan.ops


def test_an_asset_whose_file_lies_outside_the_assets_directory_is_not_trusted(
        example_vocab_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(example_vocab_model, model)
    proto = read_saved_model(model)
    [asset] = proto.meta_graphs[0].asset_file_def
    asset.filename = "../../../../../../etc/passwd"
    (model / "saved_model.pb").write_bytes(proto.SerializeToString())
    assert scan_ops(model).unsafe == {"InitializeTableFromTextFileV2": NOT_AN_ASSET}

    shutil.rmtree(model)
    shutil.copytree(example_vocab_model, model)
    [vocabulary] = (model / "assets").iterdir()
    vocabulary.unlink()
    vocabulary.symlink_to("/etc/passwd")  # a symlink out of the model: refused up front
    with pytest.raises(ServoptError, match="is a symlink to /etc/passwd, outside the model"):
        scan_ops(model)


def test_an_asset_tensor_that_is_also_a_signature_input_is_not_trusted(tmp_path):
    module = _RequestPathModel()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default":
                                                                 module.serve})
    proto = read_saved_model(tmp_path / "m")
    meta_graph = proto.meta_graphs[0]
    request_input = meta_graph.signature_def["serving_default"].inputs["x"].name
    meta_graph.asset_file_def.add(filename="vocab.txt").tensor_info.name = request_input
    (tmp_path / "m" / "saved_model.pb").write_bytes(proto.SerializeToString())
    assert scan_ops(tmp_path / "m").unsafe == {"InitializeTableFromTextFileV2": NOT_AN_ASSET}


def test_ops_that_open_a_file_named_by_an_attribute_are_blocked_when_they_do(tmp_path):
    def export(name: str, descriptor_source: str) -> Path:
        graph = tf.Graph()
        with graph.as_default():
            x = tf.compat.v1.placeholder(tf.string, [None], name="x")
            _, [values] = tf.raw_ops.DecodeProtoV2(
                bytes=x, message_type="tensorflow.Example", field_names=["features"],
                output_types=[tf.string], descriptor_source=descriptor_source)
            with tf.compat.v1.Session(graph=graph) as session:
                builder = tf.compat.v1.saved_model.Builder(str(tmp_path / name))
                builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
                    "serving_default": tf.compat.v1.saved_model.predict_signature_def(
                        {"x": x}, {"y": values})})
                builder.save()
        return tmp_path / name

    assert scan_ops(export("in_memory", "local://")).safe
    assert scan_ops(export("from_file", "/etc/descriptors.pb")).unsafe == {
        "DecodeProtoV2": "reads or writes files"}
