"""Push a SavedModel to a TF Serving model base directory as a new version.

TF Serving watches `<base>/<version>/` (integer names only) and serves the highest
version. A push here:

1. copies the model into a staging directory inside the destination, named
   `.tmp-servopt-<uuid>.<pid>.<host>` (not all digits, so TF Serving ignores it), with
   `saved_model.pb` copied last, after the optional warm-up file;
2. under an exclusive lock on `<base>/.servopt-push.lock` (flock), picks the version and
   renames the staging directory to it. The rename is atomic and never replaces anything
   (renameat2 RENAME_NOREPLACE), so TF Serving sees either no version or a complete one,
   and two pushes never claim the same number; if another writer took the number, the
   next one is tried;
3. optionally removes old versions, keeping the last N (never the one just pushed); each
   is first renamed away to a hidden name, so TF Serving never sees half of it deleted.

Version numbers: max(unix time now, highest existing version + 1). Like TFX's Pusher
(which uses the push time), versions are timestamps as long as clocks agree, so versions
pushed by either tool order correctly in one directory; unlike it, a version is always
strictly above every existing one (several pushes in the same second, clock skew, or a
destination numbered 1, 2, 3 by hand), and the number is chosen at publish time, so the
order of versions is the order in which pushes completed.

A push killed midway leaves at most a hidden `.tmp-servopt-*` directory, which TF Serving
ignores; the next push deletes it at once when its owner (the pid and host in its name)
is a process of this host that no longer runs, and any such leftover a day old (its
owner may be on another host, or its pid reused).

Destinations: a local path is the solid case. A URL (`gs://`, `s3://`, `hdfs://`, ...)
goes through tf.io.gfile: files are uploaded straight into the version directory, with
`saved_model.pb` last, as TFX's Pusher does; object stores have no atomic directory
rename, and concurrent pushes to one URL are not coordinated.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from components.core.batching import (
    BATCHING_PARAMS_FILE,
    SERVER_BATCHING_FILE,
    BatchingParameters,
    server_batching_file,
    write_batching_params,
)
from components.core.errors import ServoptError, first_line
from components.core.gate.warmup import (
    WARMUP_DIR,
    WARMUP_FILE,
    read_warmup_file,
    replay_warmup,
    warmup_logs,
    write_warmup_file,
)
from components.core.model_paths import (
    SAVED_MODEL_PB,
    SAVED_MODEL_PBTXT,
    inside,
    resolve_saved_model_dir,
)
from components.core.requirements import read_requirements, requirements_path, write_requirements
from components.core.safety import refuse_unsafe
from components.core.serving_config import ServingConfig
from components.core.staging import STALE_S, owned_name, remove_abandoned

STAGING_PREFIX = ".tmp-servopt-"
DELETING_PREFIX = f"{STAGING_PREFIX}delete-"  # an old version being removed by keep_last
LOCK_FILE = ".servopt-push.lock"
MAX_ATTEMPTS = 1000
_VERSION = re.compile(r"[0-9]+")
_GRAPH_FILES = (SAVED_MODEL_PB, SAVED_MODEL_PBTXT)


@dataclass
class PushResult:
    version: int
    path: str  # the version directory: TFX's `pushed_destination`
    base_dir: str  # the TF Serving model base directory it was pushed into
    removed_versions: list[int] = field(default_factory=list)  # by keep_last
    warmup_requests: int = 0  # records written to assets.extra/tf_serving_warmup_requests

    def to_dict(self) -> dict:
        return asdict(self)


def push_model(model_dir: str | Path, base_dir: str | Path, keep_last: int | None = None,
               warmup_examples: str | Path | None = None, *,
               model_name: str | None = None, warmup_signature: str = "serving_default",
               warmup_batch_sizes: Sequence[int] = (1,),
               serving_runtime: str | None = None, allowed_ops: Iterable[str] = (),
               configuration: dict | None = None, server_command: Sequence[str] = (),
               clock: Callable[[], float] = time.time) -> PushResult:
    """Publishes the SavedModel at `model_dir` (any layout the library resolves) as a new
    version under `base_dir`, or under `base_dir/model_name` when a model name is given.

    keep_last: keep only the newest N versions afterwards. warmup_examples: eval examples
    (TFRecords of tf.Example, a TFX Examples artifact, or .npz) to write TF Serving
    warm-up requests from, one Predict request per size in `warmup_batch_sizes`.
    allowed_ops: op types the safety scan refuses that the model may run anyway: TF
    Serving runs what is pushed, so push scans it first (and refuses symlinks out of it).
    The warm-ups the version will carry (written here, or already in the model) are
    replayed first through `serving_runtime` ("tflite": model.tflite, as the destination
    runs it with --prefer_tflite_model=true; "tensorflow"; None: every runtime the version
    has); one that fails stops the push (warmup.replay_warmup).
    configuration, server_command: the TF Serving configuration the gate chose
    (ServingConfig.to_dict()) and the command that serves it: the version carries what TF
    Serving reads from it for that configuration (batching_params.pbtxt), and both go into
    its assets.extra/serving_requirements.json, so they travel with the model.
    """
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(
            keep_last, int) or keep_last < 1):
        raise ServoptError(f"keep_last must be an integer >= 1 (or None to keep every "
                           f"version), got {keep_last!r}")
    source = resolve_saved_model_dir(model_dir)
    refuse_unsafe(source, allowed_ops, "to push it (TF Serving would run it)")
    serving = _ServingFiles(source, configuration, tuple(server_command))
    logs = (warmup_logs(source, warmup_examples, warmup_signature, warmup_batch_sizes,
                        model_name, serving_runtime) if warmup_examples is not None else [])
    carried = source / WARMUP_DIR / WARMUP_FILE
    replay_warmup(source, logs or (read_warmup_file(carried) if carried.is_file() else []),
                  serving_runtime, allowed_ops)
    if "://" in str(base_dir):
        return _push_url(source, str(base_dir), model_name, keep_last, logs, clock, serving)
    target = Path(base_dir) / model_name if model_name else Path(base_dir)
    if inside(source, target):
        raise ServoptError(f"{target}: is inside the model {source} that is pushed; "
                           "the push would copy the model into itself: push to a "
                           "directory outside it")
    destination = checked_destination(base_dir, model_name)
    _remove_stale_staging(destination)
    staging = destination / owned_name(STAGING_PREFIX)
    try:
        staging.mkdir()
    except OSError as err:
        raise ServoptError(f"{destination}: cannot write there ({err.strerror}); check the "
                           "destination's permissions") from None
    try:
        try:
            _stage(source, staging, logs, serving)
        except OSError as err:
            raise ServoptError(f"{destination}: the push failed while copying "
                               f"{err.filename or source} ({err.strerror or err}); nothing "
                               "was published") from None
        with _locked(destination):
            _write_server_file(destination, serving)
            version = _publish(staging, destination, clock)
            removed = _prune(destination, keep_last, version) if keep_last else []
        _fsync_dir(destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return PushResult(version, str(destination / str(version)), str(destination), removed,
                      len(logs))


def checked_destination(base_dir: str | Path, model_name: str | None = None) -> Path:
    """The directory versions go into, created if missing. `base_dir` may be any path
    (`../serving` too); the push must stay where it names: a base or model directory that
    is a symlink is refused, and the model directory must resolve inside the base."""
    base = Path(base_dir)
    if model_name is not None and (model_name in ("", ".", "..") or "/" in model_name
                                   or os.sep in model_name or "\0" in model_name):
        raise ServoptError(f"model name {model_name!r} is not a single directory name; it "
                           f"would lead outside {base}; use a plain name like 'mnist'")
    destination = base / model_name if model_name else base
    for path in dict.fromkeys([base, destination]):
        if path.is_symlink():
            raise ServoptError(f"{path}: is a symlink (to {os.readlink(path)}); a push must "
                               f"stay inside the directory it names ({base}); replace the "
                               "link with a directory, or give the directory it points to")
    try:
        destination.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ServoptError(f"{destination}: exists and is not a directory; give a TF "
                           "Serving model base directory") from None
    except OSError as err:
        raise ServoptError(f"{destination}: cannot create the destination ({err.strerror})"
                           ) from None
    if model_name and destination.resolve() != base.resolve() / model_name:
        raise ServoptError(f"{destination}: resolves to {destination.resolve()}, outside "
                           f"{base.resolve()}; a push must stay inside the base directory")
    return destination


def versions(destination: str | Path) -> list[int]:
    """Version numbers TF Serving would see: entries named by digits only, ascending."""
    return sorted(int(name) for name in os.listdir(destination) if _VERSION.fullmatch(name))


def _copy_file(src: str, dst: str) -> None:
    """Copies one file (a module attribute, so tests can interrupt a copy midway)."""
    shutil.copy2(src, dst)


@dataclass(frozen=True)
class _ServingFiles:
    """What the chosen configuration adds to the version (written into the staging copy,
    never into the source)."""

    source: Path
    configuration: dict | None
    server_command: tuple[str, ...]

    @property
    def batching(self) -> BatchingParameters | None:
        if not self.configuration:
            return None
        return ServingConfig.from_dict(self.configuration).batching

    def server_file(self) -> str | None:
        """The server-wide --batching_parameters_file's text, where the configuration sets
        the batch thread pool (shared by every model the server batches: server.cc reads
        it once, at start; its flag names it under the model base path)."""
        return server_batching_file(self.batching) if self.batching else None

    def write(self, staging: Path) -> None:
        if self.configuration is None and not self.server_command:
            return
        config = ServingConfig.from_dict(self.configuration) if self.configuration else None
        if config is not None and config.batching is not None:
            # --enable_batching --enable_per_model_batching_parameters read the batching
            # parameters from the version directory (bundle_factory_util.cc,
            # GetPerModelBatchingParams); a model without the file is not batched.
            target = staging / BATCHING_PARAMS_FILE
            target.unlink(missing_ok=True)
            write_batching_params(staging, config.batching)
        requirements = replace(read_requirements(self.source),
                               configuration=self.configuration,
                               server_command=self.server_command)
        requirements_path(staging).unlink(missing_ok=True)  # a copy may be read-only
        write_requirements(staging, requirements)


def _stage(source: Path, staging: Path, logs: list,
           serving: _ServingFiles | None = None) -> None:
    """Copies `source` into `staging`: everything, then the warm-up file and the chosen
    configuration's files, then the graph."""
    graph_files = []
    for root, dirs, files in os.walk(source, followlinks=True):
        relative = Path(root).relative_to(source)
        for name in sorted(dirs):
            (staging / relative / name).mkdir()
        for name in sorted(files):
            if relative == Path(".") and name in _GRAPH_FILES:
                graph_files.append(name)
            elif not (logs and relative == Path(WARMUP_DIR) and name == WARMUP_FILE):
                _copy_file(os.path.join(root, name), str(staging / relative / name))
    if logs:
        write_warmup_file(logs, staging)
    if serving is not None:
        serving.write(staging)
    for name in graph_files:  # last: a directory with it is a complete model
        _copy_file(str(source / name), str(staging / name))
    _fsync_tree(staging)


def _write_server_file(destination: Path, serving: _ServingFiles) -> None:
    """The server-wide batching file beside the versions, replaced atomically."""
    text = serving.server_file()
    if text is None:
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{SERVER_BATCHING_FILE}.",
                               dir=destination)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, destination / SERVER_BATCHING_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(destination: Path) -> Iterator[None]:
    """An exclusive flock on the destination's lock file, for choosing versions."""
    path = destination / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        raise ServoptError(f"{path}: cannot open the push lock ({err.strerror}); it must be "
                           "a regular file the pusher can write") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _publish(staging: Path, destination: Path, clock: Callable[[], float]) -> int:
    version = 0
    for _ in range(MAX_ATTEMPTS):
        version = max(int(clock()), max(versions(destination), default=0) + 1, version + 1)
        try:
            _rename_noreplace(staging, destination / str(version))
            return version
        except FileExistsError:
            continue  # a writer outside this protocol took the number: try the next
    raise ServoptError(f"{destination}: could not claim a new version after {MAX_ATTEMPTS} "
                       "attempts; is another tool creating version directories there?")


def _prune(destination: Path, keep_last: int, pushed: int) -> list[int]:
    """Removes all but the newest `keep_last` version directories, never `pushed`.
    Symlinks and files with version names are left alone."""
    candidates = [v for v in versions(destination)
                  if (destination / str(v)).is_dir() and not (destination / str(v)).is_symlink()]
    removed = [v for v in candidates[:-keep_last] if v != pushed]
    for version in removed:
        doomed = destination / f"{DELETING_PREFIX}{uuid.uuid4().hex}"
        os.rename(destination / str(version), doomed)  # vanishes from TF Serving at once
        shutil.rmtree(doomed, ignore_errors=True)
    return removed


def _remove_stale_staging(destination: Path) -> None:
    """Deletes leftovers of killed pushes: staging directories whose owner is gone or
    that are a day old, and versions a killed prune was deleting."""
    remove_abandoned(destination, STAGING_PREFIX, STALE_S)
    remove_abandoned(destination, DELETING_PREFIX, 0)  # renamed away: garbage already


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
except (AttributeError, OSError):  # not Linux, or a libc without it
    _renameat2 = None


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Renames `src` to `dst`, failing with FileExistsError if `dst` exists in any form."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                      _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(code, os.strerror(code), str(dst))
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise ServoptError(f"{dst}: cannot publish the version ({os.strerror(code)})")
    # No RENAME_NOREPLACE on this filesystem: rename() fails on a non-empty directory
    # (every version is), and the lock keeps cooperating pushers from racing here.
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    try:
        os.rename(src, dst)
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(err.errno, err.strerror, str(dst)) from None
        raise ServoptError(f"{dst}: cannot publish the version ({err.strerror})") from None


def _fsync_tree(root: Path) -> None:
    """Flushes every file and directory under `root` so a published version survives a
    power loss whole."""
    for path, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(path, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(path))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _push_url(source: Path, base: str, model_name: str | None, keep_last: int | None,
              logs: list, clock: Callable[[], float],
              serving: _ServingFiles | None = None) -> PushResult:
    """A push through tf.io.gfile (object stores, HDFS): uploaded with the graph last."""
    from components.core.tf_setup import tf

    gfile = tf.io.gfile
    if ".." in base.split("/"):
        raise ServoptError(f"{base}: the destination contains '..'; give the model base "
                           "directory without it")
    if model_name is not None and (model_name in ("", ".", "..") or "/" in model_name):
        raise ServoptError(f"model name {model_name!r} is not a single directory name")
    destination = base.rstrip("/") + (f"/{model_name}" if model_name else "")
    try:
        gfile.makedirs(destination)
        existing = sorted(int(n.rstrip("/")) for n in gfile.listdir(destination)
                          if _VERSION.fullmatch(n.rstrip("/")))
    except tf.errors.OpError as err:
        raise ServoptError(f"{destination}: cannot use the destination ({first_line(err)})"
                           ) from None
    version = max(int(clock()), max(existing, default=0) + 1)
    while gfile.exists(f"{destination}/{version}"):
        version += 1
    target = f"{destination}/{version}"
    server_file = serving.server_file() if serving is not None else None
    if server_file is not None:
        with gfile.GFile(f"{destination}/{SERVER_BATCHING_FILE}", "w") as handle:
            handle.write(server_file)
    with tempfile.TemporaryDirectory(prefix="servopt-push-") as local:
        staging = Path(local) / "model"
        staging.mkdir()
        _stage(source, staging, logs, serving)
        files = sorted((p for p in staging.rglob("*") if p.is_file()),
                       key=lambda p: (p.relative_to(staging).as_posix() in _GRAPH_FILES,
                                      p.as_posix()))
        for path in files:
            remote = f"{target}/{path.relative_to(staging).as_posix()}"
            gfile.makedirs(remote.rsplit("/", 1)[0])
            gfile.copy(str(path), remote, overwrite=False)
    removed = []
    if keep_last:
        kept = [*existing, version]
        removed = [v for v in kept[:-keep_last] if v != version]
        for old in removed:
            gfile.rmtree(f"{destination}/{old}")
    return PushResult(version, target, destination, removed, len(logs))
