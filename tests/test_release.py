"""Releasing pushed versions through TF Serving's model config: stable/canary labels,
promotion, rollback, retention, and the faults around them.

Each rule is TF Serving's, cited from its source (github.com/tensorflow/serving). The
tensorflow_model_server binary cannot run here, so `ServerCoreModel` below re-implements
the parts of ServerCore::ReloadConfig these rules come from (model_servers/server_core.cc
~476-614, model_servers/server.cc PollFilesystemAndReloadConfig ~165-180), and the
`--server` polling is tested against a local HTTP server that answers like TF Serving's
model status API (a stand-in, said so where used). Everything else is real: real config
files parsed with TF Serving's own protos, real version directories, a real SavedModel
for the CLI push, a real benchmark for the promotion check, a real MLMD database.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components.cli import main
from components.core.errors import ServoptError
from components.core.gate import Thresholds
from components.core.gate import release as rel
from components.core.gate.release import ReleaseConfig
from components.core.gate.release_plan import ModelState, plan_retention
from tests.test_pusher_gate_executor import run_gate  # noqa: F401 - a fixture used below

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LABELS = ReleaseConfig(mode="labels")


def servopt(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def make_versions(dest: Path, *numbers: int) -> None:
    for number in numbers:
        (dest / str(number)).mkdir(parents=True)
        (dest / str(number) / "saved_model.pb").write_bytes(b"")


def parse(path: Path):
    message = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(path.read_text(), message)
    return message


def entry(path: Path, name: str = "mnist"):
    return next(c for c in parse(path).model_config_list.config if c.name == name)


def served(path: Path, name: str = "mnist") -> list[int]:
    return sorted(entry(path, name).model_version_policy.specific.versions)


def labels(path: Path, name: str = "mnist") -> dict[str, int]:
    return dict(entry(path, name).version_labels)


class ServerCoreModel:
    """What ServerCore does with a config file, for the rules below (the binary cannot
    run here). Per reload: a file that does not parse is logged and the old config kept
    (server.cc ~165-180); each label must point at a version loaded *before* this
    reload, else the whole reload is refused (server_core.cc ~514 before ~524, and
    ~574-584); then the versions the policy names that exist on disk are loaded and the
    others unloaded (file_system_storage_path_source.cc AspireSpecificVersions ~215-245);
    a request without a version gets the highest loaded one (server_core.cc ~864-867)."""

    def __init__(self, path: Path, allow_version_labels_for_unavailable_models=False):
        self.path = path
        self.allow_unavailable = allow_version_labels_for_unavailable_models
        self.loaded: dict[str, set[int]] = {}
        self.labels: dict[str, dict[str, int]] = {}
        self.refusals: list[str] = []

    def reload(self) -> bool:
        try:
            config = parse(self.path)
        except text_format.ParseError as err:
            self.refusals.append(f"parse: {err}")
            return False
        for model in config.model_config_list.config:
            for label, version in model.version_labels.items():
                # ~559-572: the flag admits a label unless it exists on another version
                existing = self.labels.get(model.name, {}).get(label, version)
                if self.allow_unavailable and existing == version:
                    continue
                if version not in self.loaded.get(model.name, set()):
                    self.refusals.append(f"label {label} -> {version} not available")
                    return False
        self.loaded, self.labels = {}, {}
        for model in config.model_config_list.config:
            disk = {int(n) for n in os.listdir(model.base_path) if n.isdigit()}
            policy = model.model_version_policy
            kind = policy.WhichOneof("policy_choice") or "latest"
            if kind == "specific":
                self.loaded[model.name] = disk & set(policy.specific.versions)
            elif kind == "all":
                self.loaded[model.name] = disk
            else:
                self.loaded[model.name] = set(sorted(disk)[-(policy.latest.num_versions or 1):])
            self.labels[model.name] = dict(model.version_labels)
        return True

    def answer(self, model: str, label: str | None = None) -> int:
        if label is None:
            return max(self.loaded[model])
        return self.labels[model][label]


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "serving" / "mnist").mkdir(parents=True)
    return tmp_path / "serving"


def push_version(dest: Path, version: int, server=None):
    make_versions(dest, version)
    return rel.release_push(dest, version, LABELS, server=server)


# ------------------------------------------------------------------------ the two steps

def test_a_label_is_moved_only_onto_a_version_already_loaded_so_a_push_takes_two_steps(
        root):
    """server_core.cc UpdateModelVersionLabelMap ~574-584: 'Request to assign label to
    version N ... which is not currently available' refuses the whole reload; labels
    are checked (~514) before the new config's versions are added (~524).
    g3doc/serving_config.md ~188-210: serve both versions, then move the label."""
    dest, config = root / "mnist", root / "models.config"
    server = ServerCoreModel(config)
    first = push_version(dest, 1)
    assert first.steps_written == 1 and "servopt label" in first.pending
    assert served(config) == [1] and labels(config) == {}
    assert server.reload()
    rel.label(dest, LABELS)
    assert labels(config) == {"stable": 1, "canary": 1}
    assert server.reload() and server.answer("mnist", "stable") == 1

    push_version(dest, 2)
    assert served(config) == [1, 2] and labels(config) == {"stable": 1, "canary": 1}
    assert server.reload()
    rel.label(dest, LABELS)
    assert labels(config) == {"stable": 1, "canary": 2}
    assert server.reload() and server.refusals == []
    assert server.answer("mnist", "stable") == 1 and server.answer("mnist", "canary") == 2


def test_the_one_step_alternative_is_what_tf_serving_refuses(root):
    """The model of ServerCore refuses a label on a version it has not loaded yet, so the
    tests that pass through it would fail for a one-step release."""
    dest, config = root / "mnist", root / "models.config"
    make_versions(dest, 1)
    config.write_text(f"model_config_list {{ config {{ name: 'mnist' base_path: '{dest}' "
                      "model_platform: 'tensorflow' model_version_policy { specific { "
                      "versions: 1 } } version_labels { key: 'stable' value: 1 } } }")
    server = ServerCoreModel(config)
    assert not server.reload()
    assert server.refusals == ["label stable -> 1 not available"]


def test_a_restarted_server_needs_the_flag_the_printed_command_sets(root):
    """At start ServerCore::Create reloads the config (server_core.cc ~287), checking
    labels (~514) before loading any version (~524): a labelled config is refused unless
    --allow_version_labels_for_unavailable_models, which admits new labels only (~559-572:
    moving an existing label onto an unloaded version stays refused)."""
    dest, config = released(root, 1, 2), root / "models.config"
    assert not ServerCoreModel(config).reload()
    restarted = ServerCoreModel(config, allow_version_labels_for_unavailable_models=True)
    assert restarted.reload() and restarted.answer("mnist", "canary") == 2
    make_versions(dest, 3)
    config.write_text(config.read_text().replace("versions: 2", "versions: 2\n versions: 3")
                      .replace("value: 2", "value: 3"))
    assert not restarted.reload()  # canary moved onto 3 before 3 was loaded


def test_every_config_a_release_writes_is_accepted_by_the_server(root):
    """A whole release history, the server reloading after every write: no refusal, and
    clients of each label always get an answer."""
    dest, config = root / "mnist", root / "models.config"
    server = ServerCoreModel(config)
    steps = [lambda: push_version(dest, 1), lambda: rel.label(dest, LABELS),
             lambda: push_version(dest, 2), lambda: rel.label(dest, LABELS),
             lambda: rel.promote(dest, LABELS), lambda: push_version(dest, 3),
             lambda: push_version(dest, 4), lambda: rel.label(dest, LABELS),
             lambda: rel.rollback(dest, LABELS, canary_only=True),
             lambda: push_version(dest, 5), lambda: rel.label(dest, LABELS),
             lambda: rel.promote(dest, LABELS), lambda: rel.rollback(dest, LABELS)]
    for step in steps:
        step()
        assert server.reload(), server.refusals
    assert server.answer("mnist", "stable") == 2  # 5 promoted over 2, then rolled back
    assert server.answer("mnist") == 2  # nothing above stable is left loaded


def test_a_push_with_a_server_moves_the_label_once_the_server_reports_it_available(root):
    """The label move waits for GET /v1/models/NAME to report the version AVAILABLE
    (g3doc/api_rest.md "Model status API"; apis/get_model_status.proto State AVAILABLE).
    The server is a local HTTP stand-in that answers like tensorflow_model_server."""
    dest = root / "mnist"
    polls = {"n": 0}

    class Status(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            polls["n"] += 1
            state = "AVAILABLE" if polls["n"] >= 3 else "LOADING"
            body = json.dumps({"model_version_status": [
                {"version": "1", "state": state, "status": {"error_code": "OK"}}]})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Status)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        status = rel.RestServerStatus(f"127.0.0.1:{httpd.server_port}")
        assert status.version_states("mnist") == {1: "LOADING"}
        make_versions(dest, 1)
        result = rel.release_push(dest, 1, LABELS, server=status, poll_s=0.01)
    finally:
        httpd.shutdown()
    assert polls["n"] >= 3 and result.steps_written == 2 and result.pending == ""
    assert labels(root / "models.config") == {"stable": 1, "canary": 1}


def test_without_the_server_reporting_it_loaded_the_label_does_not_move(root):
    dest = root / "mnist"

    class Never:
        def version_states(self, name):
            return {1: "LOADING"}

    make_versions(dest, 1)
    result = rel.release_push(dest, 1, LABELS, server=Never(), wait_s=0.05, poll_s=0.01)
    assert result.steps_written == 1 and "did not report version 1 AVAILABLE" in result.pending
    assert labels(root / "models.config") == {}
    with pytest.raises(ServoptError, match="LOADING on the server, not AVAILABLE"):
        rel.label(dest, LABELS, server=Never())


# ------------------------------------------------------------------ promote and rollback

def released(root: Path, *versions: int) -> Path:
    """`versions` pushed and labelled one after another (the last is the canary)."""
    dest = root / "mnist"
    for version in versions:
        push_version(dest, version)
        rel.label(dest, LABELS)
    return dest


def test_promote_puts_stable_on_the_canary_and_keeps_the_old_stable_served(root):
    """g3doc/serving_config.md ~163-186: promoting 43 over 42 gives stable and canary
    both 43 while 42 stays served, so that a rollback is a label move."""
    dest = released(root, 42, 43)
    result = rel.promote(dest, LABELS)
    config = root / "models.config"
    assert (result.labels_before, result.labels_after) == (
        {"stable": 42, "canary": 43}, {"stable": 43, "canary": 43})
    assert served(config) == [42, 43]


def test_promote_without_a_canary_is_refused(root):
    dest = released(root, 1)
    with pytest.raises(ServoptError, match="no canary to promote"):
        rel.promote(dest, LABELS)


def test_rollback_puts_stable_back_and_unloads_what_it_leaves_without_deleting_it(root):
    """A request without a version gets the highest loaded version (server_core.cc
    ServableRequestFromModelSpec ~864-867): the versions rolled back from are unloaded,
    or unlabelled clients would keep getting them. They stay on disk."""
    dest = released(root, 1, 2)
    rel.promote(dest, LABELS)
    push_version(dest, 3)
    rel.label(dest, LABELS)
    result = rel.rollback(dest, LABELS)
    config = root / "models.config"
    assert result.labels_after == {"stable": 1, "canary": 1}
    assert served(config) == [1]
    assert all((dest / str(v)).is_dir() for v in (1, 2, 3))


def test_rollback_of_the_canary_only_keeps_stable(root):
    dest = released(root, 1, 2)
    result = rel.rollback(dest, LABELS, canary_only=True)
    assert result.labels_after == {"stable": 1, "canary": 1}
    assert served(root / "models.config") == [1]


def test_rollback_without_a_previous_stable_served_is_refused(root):
    dest = released(root, 1)
    with pytest.raises(ServoptError, match="no previous stable version served"):
        rel.rollback(dest, LABELS)


def test_a_label_on_a_version_not_on_disk_or_not_served_is_refused_before_any_change(root):
    """server_core.cc ~574-584 would refuse the whole reload."""
    dest = released(root, 1, 2)
    config = root / "models.config"
    text = config.read_text()
    config.write_text(text.replace("value: 2", "value: 7"))
    before = config.read_bytes()
    with pytest.raises(ServoptError, match="version 7, which is not in"):
        rel.promote(dest, LABELS)
    config.write_text(text.replace("versions: 2", ""))  # canary 2 not served
    with pytest.raises(ServoptError, match="which the version policy does not serve"):
        rel.promote(dest, LABELS)
    config.write_text(before.decode())
    assert config.read_bytes() == before


def test_the_cli_refuses_a_label_pointing_nowhere_in_one_line(root):
    dest = released(root, 1, 2)
    config = root / "models.config"
    config.write_text(config.read_text().replace("value: 2", "value: 7"))
    for command in ("promote", "rollback", "label", "prune"):
        result = servopt(command, dest, *(["--no-check"] if command == "promote" else []))
        assert result.exit_code == 2, (command, result.output)
        assert result.output.count("\n") == 1 and "Traceback" not in result.output
        assert f"{config}: label 'canary'" in result.output, result.output


def test_label_names_are_word_characters_only(root):
    """g3doc/serving_config.md ~223-224: labels are [a-zA-Z0-9_]+ (the REST path
    /labels/LABEL, http_rest_api_util.cc ~32)."""
    with pytest.raises(ServoptError, match="not one TF Serving accepts"):
        ReleaseConfig(mode="labels", canary_label="canary-1")
    dest = released(root, 1)
    config = root / "models.config"
    config.write_text(config.read_text().replace('key: "canary"', 'key: "can ary"'))
    with pytest.raises(ServoptError, match="'can ary' is not one TF Serving accepts"):
        rel.label(dest, LABELS)


def test_a_release_keeps_the_other_models_and_settings_of_the_file(root):
    """A reload replaces the whole model list: a model left out is unloaded
    (server_core.cc ~430-433). The release rewrites only its own model's policy/labels."""
    config = root / "models.config"
    other = root / "other"
    make_versions(other, 5)
    config.write_text(f"model_config_list {{ config {{ name: 'other' base_path: '{other}' "
                      "model_platform: 'tensorflow' logging_config { sampling_config { "
                      "sampling_rate: 0.5 } } } }")
    released(root, 1, 2)
    kept = entry(config, "other")
    assert kept.base_path == str(other)
    assert kept.logging_config.sampling_config.sampling_rate == 0.5
    assert kept.model_version_policy.WhichOneof("policy_choice") is None
    assert entry(config).base_path == str((root / "mnist").resolve())


def test_base_paths_written_are_absolute(root, monkeypatch):
    """server_core.cc ValidateModelConfigList ~140-150: without a root dir every
    base_path must be absolute."""
    monkeypatch.chdir(root)
    make_versions(root / "mnist", 1)
    rel.release_push(Path("mnist"), 1, LABELS)
    assert os.path.isabs(entry(root / "models.config").base_path)


# --------------------------------------------------------------------------- retention

def test_retention_never_removes_a_labelled_specific_or_newer_than_stable_version(root):
    state = ModelState("m", "/m", "specific", 1, (3, 4, 6), {"stable": 4, "canary": 6,
                                                            "pinned": 2})
    assert plan_retention(state, [1, 2, 3, 4, 5, 6, 7], "stable") == [1]
    assert plan_retention(state, [1, 2, 3, 4, 5, 6, 7], "stable", keep_last=7) == []


def test_retention_never_removes_the_only_loaded_version():
    """Without a config entry TF Serving serves the highest version (latest{1})."""
    assert plan_retention(None, [1, 2, 3], "stable") == [1, 2]
    nothing_served = ModelState("m", "/m", "specific", 1, (9,), {})
    assert plan_retention(nothing_served, [1, 2, 3], "stable") == [1, 2]


def test_prune_dry_run_lists_and_prune_removes_only_unprotected_versions(root):
    dest = released(root, 1, 2, 3)
    rel.promote(dest, LABELS)  # served: 1 (previous), 3 (stable, canary); 2 was superseded
    make_versions(dest, 9)  # pushed, not yet in the config: newer than stable
    assert served(root / "models.config") == [1, 3]
    dry = rel.prune(dest, LABELS, dry_run=True)
    assert dry.removed_versions == [2] and (dest / "2").is_dir()
    assert rel.prune(dest, LABELS).removed_versions == [2]
    assert sorted(int(n) for n in os.listdir(dest) if n.isdigit()) == [1, 3, 9]


def test_push_keep_last_in_labels_mode_never_removes_a_served_version(root, two_signature_model):
    dest = root / "mnist"
    for _ in range(3):
        result = servopt("push", two_signature_model, dest, "--release", "labels")
        assert result.exit_code == 0, result.output
        assert servopt("label", dest).exit_code == 0
    first, superseded, third = sorted(int(n) for n in os.listdir(dest) if n.isdigit())
    assert servopt("promote", dest, "--no-check").exit_code == 0  # stable: third
    result = servopt("push", two_signature_model, dest, "--release", "labels",
                     "--keep-last", "1")
    assert result.exit_code == 0, result.output
    on_disk = sorted(int(n) for n in os.listdir(dest) if n.isdigit())
    # kept: the previous stable (served), stable, the new version; removed: the canary
    # that `third` superseded, which nothing keeps
    assert on_disk[:2] == [first, third] and len(on_disk) == 3
    assert superseded not in on_disk and set(served(root / "models.config")) <= set(on_disk)


# ---------------------------------------------------------------------- bad input, faults

def test_a_hand_edited_config_that_does_not_parse_stops_the_push_before_the_version(
        root, two_signature_model):
    """server.cc ~165-180: a file that fails to parse is only logged; the old config keeps
    serving. The push refuses it in one line and publishes nothing."""
    config = root / "models.config"
    config.write_text("model_config_list { config { name: 'mnist' ")
    result = servopt("push", two_signature_model, root / "mnist", "--release", "labels")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert str(config) in result.output and "nothing was changed" in result.output
    assert os.listdir(root / "mnist") == []
    assert config.read_text() == "model_config_list { config { name: 'mnist' "


def test_a_custom_model_config_or_a_model_listed_twice_is_refused(root):
    """server_core.cc ReloadConfig ~480-496 (only model_config_list to model_config_list)
    and ValidateModelConfigList ~117-128 (a model name once)."""
    config = root / "models.config"
    make_versions(root / "mnist", 1)
    config.write_text("custom_model_config { }")
    with pytest.raises(ServoptError, match="custom_model_config"):
        rel.release_push(root / "mnist", 1, LABELS)
    config.write_text("model_config_list { config { name: 'a' base_path: '/a' } "
                      "config { name: 'a' base_path: '/b' } }")
    with pytest.raises(ServoptError, match="lists model 'a' twice"):
        rel.release_push(root / "mnist", 1, LABELS)


def test_two_releases_at_once_lose_no_update_of_the_shared_config(root):
    """Every model of the serving root shares models.config: each change reads, changes
    and replaces it under one lock, so concurrent releases of two models keep both."""
    dests = [root / "a", root / "b"]
    errors: list[BaseException] = []

    def release(dest: Path, base: int) -> None:
        try:
            for i in range(6):
                make_versions(dest, base + i)
                rel.release_push(dest, base + i, LABELS)
                rel.label(dest, LABELS)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=release, args=(d, 10 * (n + 1)))
               for n, d in enumerate(dests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    config = root / "models.config"
    assert labels(config, "a") == {"stable": 10, "canary": 15}
    assert labels(config, "b") == {"stable": 20, "canary": 25}


def test_a_push_killed_between_the_version_and_the_config_leaves_a_served_state(
        root, monkeypatch):
    """The version directory is published first; a push killed before the config is
    replaced leaves the old config, which TF Serving keeps serving (under specific{} the
    new version is not loaded: AspireSpecificVersions ~215-245). The next push goes on,
    and retention keeps the orphan (newer than stable)."""
    dest, config = released(root, 1), root / "models.config"
    server = ServerCoreModel(config, allow_version_labels_for_unavailable_models=True)
    assert server.reload()
    before = config.read_bytes()
    make_versions(dest, 2)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rel.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        rel.release_push(dest, 2, LABELS)
    monkeypatch.undo()
    assert config.read_bytes() == before
    assert [n for n in os.listdir(root) if n.startswith(".models.config.")] == []
    assert server.reload() and server.answer("mnist") == 1
    assert plan_retention(rel._state(entry(config), dest), [1, 2], "stable") == []
    push_version(dest, 3)
    assert server.reload()  # step 1 loaded before the label moves
    rel.label(dest, LABELS)
    assert server.reload() and labels(config) == {"stable": 1, "canary": 3}
    assert (dest / "2").is_dir()


# ------------------------------------------------------------------ the CLI and its config

def test_servopt_push_release_labels_prints_the_model_config_server_command(
        root, two_signature_model):
    result = servopt("push", two_signature_model, root / "mnist", "--release", "labels")
    assert result.exit_code == 0, result.output
    text = "".join(result.output.split())  # long paths wrap at 80 columns
    config = (root / "models.config").resolve()
    assert f"--model_config_file={config}" in text
    assert "--model_config_file_poll_wait_seconds=60" in text
    assert "--model_base_path" not in text and "servoptlabel" in text
    assert "/labels/LABEL:predict" in text


def test_promote_and_rollback_are_recorded_in_ml_metadata(root, tmp_path):
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2

    dest = released(root, 1, 2)
    store_path = tmp_path / "mlmd.sqlite"
    result = servopt("promote", dest, "--no-check", "--mlmd", store_path)
    assert result.exit_code == 0, result.output
    assert servopt("rollback", dest, "--mlmd", store_path).exit_code == 0
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(store_path)
    executions = mlmd.MetadataStore(config).get_executions_by_type("ServoptRelease")
    props = [{k: v.string_value or v.int_value for k, v in e.custom_properties.items()}
             for e in executions]
    assert [p["operation"] for p in props] == ["promote", "rollback"]
    assert (props[0]["stable_before"], props[0]["stable_after"]) == (1, 2)
    assert (props[1]["stable_before"], props[1]["stable_after"]) == (2, 1)
    assert json.loads(props[1]["labels_after"]) == {"canary": 1, "stable": 1}


def test_promote_runs_the_check_on_stable_and_canary_and_a_refusal_changes_nothing(root):
    dest = released(root, 1, 2)
    config = root / "models.config"
    before = config.read_bytes()
    seen = []

    def blocked(stable, canary):
        seen.append((stable, canary))
        raise ServoptError("blocked by the gate")

    with pytest.raises(ServoptError, match="blocked by the gate"):
        rel.promote(dest, LABELS, check=blocked)
    assert seen == [(1, 2)] and config.read_bytes() == before


def test_a_promotion_is_refused_when_the_labels_moved_while_it_was_checked(root):
    dest = released(root, 1, 2)

    def meanwhile(stable, canary):  # another release moves the canary during the check
        push_version(dest, 3)
        rel.label(dest, LABELS)

    with pytest.raises(ServoptError, match="moved while the promotion was checked"):
        rel.promote(dest, LABELS, check=meanwhile)
    assert labels(root / "models.config") == {"stable": 1, "canary": 3}


@pytest.mark.e2e  # benchmark worker processes: about two minutes on two shared cores
def test_a_promotion_the_gate_blocks_exits_4_and_changes_nothing(root, two_signature_model,
                                                                 tmp_path):
    """The canary and the stable version are benchmarked in one run (real measurement)
    and the gate's thresholds judge the canary against the stable version."""
    dest = root / "mnist"
    for _ in range(2):
        assert servopt("push", two_signature_model, dest, "--release", "labels"
                       ).exit_code == 0
        assert servopt("label", dest).exit_code == 0
    before = (root / "models.config").read_bytes()
    thresholds = tmp_path / "t.yaml"
    thresholds.write_text("primary_batch_size: 1\nvalue: {max_size_mb: 0.000001}\n"
                          "vs_baseline: {min_speedup_p50: null}\n")
    bench = tmp_path / "b.yaml"
    bench.write_text("batch_sizes: [1]\nconcurrency: []\nwarmup_requests: 2\n"
                     "window_requests: 5\nwindow_seconds: null\nmax_windows: 6\n"
                     "decision_budget_s: 0\n")
    result = servopt("promote", dest, "--thresholds", thresholds,
                     "--benchmark-config", bench)
    assert result.exit_code == 4, result.output
    assert "max_size_mb" in result.output
    assert (root / "models.config").read_bytes() == before


def test_the_release_section_of_the_gate_config(tmp_path):
    assert Thresholds().release == ReleaseConfig()
    assert Thresholds.from_yaml(CONFIGS / "thresholds.yaml").release.mode == "latest"
    parsed = Thresholds.from_dict({"release": {"mode": "labels", "stable_label": "prod"}})
    assert parsed.release == ReleaseConfig(mode="labels", stable_label="prod")
    assert Thresholds.from_dict(parsed.to_dict()) == parsed
    with pytest.raises(ServoptError, match=r"t\.yaml: unknown key 'release.mdoe'"):
        Thresholds.from_dict({"release": {"mdoe": "labels"}}, "t.yaml")
    with pytest.raises(ServoptError, match="'release.mode' must be one of latest, labels"):
        Thresholds.from_dict({"release": {"mode": "canary"}}, "t.yaml")


def test_the_server_command_reads_the_model_config_and_polls_it(tmp_path):
    """main.cc: --model_config_file replaces --model_name/--model_base_path;
    --model_config_file_poll_wait_seconds re-reads it (server.cc ~337-348);
    --allow_version_labels_for_unavailable_models lets a restarted server accept the
    labels it reads before loading anything (server_core.cc ~559-572, new labels only)."""
    command = rel.server_command(["tensorflow_model_server", "--port=8500",
                                  "--model_name=m", "--model_base_path=/s/m",
                                  "--enable_batching=true"], tmp_path / "models.config",
                                 LABELS)
    assert command == ["tensorflow_model_server", "--port=8500",
                       f"--model_config_file={tmp_path / 'models.config'}",
                       "--model_config_file_poll_wait_seconds=60",
                       "--allow_version_labels_for_unavailable_models=true",
                       "--enable_batching=true"]


# ----------------------------------------------------------------- TFX and KFP adapters


def test_pusher_gate_releases_with_labels_when_the_gate_config_says_so(run_gate):  # noqa: F811
    thresholds = {"vs_baseline": {"min_speedup_p50": 1.5}, "release": {"mode": "labels"}}
    pushed, _, decision, destination = run_gate(thresholds)
    first = int(pushed.get_string_custom_property("pushed_version"))
    config = destination.parent / "models.config"
    assert served(config, "digits") == [first] and labels(config, "digits") == {}
    assert "servopt label" in pushed.get_string_custom_property("release_pending")
    assert pushed.get_string_custom_property("release_operation") == "push"
    assert any(w.startswith("--model_config_file=") for w in decision["server_command"])
    assert not any(w.startswith("--model_base_path=") for w in decision["server_command"])
    rel.label(destination, LABELS)
    pushed, _, _, _ = run_gate(thresholds, keep_last=1)
    second = int(pushed.get_string_custom_property("pushed_version"))
    assert served(config, "digits") == [first, second]
    assert pushed.get_int_custom_property("release_stable_after") == first


def test_the_kfp_release_step_promotes_and_rolls_back(root, tmp_path):
    from kfp import dsl

    from components.kfp import steps

    dest = released(root, 1, 2)
    thresholds = Thresholds(release=LABELS).to_dict()

    def run(operation: str):
        out = dsl.Artifact(uri=str(tmp_path / operation), name="released", metadata={})
        outputs = steps.release.python_func(
            push_destination=str(dest), operation=operation, thresholds=thresholds,
            model_config="", check_promotion=False, eval_examples_uri="", released=out)
        return outputs, out

    (stable, canary), out = run("promote")
    assert (stable, canary) == (2, 2)
    assert out.metadata["release_stable_before"] == 1
    assert json.loads((tmp_path / "promote" / "release.json").read_text())[
        "labels_after"] == {"stable": 2, "canary": 2}
    assert run("rollback")[0] == (1, 1)
    with pytest.raises(ServoptError, match="use label, promote, rollback"):
        run("advance")


def test_the_tfx_model_release_component_promotes_and_records_the_labels(root, tmp_path):
    from tfx.types import standard_artifacts

    from components.model_release import ModelRelease
    from components.model_release import executor as release_executor

    dest = released(root, 1, 2)
    thresholds = Thresholds(release=LABELS).to_dict()
    with pytest.raises(ServoptError, match="use one of label, promote"):
        ModelRelease(push_destination=str(dest), operation="advance", thresholds=thresholds)
    component = ModelRelease(push_destination=str(dest), operation="promote",
                             thresholds=thresholds, check_promotion=False)
    out = standard_artifacts.PushedModel()
    out.uri = str(tmp_path / "release")
    Path(out.uri).mkdir()
    release_executor.Executor().Do({}, {"release": [out]}, component.exec_properties)
    assert out.get_int_custom_property("release_stable_before") == 1
    assert out.get_int_custom_property("release_stable_after") == 2
    assert not out.has_custom_property("pushed")  # not a push: the resolver ignores it
    assert json.loads((tmp_path / "release" / "release.json").read_text())["operation"] == (
        "promote")
    assert labels(root / "models.config") == {"stable": 2, "canary": 2}


def test_push_release_labels_json_holds_the_push_and_the_release(root, two_signature_model):
    result = servopt("push", two_signature_model, root / "mnist", "--release", "labels",
                     "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["operation"] == "push" and data["steps_written"] == 1
    assert data["served_after"] == [data["pushed"]["version"]]
    assert data["pushed"]["path"] == str(root / "mnist" / str(data["pushed"]["version"]))


def test_the_kfp_push_step_follows_the_gate_configs_release_section(root, tmp_path,
                                                                    two_signature_model):
    """The push step reads release: from the thresholds the gate recorded in its
    decision.json (one source). The gate's other steps are not run: the decision is
    hand-built and the baseline is pushed."""
    from kfp import dsl

    from components.core.gate.decision import GateDecision
    from components.core.identity import MODEL_OUTPUTS, PRODUCED_PROPERTY
    from components.kfp import steps

    decision_dir = tmp_path / "decision"
    decision_dir.mkdir()
    decision = GateDecision(True, "trainer", str(two_signature_model), "test", 1, ["p99_ms"],
                            True, [], [], thresholds=Thresholds(release=LABELS).to_dict())
    (decision_dir / "decision.json").write_text(json.dumps(decision.to_dict()))
    models = {name: dsl.Model(uri=str(tmp_path / name), name=name,
                              metadata={PRODUCED_PROPERTY: 0})  # variants not produced
              for name in MODEL_OUTPUTS}
    pushed = dsl.Artifact(uri=str(tmp_path / "pushed"), name="pushed", metadata={})
    version, path = steps.push.python_func(
        chosen="trainer", model_uri=str(two_signature_model), **models,
        push_destination=str(root / "mnist"), eval_examples_uri="", keep_last=0,
        decision=dsl.Artifact(uri=str(decision_dir), name="decision", metadata={}),
        pushed=pushed)
    assert served(root / "models.config") == [version]
    assert pushed.metadata["release_operation"] == "push"
    assert "servopt label" in pushed.metadata["release_pending"]
