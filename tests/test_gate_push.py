"""Pushing to a TF Serving model base directory: a new integer version above every other,
published whole or not at all, safe when pipelines push at once, never outside the base."""

from __future__ import annotations

import filecmp
import multiprocessing
import os
import shutil
import signal
import socket
import stat
import time
from pathlib import Path

from components.core.tf_setup import tf

import numpy as np
import pytest

from components.core.errors import ServoptError
from components.core.gate import push as push_module
from components.core.gate import push_model, read_warmup_file, versions
from components.core.model_paths import resolve_saved_model_dir
from components.core.serving_session import ServingSession

FORK = multiprocessing.get_context("fork")  # TensorFlow is imported: no re-import per child


def same_tree(a: Path, b: Path) -> bool:
    comparison = filecmp.dircmp(a, b)
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, comparison.common_files, shallow=False)
    return not mismatch and not errors and all(
        same_tree(a / d, b / d) for d in comparison.common_dirs)


def hidden_entries(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.startswith(".tmp-"))


def test_a_push_publishes_the_model_as_a_servable_version(two_signature_model, tmp_path):
    base = tmp_path / "serving" / "digits"
    result = push_model(two_signature_model, base, clock=lambda: 1_700_000_000.7)
    assert result.version == 1_700_000_000
    assert result.path == str(base / "1700000000") and result.base_dir == str(base)
    assert versions(base) == [1_700_000_000]
    assert same_tree(two_signature_model, base / "1700000000")
    assert hidden_entries(base) == []
    assert resolve_saved_model_dir(base) == base / "1700000000"  # what TF Serving serves
    with ServingSession(base / "1700000000") as session:
        out = session.run("serving_default", {"features": np.zeros((2, 16), np.float32)})
    assert out["probabilities"].shape == (2, 6)


def test_a_tfx_model_artifact_is_pushed_from_its_serving_directory(two_signature_model,
                                                                    tmp_path):
    artifact = tmp_path / "artifact"
    shutil.copytree(two_signature_model, artifact / "Format-Serving")
    result = push_model(artifact, tmp_path / "serving")
    assert same_tree(two_signature_model, Path(result.path))


def test_the_version_is_the_push_time_or_above_every_existing_one(two_signature_model,
                                                                  tmp_path):
    base = tmp_path / "serving"
    base.mkdir()
    assert push_model(two_signature_model, base, clock=lambda: 1000).version == 1000
    assert push_model(two_signature_model, base, clock=lambda: 1000).version == 1001
    (base / "5000").mkdir()  # e.g. pushed by a machine whose clock runs ahead
    assert push_model(two_signature_model, base, clock=lambda: 1000).version == 5001
    now = int(time.time())
    assert push_model(two_signature_model, base).version >= now
    assert versions(base) == sorted(versions(base)) and len(versions(base)) == 5


def test_a_version_directory_made_by_another_tool_is_never_overwritten(
        two_signature_model, tmp_path, monkeypatch):
    base = tmp_path / "serving"
    (base / "1000").mkdir(parents=True)  # another tool is copying into it: empty so far
    (base / "1001").mkdir()
    (base / "1001" / "saved_model.pb").write_bytes(b"theirs")
    monkeypatch.setattr(push_module, "versions", lambda _: [])  # as blind as a racing writer
    assert push_model(two_signature_model, base, clock=lambda: 1000).version == 1002
    assert list((base / "1000").iterdir()) == []
    assert (base / "1001" / "saved_model.pb").read_bytes() == b"theirs"


def test_a_pushed_version_is_readable_by_the_serving_user(two_signature_model, tmp_path):
    umask = os.umask(0o022)
    try:
        result = push_model(two_signature_model, tmp_path / "serving")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(Path(result.path).stat().st_mode) == 0o755  # not mkdtemp's 0o700


def _push_repeatedly(model: str, base: str, pushes: int, start, results) -> None:
    start.wait()
    for _ in range(pushes):  # every process claims the same version number each time
        results.put((os.getpid(), push_model(model, base, clock=lambda: 1000).version))


def test_concurrent_pushes_from_several_processes_each_get_their_own_complete_version(
        two_signature_model, tmp_path):
    base = tmp_path / "serving"
    processes, pushes = 4, 3
    start, results = FORK.Barrier(processes), FORK.Queue()
    workers = [FORK.Process(target=_push_repeatedly,
                            args=(str(two_signature_model), str(base), pushes, start, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    pushed = [results.get(timeout=120) for _ in range(processes * pushes)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    numbers = [version for _, version in pushed]
    assert sorted(numbers) == list(range(1000, 1000 + processes * pushes))  # unique, none lost
    assert versions(base) == sorted(numbers)
    for pid in {pid for pid, _ in pushed}:  # each pipeline's versions increase
        own = [version for p, version in pushed if p == pid]
        assert own == sorted(own) and len(own) == pushes
    for version in numbers:  # every version complete
        assert same_tree(two_signature_model, base / str(version))
    assert hidden_entries(base) == []


def _push_and_hang_mid_copy(model: str, base: str, copying) -> None:
    def slow_copy(src: str, dst: str) -> None:
        data = Path(src).read_bytes()
        with open(dst, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            copying.set()
            time.sleep(120)  # killed here, half the file written
            out.write(data[len(data) // 2:])

    push_module._copy_file = slow_copy
    push_model(model, base, clock=lambda: 2000)


def test_a_push_killed_mid_copy_leaves_no_visible_partial_version(two_signature_model,
                                                                  tmp_path):
    base = tmp_path / "serving"
    push_model(two_signature_model, base, clock=lambda: 1000)
    copying = FORK.Event()
    worker = FORK.Process(target=_push_and_hang_mid_copy,
                          args=(str(two_signature_model), str(base), copying))
    worker.start()
    assert copying.wait(timeout=60), "the push never started copying"
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(timeout=30)
    assert worker.exitcode == -signal.SIGKILL

    assert versions(base) == [1000]  # TF Serving still sees only the old version
    assert resolve_saved_model_dir(base) == base / "1000"
    [leftover] = hidden_entries(base)  # a hidden staging directory TF Serving ignores
    assert not leftover.isdigit()
    assert leftover.endswith(f".{worker.pid}.{socket.gethostname()}")  # its owner

    assert push_model(two_signature_model, base, clock=lambda: 1000).version == 1001
    assert hidden_entries(base) == []  # the next push removes it: its owner is gone


def test_staging_directories_of_running_or_remote_pushes_are_kept_until_a_day_old(
        two_signature_model, tmp_path):
    base = tmp_path / "serving"
    base.mkdir()
    running = base / f".tmp-servopt-{'a' * 32}.{os.getpid()}.{socket.gethostname()}"
    remote = base / f".tmp-servopt-{'b' * 32}.1.another-host.example.com"
    legacy = base / f".tmp-servopt-{'c' * 32}"  # named before owners were recorded
    killed_prune = base / f".tmp-servopt-delete-{'d' * 32}"
    for directory in (running, remote, legacy, killed_prune):
        (directory / "variables").mkdir(parents=True)
    push_model(two_signature_model, base, clock=lambda: 1000)
    assert hidden_entries(base) == sorted(p.name for p in (running, remote, legacy))

    day_ago = time.time() - 2 * 24 * 3600
    for directory in (remote, legacy):
        os.utime(directory, (day_ago, day_ago))
    push_model(two_signature_model, base, clock=lambda: 1000)
    assert hidden_entries(base) == [running.name]


def test_a_copy_that_fails_midway_publishes_nothing(two_signature_model, tmp_path,
                                                    monkeypatch):
    base = tmp_path / "serving"
    push_model(two_signature_model, base, clock=lambda: 1000)
    copied = []

    def failing_copy(src: str, dst: str) -> None:
        if copied:
            raise OSError(28, "No space left on device", dst)
        copied.append(src)
        Path(dst).write_bytes(Path(src).read_bytes())

    monkeypatch.setattr(push_module, "_copy_file", failing_copy)
    with pytest.raises(ServoptError, match=r"push failed while copying .*No space left on "
                                           r"device.*nothing was published"):
        push_model(two_signature_model, base, clock=lambda: 1000)
    assert versions(base) == [1000] and hidden_entries(base) == []


def test_saved_model_pb_is_copied_last(two_signature_model, tmp_path, monkeypatch):
    order = []
    real_copy = push_module._copy_file

    def recording_copy(src: str, dst: str) -> None:
        order.append(Path(dst).name)
        real_copy(src, dst)

    monkeypatch.setattr(push_module, "_copy_file", recording_copy)
    push_model(two_signature_model, tmp_path / "serving")
    assert order[-1] == "saved_model.pb" and order.count("saved_model.pb") == 1


def test_a_model_name_escaping_the_base_through_dot_dot_is_refused(two_signature_model,
                                                                    tmp_path):
    (tmp_path / "serving").mkdir()
    with pytest.raises(ServoptError, match=r"model name '\.\./elsewhere' is not a single "
                                           r"directory name"):
        push_model(two_signature_model, tmp_path / "serving", model_name="../elsewhere")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]
    assert list((tmp_path / "serving").iterdir()) == []


def test_a_relative_destination_with_dot_dot_is_pushed_where_it_leads(two_signature_model,
                                                                      tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    result = push_model(two_signature_model, "../serving", model_name="digits",
                        clock=lambda: 1000)
    assert versions(tmp_path / "serving" / "digits") == [1000]
    assert Path(result.path).resolve() == tmp_path / "serving" / "digits" / "1000"


def test_a_destination_that_is_itself_a_symlink_is_refused(two_signature_model, tmp_path):
    outside, link = tmp_path / "outside", tmp_path / "serving"
    outside.mkdir()
    link.symlink_to(outside)
    with pytest.raises(ServoptError, match=r"serving: is a symlink \(to .*outside\); a push "
                                           r"must stay inside the directory it names"):
        push_model(two_signature_model, link)
    assert list(outside.iterdir()) == []


def test_a_model_whose_symlink_leads_outside_it_is_not_published(two_signature_model,
                                                                 tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    model = tmp_path / "model"
    shutil.copytree(two_signature_model, model)
    (model / "assets").mkdir(exist_ok=True)
    (model / "assets" / "vocab.txt").symlink_to(secret)
    base = tmp_path / "serving"
    with pytest.raises(ServoptError, match=r"assets/vocab.txt: is a symlink to .*secret.txt, "
                                           r"outside the model"):
        push_model(model, base)
    assert not base.exists() or (versions(base) == [] and hidden_entries(base) == [])


def test_a_symlink_between_the_models_own_files_is_published_as_the_file(
        two_signature_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(two_signature_model, model)
    (model / "assets").mkdir(exist_ok=True)
    (model / "assets" / "vocab.txt").write_text("a\nb\n")
    (model / "assets" / "same_vocab.txt").symlink_to(model / "assets" / "vocab.txt")
    result = push_model(model, tmp_path / "serving")
    copy = Path(result.path) / "assets" / "same_vocab.txt"
    assert not copy.is_symlink() and copy.read_text() == "a\nb\n"


def test_a_destination_escaping_through_a_symlink_is_refused(two_signature_model, tmp_path):
    serving, outside = tmp_path / "serving", tmp_path / "outside"
    serving.mkdir()
    outside.mkdir()
    (serving / "digits").symlink_to(outside)
    with pytest.raises(ServoptError, match=r"digits: is a symlink .*must stay inside"):
        push_model(two_signature_model, serving, model_name="digits")
    assert list(outside.iterdir()) == []
    result = push_model(two_signature_model, serving, model_name="mnist")  # a real subdir
    assert Path(result.path).parent == serving / "mnist"


def test_keep_last_removes_old_versions_but_never_the_one_just_pushed(two_signature_model,
                                                                      tmp_path):
    base = tmp_path / "serving"
    for _ in range(3):
        push_model(two_signature_model, base, clock=lambda: 1000)
    result = push_model(two_signature_model, base, keep_last=2, clock=lambda: 1000)
    assert result.version == 1003 and result.removed_versions == [1000, 1001]
    assert versions(base) == [1002, 1003]
    result = push_model(two_signature_model, base, keep_last=1, clock=lambda: 1000)
    assert versions(base) == [result.version] == [1004]
    assert same_tree(two_signature_model, base / "1004")
    assert hidden_entries(base) == []
    with pytest.raises(ServoptError, match="keep_last must be an integer >= 1"):
        push_model(two_signature_model, base, keep_last=0)


def _features_tfrecord(path: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(count):
            example = tf.train.Example(features=tf.train.Features(feature={"features": (
                tf.train.Feature(float_list=tf.train.FloatList(value=rng.random(16))))}))
            writer.write(example.SerializeToString())
    return path


@pytest.mark.parametrize("source", ["npz", "tfrecord"])
def test_warmup_requests_are_written_as_prediction_logs_tf_serving_replays(
        two_signature_model, tmp_path, source):
    if source == "npz":
        examples = tmp_path / "eval.npz"
        np.savez(examples, features=np.random.default_rng(0).random((8, 16)))
    else:
        examples = _features_tfrecord(tmp_path / "eval.tfrecord", 8)
    result = push_model(two_signature_model, tmp_path / "serving", model_name="digits",
                        warmup_examples=examples, warmup_batch_sizes=(1, 4))
    assert result.warmup_requests == 2
    warmup = Path(result.path) / "assets.extra" / "tf_serving_warmup_requests"
    logs = read_warmup_file(warmup)
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log", "predict_log"]
    with ServingSession(Path(result.path)) as session:  # each request is one the model serves
        for log, batch_size in zip(logs, (1, 4), strict=True):
            request = log.predict_log.request
            assert request.model_spec.name == "digits"
            assert request.model_spec.signature_name == "serving_default"
            features = tf.make_ndarray(request.inputs["features"])
            assert features.shape == (batch_size, 16) and features.dtype == np.float32
            out = session.run("serving_default", {"features": features})
            assert out["probabilities"].shape == (batch_size, 6)


def test_warmup_examples_without_the_signature_inputs_are_refused(two_signature_model,
                                                                  tmp_path):
    examples = tmp_path / "eval.npz"
    np.savez(examples, pixels=np.zeros((4, 16)))
    with pytest.raises(ServoptError, match=r"holds no inputs \['features'\]"):
        push_model(two_signature_model, tmp_path / "serving", warmup_examples=examples)
    assert not (tmp_path / "serving").exists() or versions(tmp_path / "serving") == []


def test_a_filesystem_url_is_pushed_through_gfile(two_signature_model):
    base = "ram://serving-test/digits"
    first = push_model(two_signature_model, base, clock=lambda: 1000)
    second = push_model(two_signature_model, base, clock=lambda: 1000, keep_last=1)
    assert (first.version, second.version) == (1000, 1001)
    assert second.removed_versions == [1000]
    assert tf.io.gfile.exists(f"{base}/1001/saved_model.pb")
    assert tf.io.gfile.exists(f"{base}/1001/variables/variables.index")
    assert not tf.io.gfile.exists(f"{base}/1000")
