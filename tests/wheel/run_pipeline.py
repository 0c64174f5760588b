"""Run inside a fresh virtual environment that has only the built wheel and its locked
dependencies, from a working directory outside the repository: a TFX pipeline of the five
components, every one with its defaults, on a small Keras model. Prints one JSON line."""

import json
import sys
from pathlib import Path

from components.core.tf_setup import tf  # noqa: F401  (TensorFlow, quietly, first)

import keras
from tfx.dsl.components.common.importer import Importer
from tfx.orchestration import metadata, pipeline
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from tfx.types import standard_artifacts

import components
from components.freezer import Freezer
from components.graph_optimizer import GraphOptimizer
from components.pusher_gate import PusherGate
from components.quantizer import Quantizer
from components.serving_benchmark import ServingBenchmark
from pipelines.digits.example_gen import write_examples
from pipelines.digits.model import digits_28x28


def main() -> None:
    """(In a function: the benchmark's workers are spawned processes, which import this
    script again, as every multiprocessing "spawn" user's script must allow.)"""
    work = Path.cwd()
    assert "site-packages" in components.__file__, components.__file__

    images, labels = digits_28x28()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1), name="image"), keras.layers.Conv2D(8, 3),
        keras.layers.BatchNormalization(), keras.layers.ReLU(), keras.layers.MaxPool2D(2),
        keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=3, batch_size=64, verbose=0)
    model.export(str(work / "trained" / "Format-Serving"), verbose=False)
    write_examples(work / "examples")

    trained = Importer(source_uri=str(work / "trained"),
                               artifact_type=standard_artifacts.Model).with_id("trained")
    examples = Importer(source_uri=str(work / "examples"),
                                artifact_type=standard_artifacts.Examples,
                                properties={"split_names": '["train", "eval"]'}
                                ).with_id("examples")
    model_in, examples_in = trained.outputs["result"], examples.outputs["result"]
    freezer = Freezer(model=model_in, examples=examples_in)
    optimizer = GraphOptimizer(model=freezer.outputs["frozen_model"])
    quantizer = Quantizer(model=optimizer.outputs["optimized_model"], examples=examples_in)
    benchmark = ServingBenchmark(
        baseline_model=model_in, examples=examples_in,
        candidates=[freezer.outputs["frozen_model"], optimizer.outputs["optimized_model"],
                    quantizer.outputs["quantized_model"]])
    gate = PusherGate(benchmark=benchmark.outputs["benchmark"],
                      push_destination=str(work / "serving" / "small"))
    LocalDagRunner().run(pipeline.Pipeline(
        pipeline_name="wheel", pipeline_root=str(work / "root"),
        components=[trained, examples, freezer, optimizer, quantizer, benchmark, gate],
        metadata_connection_config=metadata.sqlite_metadata_connection_config(
            str(work / "metadata.sqlite"))))

    served = sorted(p.name for p in (work / "serving" / "small").iterdir() if p.name.isdigit())
    blessing = next((work / "root").glob("PusherGate/blessing/*/decision.json"))
    metrics = next((work / "root").glob("ServingBenchmark/benchmark/*/metrics.json"))
    print(json.dumps({"components": components.__file__, "versions": served,
                      "decision": json.loads(blessing.read_text())["reason"],
                      "models": sorted(json.loads(metrics.read_text())["models"]),
                      "python": sys.executable}))


if __name__ == "__main__":
    main()
