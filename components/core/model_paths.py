"""Where a SavedModel is, in every layout a TFX user meets, and what may be read there.

`resolve_saved_model_dir` accepts a SavedModel directory, a TFX `Model` artifact
(`Format-Serving/`, as Trainer writes it), the legacy estimator layout
(`Format-Serving/export/<name>/<timestamp>/`, as `tfx.utils.path_utils` resolves it) and a
TF Serving model base directory (`<base>/<version>/`, highest version wins).

TensorFlow-free (paths only): the pipeline orchestrators check their arguments with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from components.core.errors import ServoptError

SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
SERVING_MODEL_DIR = "Format-Serving"  # tfx.utils.path_utils: the Trainer's serving export
LEGACY_SERVING_MODEL_DIR = "serving_model_dir"  # TFX < 0.22 artifacts


def is_saved_model_dir(path: Path) -> bool:
    return (path / SAVED_MODEL_PB).is_file() or (path / SAVED_MODEL_PBTXT).is_file()


def _numeric_children(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.is_dir() and p.name.isdigit()]


def resolve_saved_model_dir(path: str | os.PathLike) -> Path:
    """Returns the directory that holds `saved_model.pb` for any supported layout."""
    root = Path(path)
    if not root.exists():
        raise ServoptError(f"{root}: no such file or directory; pass a SavedModel directory "
                           "or a TFX Model artifact directory")
    if not root.is_dir():
        raise ServoptError(f"{root}: is a file; pass the directory that contains "
                           f"{SAVED_MODEL_PB}")
    if is_saved_model_dir(root):
        return root
    for name in (SERVING_MODEL_DIR, LEGACY_SERVING_MODEL_DIR):
        serving = root / name
        if serving.is_dir():
            if is_saved_model_dir(serving):
                return serving
            estimator = _resolve_estimator_export(serving / "export")
            if estimator is not None:
                return estimator
    versions = [v for v in _numeric_children(root) if is_saved_model_dir(v)]
    if versions:  # a TF Serving model base directory: serve what TF Serving would serve
        return max(versions, key=lambda v: int(v.name))
    raise ServoptError(
        f"{root}: no SavedModel found; expected {SAVED_MODEL_PB} there, or a TFX Model "
        f"artifact ({SERVING_MODEL_DIR}/{SAVED_MODEL_PB} or "
        f"{SERVING_MODEL_DIR}/export/<name>/<timestamp>/{SAVED_MODEL_PB}), or TF Serving "
        f"version directories (<base>/<version>/{SAVED_MODEL_PB})")


def _resolve_estimator_export(export_dir: Path) -> Path | None:
    """`Format-Serving/export/<name>/<timestamp>/`: the latest timestamp of the only name."""
    if not export_dir.is_dir():
        return None
    names = [p for p in export_dir.iterdir() if p.is_dir()]
    if len(names) != 1:
        return None
    stamps = [p for p in _numeric_children(names[0]) if is_saved_model_dir(p)]
    return max(stamps, key=lambda p: int(p.name)) if stamps else None


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, all symlinks resolved, lies inside the directory `root` (also
    resolved): the one containment check for everything read from a model."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def refuse_outside_links(model_dir: Path) -> None:
    """Raises ServoptError when a symlink in the model directory `model_dir` leads outside
    it (copying, scanning or benchmarking the model would read that outside file: a
    symlinked `assets/`, a `model.tflite` linked to /etc/passwd) or back into a directory
    above it (copying would never end). Links between the model's own files are fine.
    Every command runs this before it reads a model's files (the safety scan does)."""
    root = Path(model_dir).resolve()
    for directory, dirs, files in os.walk(root):  # directory links checked, not entered
        for name in [*dirs, *files]:
            entry = Path(directory) / name
            if not entry.is_symlink():
                continue
            target = entry.resolve()
            if not inside(root, target):
                raise ServoptError(f"{entry}: is a symlink to {target}, outside the model "
                                   f"{root}; nothing reads or publishes files outside a "
                                   "model: replace the link with the file itself")
            if target.is_dir() and inside(target, entry.parent):
                raise ServoptError(f"{entry}: is a symlink to {target}, a directory that "
                                   "contains it; remove the link")
