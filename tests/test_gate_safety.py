"""The safety scan: a model whose serving path reads or writes files, runs Python or opens
the network is blocked unless its ops are allowed; a normal model passes, although every
TF2 SavedModel carries SaveV2 in its (unserved) checkpoint functions."""

from __future__ import annotations

from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
import pytest

from components.core.gate import UNSAFE_OPS, Thresholds, evaluate_gate, scan_ops
from components.core.grappler import all_nodes
from components.core.model_io import read_serving_graph


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


def metrics_for(*names: str) -> dict:
    entry = {"role": "candidate", "error": None, "size_bytes": 1000,
             "batches": {"100": {"p50_ms": 1.0, "p99_ms": 1.2, "throughput": 1e5,
                                 "stable": True}}, "accuracy": None}
    return {"schema_version": 1, "baseline": "trainer",
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
    decision = evaluate_gate(metrics_for("writer", "normal"), Thresholds(), candidates)
    assert decision.chosen == "normal"
    [safety] = [c for c in decision.checks if c.threshold == "safety" and c.candidate == "writer"]
    assert not safety.passed and safety.measured == ["WriteFile"]
    assert safety.reason == ("unsafe ops on the serving path: WriteFile (reads or writes "
                             "files); pass them in allowed_ops if the model must run them")


def test_an_allow_list_overrides_the_block(file_writing_model):
    candidates = {"writer": file_writing_model}
    blocked = evaluate_gate(metrics_for("writer"), Thresholds(), candidates)
    assert not blocked.blessed
    allowed = evaluate_gate(metrics_for("writer"), Thresholds(), candidates,
                            allowed_ops=["WriteFile"])
    assert allowed.blessed and allowed.chosen == "writer"
    [safety] = [c for c in allowed.checks if c.threshold == "safety"]
    assert safety.passed and safety.limit == ["WriteFile"]
    assert safety.reason.endswith("; allowed by allowed_ops: WriteFile")
    assert scan_ops(file_writing_model, ["WriteFile"]).allowed == {
        "WriteFile": "reads or writes files"}


def test_a_candidate_that_cannot_be_scanned_is_blocked(tmp_path):
    decision = evaluate_gate(metrics_for("ghost"), Thresholds(), {"ghost": tmp_path / "nope"})
    [safety] = [c for c in decision.checks if c.threshold == "safety"]
    assert not safety.passed
    assert safety.reason.startswith("cannot scan the model's ops: ") and "nope" in safety.reason


def test_the_unsafe_ops_cover_files_python_and_the_network():
    assert {"ReadFile", "WriteFile", "MatchingFiles", "SaveV2", "RestoreV2"} <= {
        op for op, category in UNSAFE_OPS.items() if category == "reads or writes files"}
    assert {"PyFunc", "PyFuncStateless", "EagerPyFunc"} == {
        op for op, category in UNSAFE_OPS.items() if category == "runs Python"}
    assert "RpcCall" in UNSAFE_OPS and UNSAFE_OPS["RpcCall"] == "opens the network"
    assert "InitializeTableFromTextFileV2" not in UNSAFE_OPS  # reads the model's own assets
