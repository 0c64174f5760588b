"""Weight quantization arithmetic and generated verification inputs, on known values."""

from __future__ import annotations

import numpy as np
import pytest

from components.core.inputs import example_feature_specs
from components.core.model_io import read_serving_graph
from components.core.quantize import int8_per_channel
from components.core.verify import Tolerance, _compare_output


def test_int8_per_channel_scales_each_output_channel_by_its_own_max():
    weights = np.array([[1.0, -0.012], [-0.5, 0.02], [0.25, 0.0]], dtype=np.float32)
    quantized, scale = int8_per_channel(weights)
    np.testing.assert_allclose(scale, [1.0 / 127, 0.02 / 127], rtol=1e-6)
    assert quantized.dtype == np.int8
    assert quantized[0, 0] == 127 and quantized[1, 1] == 127 and quantized[0, 1] == -76
    # Round-to-nearest: the error of every weight is at most half a step of its channel.
    assert np.all(np.abs(quantized * scale - weights) <= scale / 2 + 1e-9)


def test_int8_of_an_all_zero_channel_does_not_divide_by_zero():
    quantized, scale = int8_per_channel(np.zeros((4, 3), dtype=np.float32))
    assert np.all(quantized == 0) and np.all(scale == 1.0)


def test_feature_spec_is_read_from_the_parse_example_op(example_vocab_model):
    specs = {s.key: s for s in example_feature_specs(
        read_serving_graph(example_vocab_model).graph_def)}
    assert sorted(specs) == ["size", "word"]
    assert specs["word"].dtype.name == "string" and specs["size"].dtype.name == "float32"


@pytest.mark.parametrize(("candidate", "passes"), [
    ([[0.9, 0.1], [0.2, 0.8]], True),          # identical
    ([[0.9 + 2e-5, 0.1], [0.2, 0.8]], False),  # moved by more than 1e-5 + 1e-5 * 0.9
])
def test_float32_tolerance_is_absolute_plus_relative_to_the_output_scale(candidate, passes):
    source = [np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)]
    result = _compare_output("s", "o", source, [np.array(candidate, dtype=np.float32)],
                             Tolerance(atol=1e-5, rtol=1e-5))
    assert result.within_tolerance is passes
    assert result.top1_agreement == 1.0


def test_a_classifier_that_keeps_its_decisions_passes_the_top1_rule():
    source = np.eye(4, dtype=np.float32)[np.arange(200) % 4] * 0.7 + 0.075
    moved = source + np.float32(0.05) * (np.arange(4) == 0)  # every row moves by 0.05
    result = _compare_output("s", "o", [source], [moved],
                             Tolerance(atol=0.01, rtol=0.01, min_top1_agreement=0.99))
    assert result.top1_agreement == 1.0 and result.within_tolerance


def test_a_classifier_that_flips_decisions_fails_the_top1_rule():
    source = np.eye(4, dtype=np.float32)[np.arange(200) % 4]
    flipped = source.copy()
    flipped[:10] = np.roll(flipped[:10], 1, axis=1)  # 5% of decisions change
    result = _compare_output("s", "o", [source], [flipped],
                             Tolerance(atol=0.01, rtol=0.01, min_top1_agreement=0.99))
    assert result.top1_agreement == pytest.approx(0.95)
    assert not result.within_tolerance


def _signature(**inputs):
    """A SignatureDef with inputs name -> (dtype, shape; None: unknown rank)."""
    from components.core.tf_setup import tf

    from tensorflow.core.protobuf import meta_graph_pb2

    signature = meta_graph_pb2.SignatureDef()
    for name, (dtype, shape) in inputs.items():
        info = signature.inputs[name]
        info.dtype = dtype.as_datatype_enum
        info.tensor_shape.CopyFrom(tf.TensorShape(shape).as_proto())
    return signature


def test_verification_batches_of_large_inputs_are_smaller():
    """Activations grow with the input: a batch holds at most VERIFY_BATCH_BYTES of it."""
    from components.core.tf_setup import tf

    from components.core.verify import example_bytes, verification_batch_size

    image = _signature(image=(tf.float32, [None, 224, 224, 3]))
    assert example_bytes(image) == 224 * 224 * 3 * 4
    assert verification_batch_size({"serving_default": image}, 32) == 6
    digits = _signature(image=(tf.float32, [None, 28, 28, 1]))
    text = _signature(text=(tf.string, [None]), ids=(tf.int32, [None, None]))
    assert example_bytes(text) == 64 + 4
    unknown = _signature(x=(tf.float32, None))
    for small in (digits, text, unknown):
        assert verification_batch_size({"serving_default": small}, 32) == 32
    assert verification_batch_size({"a": digits, "b": image}, 32) == 6  # the largest
