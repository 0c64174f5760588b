"""Artifact URIs on any filesystem TensorFlow reads: local paths, gs://, s3://, hdfs://,
ram:// (TensorFlow's in-memory filesystem).

The library works on local directories (it runs SavedModels, renames atomically, scans
graphs). Adapters stage: a remote input is copied to a local temporary directory through
tf.io.gfile (on Vertex AI, gs://BUCKET/... is read through the Cloud Storage FUSE mount
at /gcs/BUCKET/... instead), and a remote output is written locally and uploaded when the
step succeeded. Local paths are used as they are, with no copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from components.core.errors import ServoptError, first_line

# Cloud Storage FUSE mount points: Vertex AI mounts gs://BUCKET at /gcs/BUCKET, and KFP's
# own artifact paths use the same convention (kfp.dsl.Artifact.path).
FUSE_MOUNTS = {"gs://": "/gcs/"}


def is_remote(uri: str | os.PathLike) -> bool:
    return "://" in str(uri)


def absolute(uri: str | os.PathLike) -> str:
    """`uri` as recorded for readers started in any directory (ML Metadata, metrics.json,
    `servopt gate`): a local path made absolute (os.path.abspath: from the current
    directory, `..` folded, symbolic links kept); a URI as it is."""
    return str(uri) if is_remote(uri) else os.path.abspath(uri)


def local_path(uri: str, into: str | None = None) -> str:
    """A path this process can read for `uri`: a local path as is; gs://... through the
    Cloud Storage FUSE mount where there is one; any other URL copied into a new
    temporary directory (under `into` when given) first."""
    if not uri or not is_remote(uri):
        return uri
    for scheme, mount in FUSE_MOUNTS.items():
        if uri.startswith(scheme) and os.path.isdir(mount):
            return mount + uri[len(scheme):]
    return download(uri, Path(tempfile.mkdtemp(prefix="servopt-in-", dir=into)))


def download(uri: str, directory: Path) -> str:
    """Copies the file or directory tree at `uri` into `directory`; returns its local path."""
    from components.core.tf_setup import tf

    gfile = tf.io.gfile
    source = uri.rstrip("/")
    target = directory / source.rsplit("/", 1)[-1]
    try:
        if not gfile.exists(source):
            raise ServoptError(f"{uri}: no such file or directory; check the URI and that "
                               "this pipeline's service account can read it")
        if not gfile.isdir(source):
            gfile.copy(source, str(target))
            return str(target)
        for root, _, files in gfile.walk(source):
            relative = root[len(source):].strip("/")
            (target / relative).mkdir(parents=True, exist_ok=True)
            for name in files:
                gfile.copy(f"{root.rstrip('/')}/{name}", str(target / relative / name))
    except tf.errors.OpError as err:
        raise ServoptError(f"{uri}: cannot read it ({first_line(err)})") from None
    return str(target)


def upload(directory: Path, uri: str) -> None:
    """Copies the tree at `directory` to `uri` (files replaced, nothing else removed)."""
    from components.core.tf_setup import tf

    gfile = tf.io.gfile
    target = uri.rstrip("/")
    try:
        gfile.makedirs(target)
        for path in sorted(p for p in directory.rglob("*")):
            remote = f"{target}/{path.relative_to(directory).as_posix()}"
            if path.is_dir():
                gfile.makedirs(remote)
            else:
                gfile.copy(str(path), remote, overwrite=True)
    except tf.errors.OpError as err:
        raise ServoptError(f"{uri}: cannot write there ({first_line(err)}); check the URI and "
                           "that this pipeline's service account can write it") from None


class Staging:
    """Local stand-ins for artifact URIs, for one step.

        with Staging() as stage:
            source = stage.input(model.uri)    # read from here
            out = stage.output(output.uri)     # write here; uploaded on success
            record(uri=stage.uri_of(source))   # back to the URI, for metadata

    Local URIs are returned unchanged. On a clean exit every output is uploaded; on an
    error nothing is uploaded. The temporary copies are removed either way.
    """

    def __init__(self) -> None:
        self._root: str | None = None
        self._uris: dict[str, str] = {}  # local stand-in -> URI
        self._inputs: dict[str, str] = {}  # URI -> its local copy (each copied once)
        self._outputs: list[tuple[Path, str]] = []

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None:
                for directory, uri in self._outputs:
                    upload(directory, uri)
        finally:
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)

    def _scratch(self) -> str:
        if self._root is None:
            self._root = tempfile.mkdtemp(prefix="servopt-stage-")
        return self._root

    def input(self, uri: str) -> str:
        if not is_remote(uri):
            return uri
        if uri not in self._inputs:
            self._inputs[uri] = local_path(uri, into=self._scratch())
            self._uris[self._inputs[uri]] = uri.rstrip("/")
        return self._inputs[uri]

    def output(self, uri: str) -> str:
        if not is_remote(uri):
            Path(uri).mkdir(parents=True, exist_ok=True)
            return uri
        local = Path(tempfile.mkdtemp(prefix="servopt-out-", dir=self._scratch()))
        self._outputs.append((local, uri))
        self._uris[str(local)] = uri.rstrip("/")
        return str(local)

    def uri_of(self, path: str | os.PathLike) -> str:
        """The URI a staged local path stands for (a local path: itself)."""
        path = str(path)
        for local, uri in self._uris.items():
            if path == local or path.startswith(local.rstrip("/") + "/"):
                return uri + path[len(local.rstrip("/")):]
        return path
