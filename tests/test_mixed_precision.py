"""TF Serving's `--mixed_precision=bfloat16`: the Session config option it sets, and what
the model computes with it.

This machine's CPU may lack bf16 units (e.g. AVX2 only): there TF emulates bf16 (slowly)
after Grappler's rewrite, so the numbers below prove the rewrite ran and the model still
answers within bf16's precision, not that bf16 is fast here. Grappler's
auto_mixed_precision_onednn_bfloat16 runs only where TF runs oneDNN (on by default only on
CPUs with AVX512_VNNI/BF16/AMX; forced with TF_ENABLE_ONEDNN_OPTS=1, fixed at process
start), hence the child processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tensorflow.core.protobuf import rewriter_config_pb2

from components.core.batching import BatchingParameters
from components.core.benchmark.engines import EngineSpec, make_engine
from components.core.errors import ServoptError
from components.core.requirements import ONEDNN_ENV
from components.core.serving_session import ServingSession, session_config

ROOT = Path(__file__).resolve().parent.parent
ON = rewriter_config_pb2.RewriterConfig.ON

# Runs in a child with oneDNN set as asked: float32, bf16, bf16 batched on one batch of
# images; the bf16 ops Grappler put in the graph the Session ran (its partition graphs).
COMPARE = """
import json
from pathlib import Path
import numpy as np
from components.core.tf_setup import tf
from components.core.batching import BatchingParameters
from components.core.onednn import onednn_enabled
from components.core.serving_session import ServingSession

model = Path(MODEL)
images = np.load(model.parent / f"{model.name}-inputs.npz")["image"][:64]
bf16 = tf.bfloat16.as_datatype_enum
result = {"onednn": onednn_enabled()}
for name, kwargs in {"float32": {}, "bf16": {"mixed_precision": "bfloat16"},
                     "bf16_batched": {"mixed_precision": "bfloat16",
                                      "batching": BatchingParameters(64, 0, 1, 10)}}.items():
    with ServingSession(model, 1, 1, **kwargs) as session:
        outputs = session.run("serving_default", {"image": images})
        scores = next(iter(outputs.values()))
        result[name] = scores.tolist()
        if "batching" not in kwargs:
            signature = session.signature("serving_default")
            metadata = tf.compat.v1.RunMetadata()
            session.session.run(
                [t.name for t in signature.outputs.values()],
                {t.name: images for t in signature.inputs.values()},
                options=tf.compat.v1.RunOptions(output_partition_graphs=True),
                run_metadata=metadata)
            result[name + "_bf16_ops"] = sum(
                1 for graph in metadata.partition_graphs for node in graph.node
                if node.op != "Cast" and "T" in node.attr and node.attr["T"].type == bf16)
print("RESULT=" + json.dumps(result))
"""


def _compare(model: Path, onednn: str) -> dict:
    script = (f"MODEL = {str(model)!r}\n"  # the child runs no Keras (keras_deferred)
              "from components.core.keras_deferred import defer_keras\ndefer_keras()\n"
              + textwrap.dedent(COMPARE))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, ONEDNN_ENV: onednn}, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT=")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT="))
    for key in ("float32", "bf16", "bf16_batched"):
        result[key] = np.array(result[key])
    return result


def test_bfloat16_sets_the_rewrite_option_as_tf_serving_does():
    # saved_model_bundle_factory.cc: rwcfg->set_auto_mixed_precision_onednn_bfloat16(ON)
    assert session_config(1, 1, "bfloat16").graph_options.rewrite_options \
        .auto_mixed_precision_onednn_bfloat16 == ON
    plain = session_config(1, 1)
    assert plain.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 != ON
    assert plain.intra_op_parallelism_threads == 1


def test_other_values_are_refused():
    with pytest.raises(ServoptError, match="--mixed_precision=float16: TF Serving supports "
                                           "only 'bfloat16'"):
        session_config(1, 1, "float16")


def test_the_loaded_session_runs_with_it(seed_cnn_model):
    with ServingSession(seed_cnn_model, 1, 1, mixed_precision="bfloat16") as session:
        assert session.config.graph_options.rewrite_options \
            .auto_mixed_precision_onednn_bfloat16 == ON
        assert session.session._config.graph_options.rewrite_options \
            .auto_mixed_precision_onednn_bfloat16 == ON  # what the Session was built with
    spec = EngineSpec("tensorflow", str(seed_cnn_model), "serving_default", 1, 1,
                      mixed_precision="bfloat16")
    engine = make_engine(spec)
    try:
        images = np.load(seed_cnn_model.parent / "seed_cnn-inputs.npz")["image"][:4]
        scores = next(iter(engine.run({"image": images}).values()))
        assert scores.shape == (4, 10) and np.isfinite(scores).all()
    finally:
        engine.close()


def test_with_onednn_the_model_runs_in_bf16_and_stays_close_to_float32(seed_cnn_model):
    result = _compare(seed_cnn_model, onednn="1")
    assert result["onednn"]
    assert result["float32_bf16_ops"] == 0
    assert result["bf16_bf16_ops"] > 0  # Grappler rewrote the convolutions/matmuls
    difference = np.abs(result["bf16"] - result["float32"]).max()
    # bf16 keeps 8 significant bits (~0.4% per value): softmax scores move by < 0.05,
    # and they do move (the float32 path would give ~1e-7).
    assert 1e-4 < difference < 0.05
    agreement = (result["bf16"].argmax(1) == result["float32"].argmax(1)).mean()
    assert agreement >= 0.95
    # Batched, the BatchFunction's function is rewritten too (Grappler optimizes it as a
    # function: its casts need not fall exactly where the inlined graph's do).
    batched = np.abs(result["bf16_batched"] - result["float32"]).max()
    assert 1e-4 < batched < 0.05, batched


def test_without_onednn_the_option_changes_nothing(seed_cnn_model):
    # A TF Serving without oneDNN accepts the flag and runs float32 (Grappler skips the
    # rewrite): so does this Session.
    result = _compare(seed_cnn_model, onednn="0")
    assert not result["onednn"]
    assert result["bf16_bf16_ops"] == 0
    np.testing.assert_allclose(result["bf16"], result["float32"], rtol=1e-6, atol=1e-7)


def test_mixed_precision_and_batching_engine_spec(seed_cnn_model):
    spec = EngineSpec("tensorflow", str(seed_cnn_model), "serving_default", 1, 1,
                      mixed_precision="bfloat16", batching=BatchingParameters(8, 0, 1, 10))
    engine = make_engine(spec)
    try:
        images = np.load(seed_cnn_model.parent / "seed_cnn-inputs.npz")["image"][:3]
        assert next(iter(engine.run({"image": images}).values())).shape == (3, 10)
    finally:
        engine.close()



def _bf16_depthwise_model(path: Path) -> Path:
    """A depthwise conv computed in bf16: its CPU kernel exists only with oneDNN (the bf16
    variant of MobileNetV2 is full of them)."""
    from components.core.tf_setup import tf

    class Module(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.ones([3, 3, 4, 1]))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 4], tf.float32)])
        def serve(self, x):
            y = tf.nn.depthwise_conv2d(tf.cast(x, tf.bfloat16), tf.cast(self.w, tf.bfloat16),
                                       [1, 1, 1, 1], "SAME")
            return {"y": tf.cast(y, tf.float32)}

    module = Module()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_flops_of_a_graph_with_onednn_only_bf16_kernels_are_counted(tmp_path):
    """Counting only reads the graph: the portability rule for what is served does not
    apply (MobileNetV2's bf16 variant recorded 'flops: StepSkipped' before)."""
    from components.core.benchmark.flops import flops_per_example

    model = _bf16_depthwise_model(tmp_path / "bf16")
    assert flops_per_example(model, "serving_default") == 8 * 8 * 4 * 3 * 3 * 2
