"""freeze -> optimize -> quantize=int8 on real architectures, verified the TF Serving way."""

from __future__ import annotations

import shutil
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
import pytest

from components.core.serving_session import ServingSession
from components.core.steps import OptimizeConfig, optimize_model, parse_steps
from tests import model_zoo

MODELS = ["seed_cnn_model", pytest.param("mobilenet_model", marks=pytest.mark.e2e),
          "example_vocab_model", "two_signature_model"]


def _inputs_file(model: Path) -> Path | None:
    npz = model.parent / f"{model.name}-inputs.npz"
    return npz if npz.exists() else None


@pytest.fixture(scope="module", params=MODELS)
def optimized(request, tmp_path_factory):
    model: Path = request.getfixturevalue(request.param)
    out = tmp_path_factory.mktemp(request.param) / "optimized"
    config = OptimizeConfig(examples=_inputs_file(model), verify_each_step=True)
    report = optimize_model(model, out, parse_steps("freeze,optimize,quantize=int8"), config)
    return request.param, model, out, report


def _steps(report):
    return {record.step.split("=")[0]: record for record in report.steps}


def test_every_step_applies(optimized):
    _, _, _, report = optimized
    assert [(r.step, r.status) for r in report.steps] == [
        ("freeze", "applied"), ("optimize", "applied"), ("quantize=int8", "applied")]


def test_freeze_leaves_no_variables(optimized):
    _, _, _, report = optimized
    frozen = _steps(report)["freeze"].model
    assert report.before.variable_count > 0
    assert frozen.variable_count == 0
    assert frozen.size_bytes.variables == 0


def test_optimize_leaves_fewer_nodes_than_freeze(optimized):
    _, _, _, report = optimized
    steps = _steps(report)
    assert steps["optimize"].model.node_count < steps["freeze"].model.node_count


def test_float32_steps_match_source_within_1e_5(optimized):
    _, _, _, report = optimized
    for name in ("freeze", "optimize"):
        verification = _steps(report)[name].verification
        assert verification.passed
        assert verification.max_abs_diff <= 1e-5, name


def test_int8_weights_shrink_to_at_most_0_3x_of_frozen_and_keep_top1(optimized):
    _, _, _, report = optimized
    steps = _steps(report)
    frozen_size = steps["freeze"].model.size_bytes.total
    assert report.after.size_bytes.total <= 0.3 * frozen_size
    assert report.verification.top1_agreement is not None
    assert report.verification.top1_agreement >= 0.99
    assert report.verification.num_examples >= 256


def test_output_keeps_every_signature_and_its_io_names(optimized):
    _, _, _, report = optimized
    assert report.after.signatures.keys() == report.before.signatures.keys()
    for name, signature in report.before.signatures.items():
        after = report.after.signatures[name]
        assert after.inputs.keys() == signature.inputs.keys()
        assert after.outputs.keys() == signature.outputs.keys()


def test_output_loads_in_tf2_too(optimized):
    _, _, out, report = optimized
    loaded = tf.saved_model.load(str(out))
    assert set(loaded.signatures.keys()) == set(report.before.signatures)


def test_vocabulary_model_serves_from_its_own_assets(example_vocab_model, tmp_path):
    """The output must read the vocabulary it carries, not the source's absolute path."""
    source = tmp_path / "source"
    shutil.copytree(example_vocab_model, source)
    out = tmp_path / "out"
    optimize_model(source, out, parse_steps("freeze,optimize"))
    examples = model_zoo.word_examples(64)
    with ServingSession(source) as original:
        expected = original.run("serving_default", {"examples": examples})
    shutil.rmtree(source)
    assert (out / "assets" / "example_vocab-vocab.txt").is_file()
    with ServingSession(out) as served:
        produced = served.run("serving_default", {"examples": examples})
    np.testing.assert_allclose(produced["probabilities"], expected["probabilities"], atol=1e-5)


def test_only_the_published_model_is_verified_by_default(two_signature_model, tmp_path):
    report = optimize_model(two_signature_model, tmp_path / "out",
                            parse_steps("freeze,optimize"))
    assert [r.verification is None for r in report.steps] == [True, False]
    assert report.verification is report.steps[-1].verification and report.verification.passed


def test_a_step_that_breaks_the_model_is_named_though_only_the_last_is_verified(
        two_signature_model, tmp_path, monkeypatch):
    """optimize doubles a weight; quantize runs after it: the error names optimize."""
    from components.core import steps as steps_module
    from components.core.errors import VerificationError

    original = steps_module.STEPS["optimize"]

    def breaking_optimize(*args):
        produced = original(*args)
        for node in produced.graph.graph_def.node:
            if node.op == "Const" and node.attr["dtype"].type == tf.float32.as_datatype_enum:
                values = tf.make_ndarray(node.attr["value"].tensor)
                if values.size >= 1024:
                    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(values * 3))
        return produced

    monkeypatch.setitem(steps_module.STEPS, "optimize", breaking_optimize)
    with pytest.raises(VerificationError, match="step 'optimize' changed the model's outputs"):
        optimize_model(two_signature_model, tmp_path / "out",
                       parse_steps("freeze,optimize,quantize=int8"))
    assert not (tmp_path / "out").exists()
