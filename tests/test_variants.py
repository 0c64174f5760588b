"""Quantizer compute variants: TFLite inside the SavedModel and bf16 compute.

A TFLite variant is the fp32 SavedModel plus `model.tflite` in the same directory (TF
Serving serves the latter alone with --prefer_tflite_model=true): builtin ops only, every
convertible signature under its own name and keys as TF Serving's TfLiteSession resolves
them, the rest recorded as signatures the variant lacks, with the converter's reason;
both runtimes verified against the source.
"""

from __future__ import annotations

import numpy as np
import pytest

from components.core.bf16 import BF16_REQUIREMENTS, bf16_op_count, bf16_unavailable_reason
from components.core.choices import TFLITE_MODES
from components.core.errors import ServoptError
from components.core.model_io import read_serving_graph
from components.core.requirements import (
    PREFER_TFLITE_FLAG,
    has_tflite_model,
    read_requirements,
)
from components.core.steps import OptimizeConfig, optimize_model, parse_steps
from components.core.tflite import tflite_file
from components.core.tflite_session import TfLiteSession


def _inputs(model):
    return model.parent / f"{model.name}-inputs.npz"


@pytest.fixture(scope="module", params=TFLITE_MODES)
def tflite_variant(request, demo_cnn_model, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"tflite-{request.param}") / "model"
    report = optimize_model(demo_cnn_model, out,
                            parse_steps(f"freeze,optimize,tflite={request.param}"),
                            OptimizeConfig(examples=_inputs(demo_cnn_model)))
    return request.param, out, report


def test_tflite_variant_is_a_saved_model_with_model_tflite_beside_it(tflite_variant):
    _, out, report = tflite_variant
    assert (out / "saved_model.pb").is_file() and has_tflite_model(out)
    assert report.steps[-1].status == "applied"
    assert report.verification.max_abs_diff <= 1e-5  # the saved_model.pb path is fp32


def test_tflite_variant_records_the_flag_tf_serving_needs(tflite_variant):
    mode, out, report = tflite_variant
    requirements = read_requirements(out)
    assert requirements.runtime == "tflite"
    assert requirements.server_flags == (PREFER_TFLITE_FLAG,)
    assert report.requirements == requirements


def test_tflite_signature_keeps_its_name_and_keys_and_the_parsing_one_is_recorded_as_lacking(
        tflite_variant):
    """The image signature converts and TF Serving serves it under the SavedModel's name
    and keys; tf.Example parsing has no builtin op: TF Serving would not serve it from
    model.tflite at all, and the variant says so."""
    _, out, report = tflite_variant
    session = TfLiteSession(tflite_file(out))
    assert not session.generated and list(session.signatures) == ["serving_default"]
    saved = read_serving_graph(out).signatures["serving_default"]
    served = session.signatures["serving_default"]
    assert sorted(served.inputs) == sorted(saved.inputs)
    assert sorted(served.outputs) == sorted(saved.outputs)
    skipped = report.steps[-1].details["tflite_skipped_signatures"]
    assert set(skipped) == {"serving_examples"}
    assert "ParseExampleV2" in skipped["serving_examples"]
    requirements = read_requirements(out)
    assert set(requirements.lacks_signatures) == {"serving_examples"}
    assert "not served from model.tflite" in requirements.note


def test_tflite_runs_a_whole_batch_and_keeps_the_decisions(tflite_variant, demo_cnn_model):
    mode, out, report = tflite_variant
    check = report.steps[-1].tflite_verification
    assert check.passed and check.top1_agreement >= 0.99
    images = np.load(_inputs(demo_cnn_model))["image"][:16]
    outputs = TfLiteSession(tflite_file(out)).run("serving_default", {"image": images})
    assert outputs["probabilities"].shape == (16, 10)


def test_full_int8_computes_in_int8(tflite_variant):
    mode, out, _ = tflite_variant
    if mode != "full_int8":
        pytest.skip("full_int8 only")
    import tensorflow as tf

    details = tf.lite.Interpreter(str(tflite_file(out))).get_tensor_details()
    int8 = [d for d in details if d["dtype"] == np.int8]
    assert len(int8) > len(details) / 2


def test_tflite_must_be_the_last_step_and_modes_are_checked():
    with pytest.raises(ServoptError, match="must be the last step"):
        parse_steps("freeze,tflite=float32,optimize")
    with pytest.raises(ServoptError, match="unknown TFLite mode 'int4'"):
        parse_steps("freeze,tflite=int4")


def test_bfloat16_is_produced_only_where_the_cpu_has_bf16_units(demo_cnn_model, tmp_path):
    """After GraphOptimizer's fusions, in one run: produced on a CPU with bf16 units and
    oneDNN (the rewrite reads the unfused graph), skipped with the reason elsewhere. The
    rewrite itself is tested on any CPU in test_onednn (emulated bf16)."""
    out = tmp_path / "bf16"
    steps = parse_steps("freeze,optimize,quantize=bfloat16")
    reason = bf16_unavailable_reason()
    report = optimize_model(demo_cnn_model, out, steps,
                            OptimizeConfig(examples=_inputs(demo_cnn_model)))
    optimize, last = report.steps[-2:]
    assert optimize.status == "applied"
    if reason:
        assert last.status == "skipped" and last.reason == reason
        assert "--mixed_precision=bfloat16" in reason  # what gives the same on a bf16 server
        assert read_requirements(out).precision == "float32"
        assert report.verification.passed and report.verification.max_abs_diff <= 1e-5
        return
    assert last.status == "applied", last.reason
    assert last.verification.top1_agreement >= 0.99
    graph = read_serving_graph(out).graph_def
    assert bf16_op_count(graph) > 0 and any(n.op == "Cast" for n in graph.node)
    assert read_requirements(out) == BF16_REQUIREMENTS


def test_bf16_unavailable_reason_names_the_missing_cpu_feature():
    assert "no bf16 compute units" in bf16_unavailable_reason({"avx2", "fma"})


def test_a_variant_step_that_cannot_apply_publishes_nothing(demo_cnn_model, tmp_path):
    if not bf16_unavailable_reason():
        pytest.skip("this CPU has bf16 units: the variant applies")
    from components.core.errors import StepSkipped

    with pytest.raises(StepSkipped, match="bf16"):
        optimize_model(demo_cnn_model, tmp_path / "out", parse_steps("quantize=bfloat16"),
                       OptimizeConfig(num_examples=32), require_applied=True)
    assert not (tmp_path / "out").exists()
