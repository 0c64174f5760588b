"""GraphOptimizer changes the graph the way its pass names say, on real architectures.

After `freeze,optimize`: no batch-norm arithmetic (Mul / Add / FusedBatchNorm) between a
convolution or matmul and its activation, no Identity on the compute path, and the
conv + bias + activation chains fused into single CPU kernels, with outputs within the
fp32 tolerance. Plus the rewrites themselves on small hand-built graphs.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
import pytest
from tensorflow.core.framework import graph_pb2

from components.core.model_io import read_serving_graph
from components.core.optimize import PassResult
from components.core.rewrite import fold_batch_norms, node_name, remove_identity
from components.core.steps import OptimizeConfig, optimize_model, parse_steps

LINEAR = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "_FusedConv2D", "_FusedMatMul")
AFFINE = ("Mul", "Add", "AddV2", "Sub", "RealDiv", "FusedBatchNorm", "FusedBatchNormV3")
ACTIVATIONS = ("Relu", "Relu6")


@pytest.fixture(scope="module", params=[
    "demo_cnn_model", *(pytest.param(m, marks=pytest.mark.e2e)
                        for m in ("resnet50_model", "mobilenet_model"))])
def optimized(request, tmp_path_factory):
    model: Path = request.getfixturevalue(request.param)
    out = tmp_path_factory.mktemp(request.param) / "optimized"
    inputs = model.parent / f"{model.name}-inputs.npz"
    report = optimize_model(model, out, parse_steps("freeze,optimize"),
                            OptimizeConfig(examples=inputs))
    graph = read_serving_graph(out)
    return request.param, graph, report


def _consumers(graph_def: graph_pb2.GraphDef) -> dict[str, list]:
    consumers = defaultdict(list)
    for node in graph_def.node:
        for tensor in node.input:
            if not tensor.startswith("^"):
                consumers[node_name(tensor)].append(node)
    return consumers


def _fused_ops(node) -> tuple[str, ...]:
    return tuple(op.decode() for op in node.attr["fused_ops"].list.s) if (
        "fused_ops" in node.attr) else ()


def _pass_changes(report) -> dict[str, int]:
    optimize = next(r for r in report.steps if r.step == "optimize")
    changes: Counter[str] = Counter()
    for result in optimize.details["passes"]:
        changes.update(PassResult(**result).changes)
    return changes


def test_outputs_stay_within_the_float32_tolerance(optimized):
    _, _, report = optimized
    assert report.verification.passed
    assert report.verification.max_abs_diff <= 1e-5


def test_no_batch_norm_arithmetic_follows_a_conv_or_matmul(optimized):
    _, graph, _ = optimized
    consumers = _consumers(graph.graph_def)
    for node in graph.graph_def.node:
        if node.op not in LINEAR:
            continue
        after = [c.op for c in consumers[node.name]]
        if node.op in ("DepthwiseConv2dNative", "Conv2D", "MatMul") and after == ["BiasAdd"]:
            after = [c.op for c in consumers[consumers[node.name][0].name]]
        # A residual AddV2 (two computed inputs) may follow; a constant scale/offset may not.
        for consumer in (c for c in consumers[node.name] if c.op in AFFINE):
            inputs = [graph_node(graph, t) for t in consumer.input if not t.startswith("^")]
            assert not any(i.op == "Const" for i in inputs), (
                f"{node.name} ({node.op}) is followed by {consumer.op} of a constant")
    assert not [n for n in graph.graph_def.node if n.op.startswith("FusedBatchNorm")]


def graph_node(graph, tensor: str):
    return next(n for n in graph.graph_def.node if n.name == node_name(tensor))


def test_no_identity_is_left_on_the_compute_path(optimized):
    _, graph, _ = optimized
    signature_nodes = set(graph.fetch_nodes() + graph.feed_nodes())
    left = [n.name for n in graph.graph_def.node
            if n.op == "Identity" and n.name not in signature_nodes]
    assert left == []


def test_every_activation_after_a_conv_is_fused_into_it(optimized):
    """An activation may stand alone only after a depthwise conv (no CPU fused kernel
    outside oneDNN) or after a residual add; never right after Conv2D or its BiasAdd."""
    name, graph, _ = optimized
    nodes = {n.name: n for n in graph.graph_def.node}
    for node in graph.graph_def.node:
        if node.op not in ACTIVATIONS:
            continue
        source = nodes[node_name(node.input[0])]
        if source.op == "BiasAdd":
            source = nodes[node_name(source.input[0])]
        assert source.op not in ("Conv2D", "MatMul", "_FusedConv2D", "_FusedMatMul"), (
            f"{name}: {node.name} follows {source.op} unfused")


EXPECTED = {  # model: (batch norms we fold, at least; fused ops that must be present)
    "demo_cnn_model": (6, {("_FusedConv2D", ("BiasAdd", "Relu")): 6,
                           ("_FusedMatMul", ("BiasAdd", "Relu")): 4}),
    "resnet50_model": (106, {("_FusedConv2D", ("BiasAdd", "Relu")): 66,
                             ("_FusedConv2D", ("BiasAdd",)): 40}),
    # Grappler's constant folding already pushes the 1x1 convs' BN scales into their
    # filters; the 17 depthwise convs' BNs are left to fold_batch_norms.
    "mobilenet_model": (17, {("_FusedConv2D", ("BiasAdd", "Relu6")): 18}),
}


def test_batch_norms_fold_and_convolutions_fuse_as_counted(optimized):
    name, graph, report = optimized
    folded, fused = EXPECTED[name]
    assert _pass_changes(report)["batch_norms_folded"] >= folded
    found = Counter((n.op, _fused_ops(n)) for n in graph.graph_def.node)
    for key, count in fused.items():
        assert found[key] >= count, (name, key, found)
    assert found[("Conv2D", ())] == 0, "every Conv2D is fused"


def test_mobilenet_depthwise_convs_lose_their_batch_norms(optimized):
    name, graph, _ = optimized
    if name != "mobilenet_model":
        pytest.skip("MobileNetV2 only")
    consumers = _consumers(graph.graph_def)
    chains = Counter(tuple(c.op for c in consumers[n.name]) for n in graph.graph_def.node
                     if n.op == "DepthwiseConv2dNative")
    assert chains == Counter({("BiasAdd",): sum(chains.values())})


# --- the rewrites on small graphs ------------------------------------------------------

def _run(graph_def: graph_pb2.GraphDef, fetch: str, feed: dict) -> np.ndarray:
    with tf.Graph().as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session() as session:
            return session.run(fetch, feed)


def _conv_bn_graph(shared_filter: bool):
    """x -> Conv2D -> FusedBatchNormV3 -> Relu, and (optionally) a second conv reading the
    same filter constant through an Identity, followed by Mul/AddV2 (Keras 3's BN)."""
    rng = np.random.default_rng(0)
    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="x")
        w = tf.constant(rng.normal(size=(3, 3, 3, 4)).astype("f4"), name="w")
        conv = tf.nn.conv2d(x, w, 1, "SAME", name="conv")
        bn, *_ = tf.compat.v1.nn.fused_batch_norm(
            conv, scale=rng.uniform(.5, 2, 4).astype("f4"), offset=rng.normal(size=4).astype("f4"),
            mean=rng.normal(size=4).astype("f4"), variance=rng.uniform(.5, 2, 4).astype("f4"),
            is_training=False, name="bn")
        outputs = [tf.nn.relu(bn, name="out1")]
        if shared_filter:
            conv2 = tf.nn.conv2d(x, tf.identity(w, name="w_read"), 1, "SAME", name="conv2")
            scaled = conv2 * tf.constant(rng.uniform(.5, 2, 4).astype("f4"))
            outputs.append(tf.nn.relu(scaled + tf.constant(rng.normal(size=4).astype("f4")),
                                      name="out2"))
    return graph.as_graph_def(), [o.op.name for o in outputs]


def test_fused_batch_norm_folds_into_the_conv_filter_and_a_bias_add():
    graph_def, outputs = _conv_bn_graph(shared_filter=False)
    feed = {"x:0": np.random.default_rng(1).random((2, 8, 8, 3)).astype("f4")}
    expected = _run(graph_def, "out1:0", feed)
    counts = fold_batch_norms(graph_def, set(outputs) | {"x"})
    ops = Counter(n.op for n in graph_def.node)
    assert counts["batch_norms_folded"] == 1 and ops["FusedBatchNormV3"] == 0
    assert ops["BiasAdd"] == 1
    np.testing.assert_allclose(_run(graph_def, "out1:0", feed), expected, atol=1e-5)


def test_a_filter_shared_by_two_convs_is_folded_for_each_without_corrupting_the_other():
    graph_def, outputs = _conv_bn_graph(shared_filter=True)
    feed = {"x:0": np.random.default_rng(1).random((2, 8, 8, 3)).astype("f4")}
    expected = [_run(graph_def, f"{o}:0", feed) for o in outputs]
    keep = set(outputs) | {"x"}
    assert remove_identity(graph_def, keep) == 1
    assert fold_batch_norms(graph_def, keep)["batch_norms_folded"] == 2
    assert not [n for n in graph_def.node if n.op in ("Mul", "AddV2", "FusedBatchNormV3")]
    for output, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(_run(graph_def, f"{output}:0", feed), want, atol=1e-5)


def test_remove_identity_keeps_signature_nodes_and_moves_control_inputs():
    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        marker = tf.raw_ops.Relu(features=x, name="marker")
        with tf.control_dependencies([marker]):
            guarded = tf.identity(x, name="guarded")
        tf.identity(guarded * 2.0, name="out")
    graph_def = graph.as_graph_def()
    assert remove_identity(graph_def, {"x", "out"}) == 1
    nodes = {n.name: n for n in graph_def.node}
    assert "guarded" not in nodes and "out" in nodes
    multiply = next(n for n in graph_def.node if n.op == "Mul")
    assert "x" in multiply.input and "^marker" in multiply.input
