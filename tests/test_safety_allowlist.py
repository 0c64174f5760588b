"""The safety scan is an allowlist: every op TF Serving would run (restore, init, serving
path, every function any attribute names) must be one the table knows to compute only;
file readers pass only on the paths TF's loader feeds from inside the model. Each test
builds the attack as a real SavedModel (round 3 of the hostile-model probes, issue 19)."""

from __future__ import annotations

import shutil
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
import pytest

from components.core.errors import ServoptError
from components.core.gate import Thresholds, evaluate_gate
from components.core.model_io import init_op_name, read_saved_model
from components.core.safety import NOT_OWN_CHECKPOINT, op_category, scan_ops
from components.core.safety.op_classes import (
    HIDDEN_GRAPH,
    UNKNOWN,
    UNREVIEWED,
    classify,
)
from components.core.safety.op_table import OP_TABLE
from components.core.serving_session import ServingSession
from tests.fresh_process import fresh_process_facts
from tests.test_gate_safety import metrics_for


def _save(module: tf.Module, out: Path, **signatures) -> Path:
    tf.saved_model.save(module, str(out), signatures=signatures)
    return out


def _rewrite(model: Path, edit) -> Path:
    """Edits the serving MetaGraph of `model`'s saved_model.pb in place."""
    proto = read_saved_model(model)
    edit(proto.meta_graphs[0])
    (model / "saved_model.pb").write_bytes(proto.SerializeToString())
    return model


# ------------------------------------------------------------------ the table

def test_every_op_tensorflow_registers_is_classified_by_the_table():
    # TensorFlow's registry in a fresh process, as the table was generated from it (in this
    # test process, libraries loaded by other tests, e.g. the TFLite converter's, add their
    # own ops: the table does not know those, and the scan refuses them).
    registry = fresh_process_facts().tensorflow_ops
    missing = sorted(set(registry) - set(OP_TABLE))
    assert not missing, (f"TF registers ops the safety table does not classify: {missing}; "
                         "regenerate components/core/safety/op_table.py (python -m "
                         "components.core.safety.op_classes) and review the new entries")
    disagree = {op: (OP_TABLE[op], classify(op, stateful)) for op, stateful in registry.items()
                if OP_TABLE[op] != classify(op, stateful)}
    assert not disagree  # the table is what the rules in op_classes.py give


def test_an_op_the_table_does_not_know_is_refused():
    assert op_category("MyCompany>SecretSauce") == UNKNOWN
    assert op_category("SyncDevice") == UNREVIEWED  # stateful, nobody reviewed it
    assert op_category("Abort") == "ends the server's process"  # stateless, yet refused


def test_a_custom_op_in_a_model_is_refused(two_signature_model, tmp_path):
    model = shutil.copytree(two_signature_model, tmp_path / "m")

    def rename_softmax(meta_graph):
        for function in meta_graph.graph_def.library.function:
            for node in function.node_def:
                if node.op == "Softmax":
                    node.op = "Addons>Mystery"
    _rewrite(model, rename_softmax)
    assert scan_ops(model).unsafe == {"Addons>Mystery": UNKNOWN}


# --------------------------------------------------- what the scan cannot see into

class _HiddenGraphModel(tf.Module):
    """Reads a host file through a dataset graph carried as a serialized string."""

    def __init__(self, secret: Path):
        self.graph = tf.data.TextLineDataset(str(secret))._as_serialized_graph().numpy()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="x")])
    def serve(self, x):
        graph = tf.strings.join([tf.constant(self.graph), x[0]])  # x = "": not folded
        variant = tf.raw_ops.DatasetFromGraph(graph_def=graph)
        dataset = tf.data.experimental.from_variant(variant, tf.TensorSpec([], tf.string))
        return {"lines": dataset.batch(100).get_single_element()}


def test_a_dataset_graph_carried_as_a_string_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    module = _HiddenGraphModel(secret)
    model = _save(module, tmp_path / "hidden", serving_default=module.serve)
    with ServingSession(model) as session:  # the attack is real...
        served = session.run("serving_default", {"x": np.array([b""], dtype=object)})
    assert served["lines"].tolist() == [b"root:x:0:0"]
    scan = scan_ops(model)  # ...and refused, although TextLineDataset is in no node
    assert scan.unsafe == {"DatasetFromGraph": HIDDEN_GRAPH}
    assert not evaluate_gate(metrics_for("m"), Thresholds(), {"m": model}).blessed


# ------------------------------------------------------- functions named anywhere

class _TwoFunctions(tf.Module):
    """A benign serving function, and a file-writing one nothing calls directly."""

    def __init__(self, target: Path):
        self.target = str(target)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        return {"y": x * 2.0}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def evil(self, x):
        tf.io.write_file(self.target, "pwned")
        return x


def test_a_function_named_inside_a_called_functions_attributes_is_scanned(tmp_path):
    module = _TwoFunctions(tmp_path / "pwned")
    module.evil.get_concrete_function()
    model = _save(module, tmp_path / "m", serving_default=module.serve)
    assert scan_ops(model).safe
    functions = {f.signature.name for f in read_saved_model(model).meta_graphs[0]
                 .graph_def.library.function}
    [evil] = [name for name in functions if "evil" in name]

    def wrap(meta_graph):  # StatefulPartitionedCall(f=serve[f=Evil]), as a wrapper passes it
        [output] = meta_graph.signature_def["serving_default"].outputs.values()
        [call] = [n for n in meta_graph.graph_def.node if n.name == output.name.split(":")[0]]
        call.attr["f"].func.attr["f"].func.name = evil
    _rewrite(model, wrap)
    assert scan_ops(model).unsafe == {"WriteFile": "reads or writes files"}


class _BranchModel(tf.Module):
    def __init__(self, target: Path):
        self.target = str(target)

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="i")])
    def serve(self, i):
        def write():
            tf.io.write_file(self.target, "pwned")
            return tf.constant(1)
        return {"y": tf.switch_case(i, [lambda: tf.constant(0), write])}


def test_a_case_branch_passed_as_a_list_of_functions_is_scanned(tmp_path):
    module = _BranchModel(tmp_path / "pwned")
    model = _save(module, tmp_path / "m", serving_default=module.serve)
    scan = scan_ops(model)
    assert "Case" in scan.ops or "StatelessCase" in scan.ops
    assert scan.unsafe == {"WriteFile": "reads or writes files"}


# ------------------------------------------------------- the loader's own choices

def _tf1_model(out: Path, target: Path) -> Path:
    """A TF1 model with a Saver, a benign NoOp and a file-writing op nobody serves."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        w = tf.compat.v1.get_variable("w", initializer=2.0)
        y = tf.identity(x * w, name="y")
        tf.no_op(name="benign")
        tf.io.write_file(str(target), "pwned", name="evil")
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(out))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
                "serving_default": tf.compat.v1.saved_model.predict_signature_def(
                    {"x": x}, {"y": y})})
            builder.save()
    return out


def test_the_init_op_is_the_one_tfs_loader_runs_not_the_first_output(tmp_path):
    model = _tf1_model(tmp_path / "m", tmp_path / "pwned")
    assert scan_ops(model).safe

    def init_signature(meta_graph):
        outputs = meta_graph.signature_def["__saved_model_init_op"].outputs
        outputs["a"].name = "benign"
        outputs["__saved_model_init_op"].name = "evil"
    _rewrite(model, init_signature)
    assert init_op_name(read_saved_model(model).meta_graphs[0]) == "evil"
    for _ in range(3):  # protobuf map order varies: the choice must not
        assert scan_ops(model).unsafe == {"WriteFile": "reads or writes files"}

    def no_such_output(meta_graph):
        del meta_graph.signature_def["__saved_model_init_op"].outputs[
            "__saved_model_init_op"]
    _rewrite(model, no_such_output)
    with pytest.raises(ServoptError, match="has no output named __saved_model_init_op"):
        scan_ops(model)


def test_two_main_ops_are_refused_as_tfs_loader_refuses_them(tmp_path):
    model = _tf1_model(tmp_path / "m", tmp_path / "pwned")
    _rewrite(model, lambda m: m.collection_def["saved_model_main_op"].node_list.value.extend(
        ["benign", "evil"]))
    with pytest.raises(ServoptError, match="expects exactly one main op"):
        scan_ops(model)


def test_a_restore_op_reading_another_checkpoint_is_refused(tmp_path):
    model = _tf1_model(tmp_path / "m", tmp_path / "pwned")
    assert "RestoreV2" in scan_ops(model).ops  # fed the model's own variables/: passes

    def foreign_prefix(meta_graph):
        nodes = {n.name: n for n in meta_graph.graph_def.node}
        [restore] = [n for n in nodes.values() if n.op == "RestoreV2"]
        other = meta_graph.graph_def.node.add(name="other_checkpoint", op="Const")
        other.attr["dtype"].type = tf.string.as_datatype_enum
        other.attr["value"].tensor.CopyFrom(tf.make_tensor_proto("/elsewhere/variables"))
        restore.input[0] = "other_checkpoint"
    _rewrite(model, foreign_prefix)
    assert scan_ops(model).unsafe == {"RestoreV2": NOT_OWN_CHECKPOINT}


def test_a_restore_op_on_the_serving_path_is_refused(tmp_path):
    class Restorer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="prefix")])
        def serve(self, prefix):
            return {"w": tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=["w"],
                                              shape_and_slices=[""], dtypes=[tf.float32])[0]}
    module = Restorer()
    model = _save(module, tmp_path / "m", serving_default=module.serve)
    assert scan_ops(model).unsafe == {"RestoreV2": NOT_OWN_CHECKPOINT}


# --------------------------------------------------------------- one containment check

def test_a_symlinked_assets_directory_is_refused_by_the_scan(example_vocab_model, tmp_path):
    outside = shutil.copytree(example_vocab_model / "assets", tmp_path / "outside")
    model = shutil.copytree(example_vocab_model, tmp_path / "m")
    shutil.rmtree(model / "assets")
    (model / "assets").symlink_to(outside)
    with pytest.raises(ServoptError, match="assets: is a symlink to .*outside, outside"):
        scan_ops(model)
    decision = evaluate_gate(metrics_for("m"), Thresholds(), {"m": model})
    assert not decision.blessed


def test_a_model_tflite_symlink_is_refused_and_its_target_never_read(two_signature_model,
                                                                      tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"root:x:0:0:SECRET\n")
    model = shutil.copytree(two_signature_model, tmp_path / "m")
    (model / "model.tflite").symlink_to(secret)
    with pytest.raises(ServoptError, match="model.tflite: is a symlink") as refused:
        scan_ops(model)
    assert "SECRET" not in str(refused.value)
