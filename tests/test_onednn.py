"""Optimized graphs load wherever TF Serving may run them, oneDNN on or off.

TF decides once per process whether it runs oneDNN (tensorflow/core/util/port.cc): on by
default only on CPUs with AVX512_VNNI / AVX512_BF16 / AMX, or with TF_ENABLE_ONEDNN_OPTS=1.
Where it is on, Grappler's remapper fuses into ops only oneDNN runs. The tests reproduce
such a machine by running the optimizer in a child process with TF_ENABLE_ONEDNN_OPTS=1
(this CPU may lack those features: oneDNN then runs its AVX2 code, and bf16 is emulated).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
import pytest
from tensorflow.core.framework import graph_pb2

from components.core.bf16 import BF16_REQUIREMENTS, bf16_rewrite_input
from components.core.model_io import read_serving_graph
from components.core.onednn import (
    ONEDNN_DEFAULT_CPU_FEATURES,
    onednn_default_on,
    onednn_enabled,
    onednn_only_nodes,
)
from components.core.requirements import BF16_CPU_FEATURES, ONEDNN_ENV, ServingRequirements
from components.core.rewrite import CannotUnfuse, node_name, unfuse, without_onednn_fusions
from components.core.steps import OptimizeConfig, optimize_model, parse_steps

ROOT = Path(__file__).resolve().parent.parent
# MobileNetV2 (a large model: e2e) optimized with oneDNN on, in a child process.
MOBILENET = pytest.mark.e2e


def _inputs(model: Path) -> Path:
    return model.parent / f"{model.name}-inputs.npz"


def run_with_onednn(code: str, onednn: str = "1", **paths: Path) -> dict:
    """Runs `code` in a child process with TF_ENABLE_ONEDNN_OPTS=`onednn`; `code` reads
    `paths` (a dict of str) and stores its JSON answer in `result`."""
    script = ("import json, sys\nfrom pathlib import Path\n"
              # the child runs no Keras: TensorFlow loads 6 s sooner (keras_deferred)
              "from components.core.keras_deferred import defer_keras\ndefer_keras()\n") + (
        f"paths = {json.dumps({k: str(v) for k, v in paths.items()})}\n") + textwrap.dedent(
        code) + "\nprint('RESULT=' + json.dumps(result))\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, ONEDNN_ENV: onednn}, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT=")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT="))


OPTIMIZE_WITH_ONEDNN_ON = """
from collections import Counter
from components.core.onednn import onednn_enabled, onednn_only_nodes
from components.core.model_io import read_serving_graph
from components.core.rewrite import unfuse
from components.core.steps import OptimizeConfig, optimize_model, parse_steps
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.grappler import tf_optimizer
model, out = Path(paths["model"]), Path(paths["out"])
report = optimize_model(model, out, parse_steps("freeze,optimize"),
                        OptimizeConfig(examples=Path(paths["inputs"])))
graph = read_serving_graph(out)
# What the remapper itself emits here, on the unfused optimized graph (no split after it).
pinned = graph.with_graph(unfuse(graph.graph_def))
for node in pinned.graph_def.node:
    node.device = "/device:CPU:0"
meta = pinned.to_meta_graph()
meta.collection_def["train_op"].node_list.value.extend(pinned.fetch_nodes())
config = config_pb2.ConfigProto()
config.graph_options.rewrite_options.min_graph_nodes = -1
config.graph_options.rewrite_options.optimizers.extend(["remap"])
remapped = tf_optimizer.OptimizeGraph(config, meta)
for node in remapped.node:
    node.device = ""
# That graph, published unchecked, and verified: it runs here, fails with oneDNN off.
from components.core.model_io import write_serving_graph
from components.core.verify import FLOAT32_TOLERANCE, Reference
unchecked = Path(paths["unchecked"])
write_serving_graph(graph.with_graph(remapped), unchecked)
check = Reference(model, num_examples=32).compare(unchecked, FLOAT32_TOLERANCE)
result = {"onednn": onednn_enabled(),
          "verification": report.verification.to_dict(),
          "raw_remap_onednn_only": sorted(set(n.op for n in remapped.node
                                              if n.name in onednn_only_nodes(remapped))),
          "unchecked_verification": check.to_dict()}
"""


@pytest.fixture(scope="module")
def mobilenet_optimized_with_onednn(mobilenet_model, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("onednn")
    out = scratch / "mobilenet"
    result = run_with_onednn(OPTIMIZE_WITH_ONEDNN_ON, model=mobilenet_model, out=out,
                             inputs=_inputs(mobilenet_model), unchecked=scratch / "unchecked")
    return out, result


@MOBILENET
def test_with_onednn_on_the_remapper_itself_emits_onednn_only_ops(
        mobilenet_optimized_with_onednn):
    """The reason for the split: without it, the optimized graph would carry these."""
    _, result = mobilenet_optimized_with_onednn
    assert result["onednn"] is True
    assert "_FusedDepthwiseConv2dNative" in result["raw_remap_onednn_only"]


@MOBILENET
def test_verification_with_onednn_off_catches_what_only_oneDNN_runs(
        mobilenet_optimized_with_onednn):
    """The remapper's raw output, verified where oneDNN is on: it passes there and the run
    with oneDNN off (a child process) fails it, naming the cause."""
    _, result = mobilenet_optimized_with_onednn
    check = result["unchecked_verification"]
    assert check["onednn_checked"] == ["on", "off"] and not check["passed"]
    assert check["outputs"] and all(o["within_tolerance"] for o in check["outputs"])
    [failure] = check["failures"]
    assert failure.startswith("with oneDNN off (TF_ENABLE_ONEDNN_OPTS=0) the model fails:")
    # the plain kernels: placeholder depthwise or "Fusion is not implemented: [BiasAdd,Add]"
    assert "Missing 0-th output" in failure or "[BiasAdd,Add]" in failure


@MOBILENET
def test_mobilenet_optimized_with_onednn_on_has_no_onednn_only_op(
        mobilenet_optimized_with_onednn):
    out, _ = mobilenet_optimized_with_onednn
    graph = read_serving_graph(out).graph_def
    assert onednn_only_nodes(graph) == {}
    ops = Counter(n.op for n in graph.node)
    assert ops["_FusedDepthwiseConv2dNative"] == 0
    assert not [n for n in graph.node if n.op == "_FusedConv2D" and b"Add" in
                n.attr["fused_ops"].list.s]


@MOBILENET
def test_its_depthwise_convs_keep_the_plain_chain_depthwise_biasadd_relu6(
        mobilenet_optimized_with_onednn):
    out, _ = mobilenet_optimized_with_onednn
    graph = read_serving_graph(out).graph_def
    consumers: dict[str, list] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(node_name(tensor), []).append(node)
    chains = Counter()
    for node in graph.node:
        if node.op == "DepthwiseConv2dNative":
            [bias] = consumers[node.name]
            chains[(node.op, bias.op, *(c.op for c in consumers[bias.name]))] += 1
    # 17 blocks, once per signature (Keras exports `serve` and `serving_default`)
    assert chains == Counter({("DepthwiseConv2dNative", "BiasAdd", "Relu6"): 34})


def fusion_counts(model_dir: Path) -> list[tuple[str, int]]:
    """'op[fused ops]': count, for every node of the model's graph."""
    graph = read_serving_graph(model_dir).graph_def
    return sorted(Counter(f"{n.op}[{'+'.join(o.decode() for o in n.attr['fused_ops'].list.s)}]"
                          for n in graph.node).items())


@MOBILENET
def test_it_is_the_graph_a_machine_without_onednn_produces(
        mobilenet_optimized_with_onednn, mobilenet_model, tmp_path):
    """Same contractions, same fusions, whatever the producing machine runs."""
    out, _ = mobilenet_optimized_with_onednn
    off = tmp_path / "off"
    if onednn_enabled():  # TF's own decision for this CPU
        without = run_with_onednn("""
            from components.core.steps import optimize_model, parse_steps
            from tests.test_onednn import fusion_counts
            optimize_model(Path(paths["model"]), Path(paths["out"]), parse_steps("freeze,optimize"))
            result = fusion_counts(Path(paths["out"]))
            """, onednn="0", model=mobilenet_model, out=off)
        without = [tuple(item) for item in without]
    else:  # this process is such a machine
        optimize_model(mobilenet_model, off, parse_steps("freeze,optimize"))
        without = fusion_counts(off)
    assert fusion_counts(out) == without


@MOBILENET
def test_it_was_verified_with_onednn_on_and_off_and_runs_with_it_off(
        mobilenet_optimized_with_onednn, mobilenet_model):
    out, result = mobilenet_optimized_with_onednn
    verification = result["verification"]
    assert verification["passed"] and verification["onednn_checked"] == ["on", "off"]
    assert verification["max_abs_diff"] <= 1e-5
    answer = run_with_onednn("""
        import numpy as np
        from components.core.serving_session import ServingSession
        images = np.load(paths["inputs"])
        feed = {k: images[k][:8] for k in images.files}
        runs = {}
        for name, path in (("source", paths["model"]), ("optimized", paths["out"])):
            with ServingSession(Path(path)) as session:
                runs[name] = next(iter(session.run("serving_default", feed).values()))
        result = float(np.abs(runs["source"] - runs["optimized"]).max())
        """, onednn="0", model=mobilenet_model, out=out, inputs=_inputs(mobilenet_model))
    assert answer <= 1e-5


# --- the split and unfuse on hand-built fused nodes ---------------------------------

def _fused(name: str, op: str, inputs: list[str], fused_ops: list[str], **attrs):
    node = graph_pb2.GraphDef().node.add()
    node.name, node.op = name, op
    node.input.extend(inputs)
    node.attr["T"].type = tf.float32.as_datatype_enum
    node.attr["num_args"].i = len(inputs) - 2
    node.attr["TArgs"].list.type.extend([tf.float32.as_datatype_enum] * (len(inputs) - 2))
    node.attr["fused_ops"].list.s.extend(op.encode() for op in fused_ops)
    for key, value in attrs.items():
        node.attr[key].CopyFrom(value)
    return node


def _residual_block():
    """x -> depthwise -> BiasAdd -> Relu6 -> conv -> BiasAdd -> Add(x) -> Relu, standard ops,
    and the same with the fused nodes a oneDNN remapper makes of it."""
    rng = np.random.default_rng(0)
    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [None, 6, 6, 4], name="x")
        dw = tf.constant(rng.normal(size=(3, 3, 4, 1)).astype("f4"), name="dw_filter")
        db = tf.constant(rng.normal(size=4).astype("f4"), name="dw_bias")
        w = tf.constant(rng.normal(size=(1, 1, 4, 4)).astype("f4"), name="filter")
        b = tf.constant(rng.normal(size=4).astype("f4"), name="bias")
        depthwise = tf.nn.depthwise_conv2d(x, dw, [1, 1, 1, 1], "SAME", name="dw")
        act = tf.nn.relu6(tf.nn.bias_add(depthwise, db, name="dw_bias_add"), name="dw_relu6")
        conv = tf.nn.bias_add(tf.nn.conv2d(act, w, 1, "SAME", name="conv"), b, name="cb")
        tf.nn.relu(tf.add(conv, x, name="residual"), name="out")
    standard = graph.as_graph_def()
    nodes = {n.name: n for n in standard.node}
    fused = graph_pb2.GraphDef()
    fused.versions.CopyFrom(standard.versions)
    for node in standard.node:
        if node.name in ("dw", "dw_bias_add", "conv", "cb", "residual"):
            continue
        if node.name == "dw_relu6":
            node = _fused("dw_relu6", "_FusedDepthwiseConv2dNative",
                          ["x", "dw_filter", "dw_bias"], ["BiasAdd", "Relu6"],
                          **{k: nodes["dw"].attr[k] for k in ("strides", "padding",
                                                              "data_format", "dilations")})
        elif node.name == "out":
            node = _fused("out", "_FusedConv2D", ["dw_relu6", "filter", "bias", "x"],
                          ["BiasAdd", "Add", "Relu"],
                          **{k: nodes["conv"].attr[k] for k in ("strides", "padding",
                                                                "data_format", "dilations")})
        fused.node.add().CopyFrom(node)
    return standard, fused


def _run(graph_def: graph_pb2.GraphDef, feed: np.ndarray) -> np.ndarray:
    with tf.Graph().as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session() as session:
            return session.run("out:0", {"x:0": feed})


def test_onednn_only_nodes_names_the_fusions_plain_kernels_cannot_run():
    _, fused = _residual_block()
    found = onednn_only_nodes(fused)
    assert set(found) == {"dw_relu6", "out"}
    assert "placeholder that only oneDNN replaces" in found["dw_relu6"]
    assert "BiasAdd+Add+Relu has only a oneDNN CPU kernel" in found["out"]
    plain = _fused("plain", "_FusedConv2D", ["a", "b", "c"], ["BiasAdd", "Relu6"])
    mkl = _fused("mkl", "_MklConv2D", ["a", "b", "c"], [])
    graph = graph_pb2.GraphDef(node=[plain, mkl])
    assert set(onednn_only_nodes(graph)) == {"mkl"}


def test_the_split_runs_without_onednn_and_computes_the_same():
    standard, fused = _residual_block()
    feed = np.random.default_rng(1).random((2, 6, 6, 4)).astype("f4")
    split, count = without_onednn_fusions(fused, lambda n: n.name in ("dw_relu6", "out"))
    assert count == 2 and onednn_only_nodes(split) == {}
    ops = {n.name: (n.op, [o.decode() for o in n.attr["fused_ops"].list.s])
           for n in split.node}
    assert ops["out/fused"] == ("_FusedConv2D", ["BiasAdd"])  # what plain kernels fuse
    assert ops["out/add"][0] == "AddV2" and ops["out"][0] == "Relu"
    assert ops["dw_relu6/unfused"][0] == "DepthwiseConv2dNative"
    np.testing.assert_allclose(_run(split, feed), _run(standard, feed), atol=1e-5)


def test_unfuse_leaves_only_standard_ops_with_the_same_outputs():
    standard, fused = _residual_block()
    feed = np.random.default_rng(1).random((2, 6, 6, 4)).astype("f4")
    plain = unfuse(fused)
    assert not [n.op for n in plain.node if n.op.startswith("_")]
    np.testing.assert_allclose(_run(plain, feed), _run(standard, feed), atol=1e-5)


def test_grappler_output_that_cannot_be_split_fails_the_step_naming_the_op():
    from components.core.errors import StepSkipped
    from components.core.grappler import portable

    mkl = _fused("conv", "_MklConv2D", ["a", "b", "c"], [])
    with pytest.raises(StepSkipped, match="conv: _MklConv2D has no CPU kernel outside oneDNN"):
        portable(graph_pb2.GraphDef(node=[mkl]), "Grappler (remap)")


def test_a_fusion_without_a_standard_op_form_is_refused_with_its_name():
    node = _fused("bn", "_FusedConv2D", ["a", "b", "s", "o", "m", "v"],
                  ["FusedBatchNorm", "Relu"])
    with pytest.raises(CannotUnfuse, match="bn fuses FusedBatchNorm\\+Relu"):
        unfuse(graph_pb2.GraphDef(node=[node]))


# --- bf16 after GraphOptimizer -----------------------------------------------------

@pytest.fixture(scope="module")
def demo_optimized(demo_cnn_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "optimized"
    optimize_model(demo_cnn_model, out, parse_steps("freeze,optimize"),
                   OptimizeConfig(num_examples=64))
    return out


def test_the_bf16_rewrite_reads_standard_op_chains_not_graph_optimizers_fusions(
        demo_optimized):
    graph = read_serving_graph(demo_optimized)
    assert any(n.op == "_FusedConv2D" for n in graph.graph_def.node)
    fed = bf16_rewrite_input(graph).graph_def
    assert not [n.op for n in fed.node if n.op.startswith("_")]
    consumers = {node_name(t): n for n in fed.node for t in n.input}
    chains = Counter((n.op, consumers[n.name].op, consumers[consumers[n.name].name].op)
                     for n in fed.node if n.op in ("Conv2D", "MatMul"))
    assert chains[("Conv2D", "BiasAdd", "Relu")] == 6  # batch norms stay folded
    assert chains[("MatMul", "BiasAdd", "Relu")] == 4
    assert not [n for n in fed.node if n.op.startswith("FusedBatchNorm")]


def test_freeze_optimize_quantize_bfloat16_converts_the_demo_cnn_in_one_run(
        demo_cnn_model, tmp_path):
    """Grappler's bf16 rewrite exists only with oneDNN on; this CPU may have no bf16 units,
    so the child says it has them (TF emulates bf16 then: right results, slowly)."""
    result = run_with_onednn("""
        import components.core.bf16 as bf16
        bf16.cpu_flags = lambda: {"avx512_bf16"}  # emulated bf16 units, see the docstring
        from components.core.steps import OptimizeConfig, optimize_model, parse_steps
        from components.core.requirements import read_requirements
        report = optimize_model(Path(paths["model"]), Path(paths["out"]),
                                parse_steps("freeze,optimize,quantize=bfloat16"),
                                OptimizeConfig(examples=Path(paths["inputs"])))
        result = {"steps": [(s.step, s.status, s.reason, s.details) for s in report.steps],
                  "verification": report.verification.to_dict(),
                  "requirements": read_requirements(Path(paths["out"])).to_dict()}
        """, model=demo_cnn_model, out=tmp_path / "bf16", inputs=_inputs(demo_cnn_model))
    *_, (step, status, reason, details) = result["steps"]
    assert (step, status, reason) == ("quantize=bfloat16", "applied", None)
    assert details["bf16_ops"] > 0 and details["casts"] > 0
    verification = result["verification"]
    assert verification["passed"] and verification["top1_agreement"] >= 0.99
    assert verification["onednn_checked"] == ["on"]  # needs oneDNN: not run without it
    assert ServingRequirements.from_dict(result["requirements"]) == BF16_REQUIREMENTS
    graph = read_serving_graph(tmp_path / "bf16").graph_def
    bf16_ops = {n.op for n in graph.node if n.attr["T"].type == tf.bfloat16.as_datatype_enum}
    assert {"Conv2D", "MatMul"} <= bf16_ops


def test_bf16_needs_cpus_on_which_tf_turns_onednn_on_by_default():
    """So the gate's CPU-feature check against the server profile implies oneDNN too."""
    assert BF16_REQUIREMENTS.needs_onednn
    assert set(BF16_CPU_FEATURES) <= set(ONEDNN_DEFAULT_CPU_FEATURES)
    assert onednn_default_on({"avx512f", "avx512_vnni"})
    assert not onednn_default_on({"avx2", "fma"})


def test_the_gate_serves_a_bf16_variant_only_on_bf16_cpus_and_with_onednn_on(
        two_signature_model, tmp_path):
    """The recorded requirements against the server profile (see test_gate_server_profile)."""
    import shutil

    from components.core.config import deep_merge
    from components.core.gate import Thresholds, evaluate_gate
    from components.core.requirements import write_requirements
    from tests.test_gate_decision import NO_LIMITS
    from tests.test_gate_server_profile import THREAD_FLAGS, metrics, row

    bf16 = tmp_path / "bf16"
    shutil.copytree(two_signature_model, bf16)
    write_requirements(bf16, BF16_REQUIREMENTS)
    data = metrics()
    data["models"]["bf16"] = row("bf16", "tensorflow", 5.0, THREAD_FLAGS)
    models = {"optimized": two_signature_model, "bf16": bf16}

    def decide(cpu_features):
        thresholds = Thresholds.from_dict(deep_merge(NO_LIMITS, {
            "objective": ["p50_ms"], "server": {"cpu_features": cpu_features}}))
        return evaluate_gate(data, thresholds, models)

    assert decide(["avx2", "fma", "avx512_vnni"]).chosen == "optimized"  # oneDNN, no bf16
    chosen = decide(["avx512f", "avx512_bf16"])
    assert chosen.chosen == "bf16"
    assert chosen.serving_command().startswith(f"{ONEDNN_ENV}=1 tensorflow_model_server")
