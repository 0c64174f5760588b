"""Release pushed versions the way TF Serving teams do: a model config with `stable` and
`canary` labels, promotion, rollback, retention that never removes what is served.

TF Serving serves, by default, the highest version of a model base path: every push takes
all the traffic at once. With `--model_config_file` it serves what a text-format
`ModelServerConfig` says instead (model_servers/server.cc ~212-218), re-read every
`--model_config_file_poll_wait_seconds` (server.cc ~337-348). This module keeps that file:

- `release_push`: after push.py published version N, step 1 serves N beside the served
  versions (labels unchanged), step 2 moves the label onto N once TF Serving has loaded it
  (server_core.cc UpdateModelVersionLabelMap ~549-585 refuses a label on a version that is
  not available, and then refuses the whole reload). With a server (`ServerStatus`) step
  2 follows as soon as the server reports N AVAILABLE; without one, step 2 is left to the
  operator: `servopt label DEST` once the server reports it loaded.
- `label`, `promote`, `rollback`: one config each (release_plan.py says which).
- `prune`: removes versions no label, no `specific` entry and no newer-than-stable rule
  keeps (release_plan.plan_retention); a dry run lists them.

Every change happens under a lock beside the config file (one file serves every model of
the serving root), reads the file, checks it, and replaces it atomically (a temporary
file in the same directory, fsync, rename): TF Serving's poll reads either the old file or
the new one; a file that does not parse would only be logged and the old config kept
(server.cc PollFilesystemAndReloadConfig ~165-180), so this module never writes one.
Other models and settings in the file are kept as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol

from components.core.errors import ServoptError
from components.core.gate.release_plan import (
    ModelState,
    Plan,
    check_label_name,
    check_state,
    plan_label,
    plan_promote,
    plan_push,
    plan_retention,
    plan_rollback,
)

RELEASE_MODES = ("latest", "labels")
CONFIG_FILE = "models.config"  # default: in the serving root, DEST's parent directory
CONFIG_LOCK = ".servopt-release.lock"
# Flags the printed server command sets in labels mode. --model_config_file replaces
# --model_name/--model_base_path (main.cc: "If used, --model_name, --model_base_path are
# ignored"). --allow_version_labels_for_unavailable_models: at start the labels are
# checked before any version is loaded (ServerCore::Create -> ReloadConfig ~287, labels
# ~514 before models ~524), so without it a restarted server refuses a labelled config;
# it admits new labels only, never a move of an existing one (server_core.cc ~559-572).
UNAVAILABLE_LABELS_FLAG = "--allow_version_labels_for_unavailable_models=true"


@dataclass(frozen=True)
class ReleaseConfig:
    """The gate config's `release:` section (one source: these defaults)."""

    mode: str = "latest"  # latest: TF Serving serves the highest version (no model config)
    model_config: str | None = None  # None: models.config in DEST's parent directory
    config_poll_wait_seconds: int = 60  # the server's --model_config_file_poll_wait_seconds
    stable_label: str = "stable"
    canary_label: str = "canary"
    check_promotion: bool = True  # promote runs the gate's checks, canary vs stable

    def __post_init__(self) -> None:
        self.validate("release")

    def validate(self, source: str) -> None:
        if self.mode not in RELEASE_MODES:
            raise ServoptError(f"{source}: 'release.mode' must be one of "
                               f"{', '.join(RELEASE_MODES)}, got {self.mode!r}")
        if self.model_config is not None and (not isinstance(self.model_config, str)
                                              or not self.model_config):
            raise ServoptError(f"{source}: 'release.model_config' must be a path or null, "
                               f"got {self.model_config!r}")
        poll = self.config_poll_wait_seconds
        if isinstance(poll, bool) or not isinstance(poll, int) or poll < 1:
            raise ServoptError(f"{source}: 'release.config_poll_wait_seconds' must be an "
                               f"integer >= 1 (0 reads the file only once), got {poll!r}")
        for key in ("stable_label", "canary_label"):
            check_label_name(getattr(self, key), f"{source}: 'release.{key}'")
        if self.stable_label == self.canary_label:
            raise ServoptError(f"{source}: 'release.stable_label' and 'canary_label' must "
                               "differ")
        if not isinstance(self.check_promotion, bool):
            raise ServoptError(f"{source}: 'release.check_promotion' must be true or false")

    @classmethod
    def from_dict(cls, data, source: str) -> ReleaseConfig:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ServoptError(f"{source}: 'release' must be a mapping, got "
                               f"{type(data).__name__} {data!r}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ServoptError(f"{source}: unknown key 'release.{key}'; known keys: "
                                   f"{', '.join('release.' + k for k in sorted(known))}")
        config = object.__new__(cls)  # validated below, naming the file
        for key, value in {**asdict(cls()), **data}.items():
            object.__setattr__(config, key, value)
        config.validate(source)
        return config

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReleaseResult:
    """What a release operation did, for printing and for ML Metadata."""

    operation: str  # push | label | promote | rollback | prune
    model_name: str
    model_config: str
    version: int | None
    labels_before: dict[str, int]
    labels_after: dict[str, int]
    served_before: list[int]
    served_after: list[int]
    steps_written: int = 0
    pending: str = ""  # the operator's next step, when one is left
    removed_versions: list[int] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class ServerStatus(Protocol):
    """What a running tensorflow_model_server reports about a model's versions."""

    def version_states(self, model_name: str) -> dict[int, str]: ...


@dataclass(frozen=True)
class RestServerStatus:
    """TF Serving's model status API: GET /v1/models/NAME (g3doc/api_rest.md, "Model
    status API"), a GetModelStatusResponse as JSON: model_version_status[{version, state}],
    state AVAILABLE once loaded (apis/get_model_status.proto ~43)."""

    address: str  # host:port of the REST API (--rest_api_port, 8501 by convention)
    timeout_s: float = 5.0

    def version_states(self, model_name: str) -> dict[int, str]:
        url = f"http://{self.address}/v1/models/{model_name}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return {}  # the model is not loaded (yet)
            raise ServoptError(f"{url}: TF Serving answered HTTP {err.code}") from None
        except (OSError, ValueError) as err:
            raise ServoptError(f"{url}: cannot read the model status ({err}); is "
                               "tensorflow_model_server running with --rest_api_port?"
                               ) from None
        return {int(entry["version"]): str(entry.get("state", ""))
                for entry in body.get("model_version_status", [])}


def wait_until_available(server: ServerStatus, model_name: str, version: int,
                         timeout_s: float, poll_s: float = 1.0,
                         clock: Callable[[], float] = time.monotonic) -> bool:
    """True once the server reports `version` AVAILABLE, False after `timeout_s`."""
    deadline = clock() + timeout_s
    while True:
        if server.version_states(model_name).get(version) == "AVAILABLE":
            return True
        if clock() >= deadline:
            return False
        time.sleep(poll_s)


# ---------------------------------------------------------------- the model config file

def config_path(destination: str | Path, config: ReleaseConfig) -> Path:
    """The model config file: release.model_config, else models.config in DEST's parent
    (the serving root, where every model's base directory is)."""
    if config.model_config:
        return Path(config.model_config)
    return Path(destination).resolve().parent / CONFIG_FILE


def read_config(path: Path):
    """The ModelServerConfig in `path` (empty when the file does not exist)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return message
    except (OSError, UnicodeDecodeError) as err:
        raise ServoptError(f"{path}: cannot read the model config ({err})") from None
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise ServoptError(f"{path}: not a TF Serving ModelServerConfig ({err}); TF Serving "
                           "keeps its previous config while the file does not parse; fix "
                           "or restore the file (nothing was changed)") from None
    if message.HasField("custom_model_config"):
        raise ServoptError(f"{path}: holds a custom_model_config; TF Serving only moves "
                           "from one model_config_list to another (server_core.cc "
                           "ReloadConfig); use a model_config_list")
    names = [m.name for m in message.model_config_list.config]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ServoptError(f"{path}: lists model '{duplicate}' twice; TF Serving refuses "
                           "the config (server_core.cc ValidateModelConfigList); keep one")
    return message


def write_config(path: Path, message) -> None:
    """Replaces `path` atomically: TF Serving's poll reads the old file or the new one."""
    from google.protobuf import text_format

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text_format.MessageToString(message))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # readable by the serving user, as a pushed version
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _entry(message, destination: Path, path: Path):
    """The ModelConfig whose base_path is `destination`, or None; a different model with
    the destination's name is refused (a name is listed once)."""
    base = str(destination.resolve())
    name = destination.resolve().name
    for entry in message.model_config_list.config:
        if entry.base_path.rstrip("/") == base:
            return entry
    for entry in message.model_config_list.config:
        if entry.name == name:
            raise ServoptError(f"{path}: model '{name}' is served from {entry.base_path}, "
                               f"not {base}; give --model-config another file, or rename "
                               "one of the directories")
    return None


def _state(entry, destination: Path) -> ModelState:
    if entry is None:
        resolved = destination.resolve()
        return ModelState(resolved.name, str(resolved))
    policy = entry.model_version_policy
    kind = policy.WhichOneof("policy_choice") or "latest"
    return ModelState(entry.name, entry.base_path, kind,
                      policy.latest.num_versions or 1,
                      tuple(sorted(policy.specific.versions)), dict(entry.version_labels))


def _apply(message, entry, state: ModelState):
    """Writes `state` into the message: this model's policy and labels; everything else
    in the entry (platform, logging config) and the other models stay."""
    if entry is None:
        entry = message.model_config_list.config.add()
        entry.name = state.name
        entry.base_path = state.base_path
        entry.model_platform = "tensorflow"
    entry.model_version_policy.specific.ClearField("versions")
    entry.model_version_policy.specific.versions.extend(state.specific)
    entry.ClearField("version_labels")
    for label, version in sorted(state.labels.items()):
        entry.version_labels[label] = version
    return entry


@contextlib.contextmanager
def config_lock(path: Path) -> Iterator[None]:
    """An exclusive flock beside the config file: one release at a time per serving root
    (every model of the root shares the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / CONFIG_LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        raise ServoptError(f"{lock}: cannot open the release lock ({err.strerror})"
                           ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _on_disk(destination: Path) -> list[int]:
    from components.core.gate.push import versions

    if not destination.is_dir():
        raise ServoptError(f"{destination}: no such model base directory")
    return versions(destination)


def _result(plan: Plan, path: Path, steps: int, pending: str = "") -> ReleaseResult:
    before, after = plan.before, plan.steps[steps - 1] if steps else plan.before
    return ReleaseResult(plan.operation, plan.before.name, str(path), plan.version,
                         dict(before.labels), dict(after.labels), list(before.specific),
                         list(after.specific), steps, pending, note=plan.note)


def _checked_served(server: ServerStatus | None, state: ModelState, version: int,
                    path: Path) -> None:
    """With a server: the version a label moves onto must be AVAILABLE there now."""
    if server is None:
        return
    got = server.version_states(state.name).get(version)
    if got != "AVAILABLE":
        raise ServoptError(f"{path}: version {version} of '{state.name}' is "
                           f"{got or 'not loaded'} on the server, not AVAILABLE; TF Serving "
                           "would refuse the label (server_core.cc UpdateModelVersionLabelMap)"
                           "; wait until it is loaded")


def _read(destination: str | Path, config: ReleaseConfig
          ) -> tuple[ModelState, list[int], Path]:
    """This model's state, its versions on disk and the config's path (checked)."""
    destination = Path(destination)
    path = config_path(destination, config)
    state = _state(_entry(read_config(path), destination, path), destination)
    disk = _on_disk(destination)
    check_state(state, disk, str(path))
    return state, disk, path


def _change(destination: str | Path, config: ReleaseConfig,
            planner: Callable[[ModelState, list[int], Path], Plan],
            server: ServerStatus | None = None) -> tuple[ReleaseResult, Plan]:
    """Reads, plans, checks and writes one config under the lock."""
    destination = Path(destination)
    path = config_path(destination, config)
    with config_lock(path):
        message = read_config(path)
        entry = _entry(message, destination, path)
        state = _state(entry, destination)
        disk = _on_disk(destination)
        check_state(state, disk, str(path))
        plan = planner(state, disk, path)
        if plan.steps:
            after = plan.steps[0]
            for version in set(after.labels.values()) - set(state.labels.values()):
                _checked_served(server, state, version, path)
            check_state(after, disk, str(path))
            _apply(message, entry, after)
            write_config(path, message)
        return _result(plan, path, 1 if plan.steps else 0), plan  # steps[0] written


def check_release(destination: str | Path, config: ReleaseConfig) -> Path:
    """Before a push publishes anything: the model config parses and TF Serving would
    accept this model's entry as it is. Returns the config's path."""
    if "://" in str(destination):
        raise ServoptError(f"{destination}: a labels release keeps a model config file "
                           "beside the versions, with an atomic rename and a lock; use a "
                           "local (or mounted) serving directory, or release: mode: latest")
    destination = Path(destination)
    path = config_path(destination, config)
    message = read_config(path)
    entry = _entry(message, destination, path)
    if destination.is_dir():
        check_state(_state(entry, destination), _on_disk(destination), str(path))
    return path


def label(destination: str | Path, config: ReleaseConfig = ReleaseConfig(), *,
          version: int | None = None, server: ServerStatus | None = None) -> ReleaseResult:
    """Step 2 of a labels push: the labels move onto the version step 1 served. Without
    a server, the caller states that TF Serving has loaded it."""
    result, _ = _change(destination, config, lambda state, disk, path: plan_label(
        state, disk, config.stable_label, config.canary_label, version), server)
    return result


def promote(destination: str | Path, config: ReleaseConfig = ReleaseConfig(), *,
            server: ServerStatus | None = None,
            check: Callable[[int, int], None] | None = None) -> ReleaseResult:
    """The canary becomes stable. `check(stable, canary)` runs first and raises to block
    the promotion (the gate's checks, release_check.py); it runs outside the lock (a
    benchmark takes minutes), and the promotion is refused if the labels moved meanwhile."""
    def plan(state: ModelState, disk: list[int], path: Path) -> Plan:
        return plan_promote(state, disk, config.stable_label, config.canary_label, str(path))

    checked = None
    if check is not None:
        before = plan(*_read(destination, config))
        checked = (before.before.labels[config.stable_label], before.version)
        check(*checked)

    def planner(state: ModelState, disk: list[int], path: Path) -> Plan:
        now = plan(state, disk, path)
        if checked is not None and (now.before.labels[config.stable_label],
                                    now.version) != checked:
            raise ServoptError(f"{path}: the labels of '{state.name}' moved while the "
                               f"promotion was checked (stable/canary were {checked[0]}/"
                               f"{checked[1]}); run promote again")
        return now

    result, _ = _change(destination, config, planner, server)
    return result


def rollback(destination: str | Path, config: ReleaseConfig = ReleaseConfig(), *,
             canary_only: bool = False, server: ServerStatus | None = None) -> ReleaseResult:
    """`stable` back on the previous stable version; the canary withdrawn. No version is
    deleted: the ones left stay on disk (and retention keeps them, newer than stable)."""
    result, _ = _change(destination, config, lambda state, disk, path: plan_rollback(
        state, disk, config.stable_label, config.canary_label, str(path), canary_only),
        server)
    return result


def release_push(destination: str | Path, version: int,
                 config: ReleaseConfig = ReleaseConfig(), *,
                 server: ServerStatus | None = None, wait_s: float = 300.0,
                 poll_s: float = 1.0) -> ReleaseResult:
    """After push.py published `version` under `destination`: step 1 (serve it beside the
    served versions), then, with a server, step 2 once it reports the version AVAILABLE.
    Without a server the result's `pending` names the operator's next step."""
    step1, plan = _change(destination, config, lambda state, disk, path: plan_push(
        state, version, disk, config.stable_label, config.canary_label))
    name = plan.before.name
    if server is None:
        step1.pending = (f"version {version} is served, not labelled yet (step 1 of 2); "
                         f"once TF Serving reports it AVAILABLE (GET /v1/models/{name}), "
                         f"run: servopt label {destination}"
                         + (f" --model-config {step1.model_config}"
                            if config.model_config else ""))
        return step1
    if not wait_until_available(server, name, version, wait_s, poll_s):
        step1.pending = (f"the server did not report version {version} AVAILABLE within "
                         f"{wait_s:g}s; the labels were not moved; once it is, run: servopt "
                         f"label {destination}")
        return step1
    second = label(destination, config, version=version, server=server)
    step1.labels_after, step1.served_after = second.labels_after, second.served_after
    step1.steps_written += second.steps_written
    step1.note = plan.note if second.steps_written else second.note
    return step1


def release_pushed(destination: str | Path, version: int,
                   config: ReleaseConfig = ReleaseConfig(), *, keep_last: int | None = None,
                   server: ServerStatus | None = None, wait_s: float = 300.0
                   ) -> ReleaseResult:
    """What every adapter runs after push.py published `version` in labels mode: the
    model config steps, then retention (keep_last counts only what nothing else keeps)."""
    result = release_push(destination, version, config, server=server, wait_s=wait_s)
    if keep_last:
        result.removed_versions = prune(destination, config,
                                        keep_last=keep_last).removed_versions
    return result


def prune(destination: str | Path, config: ReleaseConfig = ReleaseConfig(), *,
          keep_last: int = 0, dry_run: bool = False) -> ReleaseResult:
    """Removes the versions retention does not keep (release_plan.plan_retention); with
    `dry_run`, only lists them. Each is renamed away first (push.py's way), so TF Serving
    never sees half of one deleted."""
    from components.core.gate.push import DELETING_PREFIX, _locked

    destination = Path(destination)
    path = config_path(destination, config)
    with config_lock(path):
        message = read_config(path)
        entry = _entry(message, destination, path)
        state = _state(entry, destination)
        with _locked(destination):
            disk = _on_disk(destination)
            # A config TF Serving refuses leaves it serving an older one, which this file
            # no longer describes: nothing is removed on its word.
            check_state(state, disk, str(path))
            doomed = [v for v in plan_retention(state, disk, config.stable_label, keep_last)
                      if (destination / str(v)).is_dir()
                      and not (destination / str(v)).is_symlink()]
            if not dry_run:
                for version in doomed:
                    away = destination / f"{DELETING_PREFIX}{uuid.uuid4().hex}"
                    os.rename(destination / str(version), away)
                    shutil.rmtree(away, ignore_errors=True)
    return ReleaseResult("prune", state.name, str(path), None, dict(state.labels),
                         dict(state.labels), list(state.specific), list(state.specific),
                         removed_versions=doomed,
                         note="dry run: nothing removed" if dry_run else "")


def server_command(command: list[str], model_config: str | Path,
                   config: ReleaseConfig) -> list[str]:
    """The gate's tensorflow_model_server command with --model_config_file (and its poll
    and label flags) in place of --model_name/--model_base_path."""
    flags = [f"--model_config_file={Path(model_config).resolve()}",
             f"--model_config_file_poll_wait_seconds={config.config_poll_wait_seconds}",
             UNAVAILABLE_LABELS_FLAG]
    kept = [w for w in command if not w.startswith(("--model_name=", "--model_base_path="))]
    try:
        at = next(i for i, w in enumerate(command) if w.startswith("--model_name="))
    except StopIteration:
        return [*kept, *flags]
    return [*kept[:at], *flags, *kept[at:]]
