"""Finding SavedModels in every layout a TFX user meets, and clear errors when there is none."""

from __future__ import annotations

import shutil

import pytest

from components.core.errors import ServoptError
from components.core.model_io import staged_output
from components.core.model_paths import resolve_saved_model_dir
from components.core.serving_session import ServingSession


def test_a_saved_model_directory_resolves_to_itself(two_signature_model):
    assert resolve_saved_model_dir(two_signature_model) == two_signature_model


def test_a_tfx_model_artifact_resolves_to_format_serving(two_signature_model, tmp_path):
    shutil.copytree(two_signature_model, tmp_path / "Format-Serving")
    assert resolve_saved_model_dir(tmp_path) == tmp_path / "Format-Serving"


def test_the_legacy_estimator_layout_resolves_to_the_latest_timestamp(two_signature_model,
                                                                      tmp_path):
    export = tmp_path / "Format-Serving" / "export" / "chicago-taxi"
    for stamp in ("1600000000", "1700000000"):
        shutil.copytree(two_signature_model, export / stamp)
    assert resolve_saved_model_dir(tmp_path) == export / "1700000000"


def test_a_tf_serving_base_directory_resolves_to_its_highest_version(two_signature_model,
                                                                     tmp_path):
    for version in ("2", "10"):
        shutil.copytree(two_signature_model, tmp_path / version)
    (tmp_path / "11").mkdir()  # an incomplete version (no saved_model.pb) is not served
    assert resolve_saved_model_dir(tmp_path) == tmp_path / "10"


def test_a_missing_path_names_the_path(tmp_path):
    with pytest.raises(ServoptError, match="nope: no such file or directory"):
        resolve_saved_model_dir(tmp_path / "nope")


def test_a_directory_without_a_model_says_what_is_expected(tmp_path):
    with pytest.raises(ServoptError, match="no SavedModel found.*Format-Serving"):
        resolve_saved_model_dir(tmp_path)


def test_a_corrupted_saved_model_pb_names_the_file(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\x00\xffnot a protobuf" * 10)
    with pytest.raises(ServoptError, match=r"saved_model\.pb: not a valid SavedModel"):
        ServingSession(tmp_path)


def test_staged_output_refuses_an_existing_target(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(ServoptError, match="already exists"), staged_output(tmp_path / "out"):
        pass


def test_staged_output_leaves_nothing_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError), staged_output(tmp_path / "out") as staging:
        (staging / "saved_model.pb").write_bytes(b"partial")
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_staged_output_publishes_on_success(tmp_path):
    with staged_output(tmp_path / "out") as staging:
        (staging / "saved_model.pb").write_bytes(b"complete")
    assert (tmp_path / "out" / "saved_model.pb").read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
