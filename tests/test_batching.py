"""TF Serving's server-side batching: its parameters, files and flags, and the Session
engine that runs requests through TF's own batch scheduler (BatchFunction)."""

from __future__ import annotations

import pickle
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from components.core.batch_function import function_arguments
from components.core.batching import (
    BATCHING_PARAMS_FILE,
    BatchingParameters,
    batching_candidates,
    batching_flags,
    read_batching_params,
    schedulable_cpus,
    server_batching_file,
    write_batching_params,
    write_server_batching_file,
)
from components.core.benchmark.engines import EngineSpec, SessionEngine, make_engine
from components.core.benchmark.measure import LocalRunner
from components.core.errors import ServoptError
from components.core.serving_session import BatchCounts
from tests.model_zoo import word_examples

# tensorflow/serving g3doc/serving_config.md "Batching Configuration", verbatim.
SERVING_CONFIG_EXAMPLE = """max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
"""


# --- parameters, files, flags ---------------------------------------------------------

def test_defaults_are_tfs_batch_scheduler_defaults():
    # A file with nothing in it: shared_batch_scheduler.h QueueOptions / Options defaults.
    assert BatchingParameters.parse_pbtxt("") == BatchingParameters(
        max_batch_size=1000, batch_timeout_micros=0, num_batch_threads=None,
        max_enqueued_batches=10)


def test_parses_tf_servings_documented_example_and_its_text_format_variants():
    params = BatchingParameters.parse_pbtxt(SERVING_CONFIG_EXAMPLE)
    assert params == BatchingParameters(128, 0, 8, 1000000)
    other_spelling = BatchingParameters.parse_pbtxt(
        "# per model\nmax_batch_size: { value: 16 }\nallowed_batch_sizes: [4, 8, 16]\n"
        "enable_large_batch_splitting { value: true }\n"
        "max_execution_batch_size { value: 8 }\n"
        'thread_pool_name { value: "model_server_batch_threads" }\n')
    assert other_spelling == BatchingParameters(
        max_batch_size=16, allowed_batch_sizes=(4, 8, 16), enable_large_batch_splitting=True,
        max_execution_batch_size=8)


@pytest.mark.parametrize("params", [
    BatchingParameters(32, 1000, None, 100, (8, 16, 32)),
    BatchingParameters(max_batch_size=64, enable_large_batch_splitting=True,
                       max_execution_batch_size=16, max_enqueued_batches=4),
    BatchingParameters(),
])
def test_pbtxt_round_trip(params):
    text = params.to_pbtxt()
    assert "max_batch_size { value: " in text  # the wrapped Int64Value form
    assert BatchingParameters.parse_pbtxt(text) == params
    assert BatchingParameters.from_dict(params.to_dict()) == params


def test_num_batch_threads_goes_to_the_servers_file_not_the_models():
    params = BatchingParameters(32, 0, 4, 32)
    assert "num_batch_threads" not in params.to_pbtxt()  # TF Serving ignores it there
    assert BatchingParameters.parse_pbtxt(params.to_pbtxt()) == replace(
        params, num_batch_threads=None)
    server_file = server_batching_file(params)
    assert BatchingParameters.parse_pbtxt(server_file).num_batch_threads == 4
    assert server_batching_file(replace(params, num_batch_threads=None)) is None


@pytest.mark.parametrize("text, message", [
    ("max_batch_sise { value: 8 }", 'no field named "max_batch_sise"'),
    ("max_batch_size: 8", "max_batch_size"),  # unwrapped: TF Serving's parser refuses it
    ("max_batch_size { value: 8 ", "not a tensorflow.serving.BatchingParameters"),
    ("pad_variable_length_inputs: true", "pad_variable_length_inputs is not modelled"),
])
def test_parse_refuses_what_tf_serving_would_not_read_naming_the_file(text, message):
    with pytest.raises(ServoptError, match="^models/1/batching_params.pbtxt: ") as err:
        BatchingParameters.parse_pbtxt(text, "models/1/batching_params.pbtxt")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("params, message", [
    (BatchingParameters(max_batch_size=0), "max_batch_size 0 is not positive"),
    (BatchingParameters(batch_timeout_micros=-1), "batch_timeout_micros -1 is negative"),
    (BatchingParameters(num_batch_threads=0), "num_batch_threads 0 is not positive"),
    (BatchingParameters(max_enqueued_batches=-1), "max_enqueued_batches -1"),
    (BatchingParameters(max_enqueued_batches=0, enable_large_batch_splitting=True),
     "max_enqueued_batches 0"),
    (BatchingParameters(max_execution_batch_size=8), "enable_large_batch_splitting is not"),
    (BatchingParameters(max_batch_size=8, enable_large_batch_splitting=True,
                        max_execution_batch_size=16), "input_batch_size_limit must be >="),
    (BatchingParameters(max_batch_size=8, allowed_batch_sizes=(4, 2, 8)),
     "not positive and increasing"),
    (BatchingParameters(max_batch_size=8, allowed_batch_sizes=(0, 8)),
     "not positive and increasing"),
    (BatchingParameters(max_batch_size=8, allowed_batch_sizes=(2, 4)),
     "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; "
     "expected 8"),
])
def test_validation_applies_tf_servings_rules(params, message):
    with pytest.raises(ServoptError, match="^x.pbtxt: ") as err:
        params.validate("x.pbtxt")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_validation_accepts_what_tf_serving_accepts():
    # max_enqueued_batches 0 without splitting is rewritten to 1 (SharedBatchScheduler::AddQueue)
    for params in (BatchingParameters(max_enqueued_batches=0),
                   BatchingParameters(8, 0, 1, 1, (1, 2, 8)),
                   BatchingParameters(max_batch_size=64, enable_large_batch_splitting=True,
                                      max_execution_batch_size=64)):
        assert params.validate() is params


def test_flags():
    assert batching_flags(None) == []
    assert batching_flags(BatchingParameters(32, 0, None, 32)) == [
        "--enable_batching", "--enable_per_model_batching_parameters"]
    assert batching_flags(BatchingParameters(32, 0, 2, 32), "/models/m/batching.pbtxt") == [
        "--enable_batching", "--enable_per_model_batching_parameters",
        "--batching_parameters_file=/models/m/batching.pbtxt"]


def test_write_and_read_the_version_directorys_file(tmp_path):
    params = BatchingParameters(16, 2000, None, 16, (4, 16))
    path = write_batching_params(tmp_path, params)
    assert path == tmp_path / BATCHING_PARAMS_FILE
    assert [p.name for p in tmp_path.iterdir()] == [BATCHING_PARAMS_FILE]  # no temp left
    assert read_batching_params(tmp_path) == params
    with pytest.raises(ServoptError, match="must match max_batch_size"):
        write_batching_params(tmp_path, BatchingParameters(16, allowed_batch_sizes=(4, 8)))
    assert read_batching_params(tmp_path) == params  # the refused one wrote nothing
    assert read_batching_params(tmp_path / "missing") is None  # not batched


def test_write_the_servers_file_only_where_needed(tmp_path):
    server_file = tmp_path / "batching_parameters.pbtxt"
    assert write_server_batching_file(server_file, BatchingParameters(16)) is None
    assert not server_file.exists()
    assert write_server_batching_file(server_file, BatchingParameters(16, 0, 3)) == server_file
    assert BatchingParameters.parse_pbtxt(server_file.read_text()).num_batch_threads == 3


def test_candidates_follow_the_batching_guide():
    cores = schedulable_cpus()
    candidates = batching_candidates(cores=cores, clients=8, request_batch=1)
    assert 3 <= len(candidates) <= 4
    assert len(set(candidates)) == len(candidates)
    assert {c.batch_timeout_micros for c in candidates} == {0, 1000, 5000}
    assert all(c.num_batch_threads is None for c in candidates)  # TF's default: the cores
    assert all(c.batch_threads == cores for c in candidates)
    fewer = batching_candidates(cores=cores + 1, clients=8)
    assert all(c.num_batch_threads == cores + 1 for c in fewer)
    assert {c.max_batch_size for c in candidates} == {8, 4}
    single = batching_candidates(cores=2, clients=1, request_batch=100)
    assert all(c.max_batch_size >= 100 for c in single)  # a request is never refused


def test_engine_spec_stays_picklable_and_tflite_batching_is_refused():
    spec = EngineSpec("tensorflow", "/m", "serving_default", 1, 1,
                      mixed_precision="bfloat16", batching=BatchingParameters(8))
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert EngineSpec("tensorflow", "/m", "serving_default", 1, 1).batching is None
    with pytest.raises(ServoptError, match="batching of a TFLite model .* not modelled"):
        make_engine(replace(spec, runtime="tflite", mixed_precision=None))


def test_batch_function_attributes():
    assert function_arguments(BatchingParameters(8, 500, 3, 7, (4, 8))) == {
        "num_batch_threads": 3, "max_batch_size": 8, "batch_timeout_micros": 500,
        "max_enqueued_batches": 7, "allowed_batch_sizes": [4, 8],
        "enable_large_batch_splitting": False}
    # TF Serving's max_execution_batch_size: BatchFunction's execution limit is its last
    # allowed size; every size up to it is allowed, so nothing is padded.
    split = function_arguments(BatchingParameters(
        16, num_batch_threads=1, enable_large_batch_splitting=True, max_execution_batch_size=4))
    assert split["allowed_batch_sizes"] == [1, 2, 3, 4] and split["max_batch_size"] == 16
    with pytest.raises(ServoptError, match="cannot run that"):
        function_arguments(BatchingParameters(16, allowed_batch_sizes=(8, 16),
                                              enable_large_batch_splitting=True,
                                              max_execution_batch_size=8))


# --- the batched Session engine (real models, TF's BatchFunction) ----------------------

def _images(model: Path, count: int, start: int = 0) -> np.ndarray:
    return np.load(model.parent / f"{model.name}-inputs.npz")["image"][start:start + count]


@pytest.fixture(scope="module")
def plain(seed_cnn_model):
    engine = SessionEngine(seed_cnn_model, "serving_default", 1, 1)
    yield engine
    engine.close()


def _batched(model: Path, params: BatchingParameters) -> SessionEngine:
    return SessionEngine(model, "serving_default", 1, 1, batching=params, count_batches=True)


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:  # another batch size may sum in another order: float rounding only
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)


def test_batched_outputs_equal_the_plain_engines_padded_to_the_allowed_size(
        seed_cnn_model, plain):
    engine = _batched(seed_cnn_model, BatchingParameters(8, 0, 1, 10, (4, 8)))
    try:
        feeds = {"image": _images(seed_cnn_model, 5)}
        outputs = engine.run(feeds)
        _assert_same(outputs, plain.run(feeds))
        assert all(len(v) == 5 for v in outputs.values())  # padding rows dropped
        assert engine.batch_counts().batches == 1
        assert engine.batch_counts().examples == 8  # 5 padded to the allowed size 8
        engine.run({"image": _images(seed_cnn_model, 3)})
        assert engine.batch_counts().examples == 8 + 4
    finally:
        engine.close()


def test_concurrent_clients_are_merged_into_batches(seed_cnn_model):
    clients, requests = 8, 6
    # A batch closes when full (8 single-example requests) or after 1 s: clients in
    # lockstep fill it; merging is counted, not timed.
    engine = _batched(seed_cnn_model, BatchingParameters(clients, 1_000_000, 1, clients))
    runner = LocalRunner(lambda: engine)
    try:
        images = _images(seed_cnn_model, clients)
        runner.load({"image": images[:1]})
        runner.set_inputs(1, [{"image": images[i:i + 1]} for i in range(clients)])
        before = engine.batch_counts()
        sample = runner.concurrent(1, clients, requests)
        counts = engine.batch_counts()
        calls = clients * (requests + 1)  # each client's warm-up request included
        assert len(sample.latencies_ms) == clients * requests
        assert counts.examples - before.examples == calls
        assert counts.batches - before.batches <= calls // 2  # merged: fewer runs than calls
    finally:
        runner.close()


def test_each_client_gets_its_own_rows_back(seed_cnn_model, plain):
    clients = 6
    engine = _batched(seed_cnn_model, BatchingParameters(12, 1_000_000, 1, 12))
    try:
        feeds = [{"image": _images(seed_cnn_model, 2, start=2 * i)} for i in range(clients)]
        results: list = [None] * clients
        barrier = threading.Barrier(clients)

        def client(index: int) -> None:
            barrier.wait()
            results[index] = engine.run(feeds[index])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for index in range(clients):
            _assert_same(results[index], plain.run(feeds[index]))
        assert engine.batch_counts().batches < clients  # some requests shared a batch
    finally:
        engine.close()


def test_a_request_over_max_batch_size_fails_as_in_tf_serving(seed_cnn_model):
    engine = _batched(seed_cnn_model, BatchingParameters(8, 0, 1, 10))
    try:
        with pytest.raises(ServoptError, match="Task size 9 is larger than maximum input "
                                               "batch size 8"):
            engine.run({"image": _images(seed_cnn_model, 9)})
        assert engine.batch_counts().batches == 0  # refused before it was queued
    finally:
        engine.close()


def test_large_batch_splitting_runs_a_request_in_execution_sized_batches(
        seed_cnn_model, plain):
    params = BatchingParameters(16, 0, 1, 10, enable_large_batch_splitting=True,
                                max_execution_batch_size=4)
    engine = _batched(seed_cnn_model, params)
    try:
        feeds = {"image": _images(seed_cnn_model, 10)}
        _assert_same(engine.run(feeds), plain.run(feeds))
        assert engine.batch_counts().batches == 3  # 4 + 4 + 2, not padded
        assert engine.batch_counts().examples == 10
        # Splitting does not lift max_batch_size (shared_batch_scheduler.h checks it first).
        with pytest.raises(ServoptError, match="Task size 17 is larger"):
            engine.run({"image": _images(seed_cnn_model, 17)})
    finally:
        engine.close()


def test_a_tf1_model_with_ref_variables_and_a_table_is_batched(tf1_vocab_model):
    # TF1 ref variables and a hash table live outside the batched function: passed in.
    params = BatchingParameters(16, 0, 1, 10, (8, 16))
    examples = {"examples": word_examples(6)}
    plain_engine = SessionEngine(tf1_vocab_model, "predict", 1, 1)
    engine = SessionEngine(tf1_vocab_model, "predict", 1, 1, batching=params,
                           count_batches=True)
    try:
        want = plain_engine.run(examples)
        got = engine.run(examples)
        np.testing.assert_array_equal(got["ids"], want["ids"])
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-5, atol=1e-6)
        assert engine.batch_counts().examples == 8
    finally:
        engine.close()
        plain_engine.close()


def test_both_signatures_of_the_demo_model_are_batched(demo_cnn_model):
    # The demo's model: an image signature and a serialized tf.Example one (parsed inside
    # the batched function), sharing every weight.
    from components.core.tf_setup import tf

    images = np.load(demo_cnn_model.parent / "demo_cnn-inputs.npz")["image"][:5]
    examples = np.array([tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(float_list=tf.train.FloatList(value=image.ravel()))}))
        .SerializeToString() for image in images], dtype=object)
    params = BatchingParameters(8, 0, 1, 10, (4, 8))
    for signature, feeds in (("serving_default", {"image": images}),
                             ("serving_examples", {"examples": examples})):
        plain_engine = SessionEngine(demo_cnn_model, signature, 1, 1)
        engine = SessionEngine(demo_cnn_model, signature, 1, 1, batching=params,
                               count_batches=True)
        try:
            _assert_same(engine.run(feeds), plain_engine.run(feeds))
            assert engine.batch_counts() == BatchCounts(batches=1, examples=8)
        finally:
            engine.close()
            plain_engine.close()


@pytest.mark.e2e  # a benchmark worker process
def test_the_benchmark_worker_runs_a_batching_spec_under_concurrent_clients(seed_cnn_model):
    from components.core.benchmark.worker import ProcessRunner

    spec = EngineSpec("tensorflow", str(seed_cnn_model), "serving_default", 1, 1,
                      batching=BatchingParameters(4, 1000, 1, 4))
    runner = ProcessRunner(spec)
    try:
        images = _images(seed_cnn_model, 4)
        runner.load({"image": images[:1]})
        runner.set_inputs(1, [{"image": images[i:i + 1]} for i in range(4)])
        sample = runner.concurrent(1, clients=4, requests_per_client=3)
        assert len(sample.latencies_ms) == 12 and sample.examples == 12
        with pytest.raises(ServoptError, match="Task size 5 is larger"):
            runner.set_inputs(5, [{"image": _images(seed_cnn_model, 5)}])
            runner.warmup(5, 1)
    finally:
        runner.close()
