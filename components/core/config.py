"""YAML configuration: the optimization recipe the components and the demo read.

Every section and key is optional; what is absent takes the library default. Unknown keys
and wrong types are errors that name the file and the key, so a typo never silently falls
back to a default.

The default files ship inside the package (components/configs/, read with
importlib.resources), so an installed wheel finds them wherever it runs; the top-level
configs/ of the repository holds the same files as the documented copy to start from.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.core.errors import ServoptError
from components.core.optimize import DEFAULT_PASSES, validate_passes
from components.core.quantize import DEFAULT_MIN_ELEMENTS, MODES
from components.core.tflite import TFLITE_MODES
from components.core.yaml_io import parse_yaml


def default_config(name: str) -> Path:
    """The packaged default file `name` (optimization.yaml, benchmark.yaml,
    thresholds.yaml) of components/configs/."""
    return Path(str(importlib.resources.files("components") / "configs" / name))


DEFAULT_RECIPE = default_config("optimization.yaml")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ServoptError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ServoptError(f"{path}: cannot read the config file ({err})") from None
    data = parse_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ServoptError(f"{path}: expected a mapping of sections at the top level")
    return data


def section(data: dict[str, Any], name: str, source: Path | str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ServoptError(f"{source}: section '{name}' must be a mapping")
    return value


def fill_dataclass(cls, values: dict[str, Any], source: Path | str, where: str):
    """cls(**values), with unknown keys and type mismatches reported by file and key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ServoptError(f"{source}: unknown key '{where}.{unknown[0]}'; known keys: "
                           f"{', '.join(fields)}")
    for key, value in values.items():
        default = getattr(cls(), key)
        if value is not None and default is not None and not _same_kind(value, default):
            raise ServoptError(f"{source}: '{where}.{key}' must be "
                               f"{type(default).__name__}, got {value!r}")
    return cls(**values)


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, list | tuple):
        return isinstance(value, list | tuple)
    return isinstance(value, type(default))


@dataclass
class GraphOptimizerSettings:
    passes: list[str] = field(default_factory=lambda: list(DEFAULT_PASSES))


@dataclass
class QuantizerSettings:
    mode: str = "int8"
    min_elements: int = DEFAULT_MIN_ELEMENTS
    min_top1_agreement: float = 0.99
    bfloat16: bool = True  # skipped, with the reason recorded, on CPUs without bf16 units
    tflite: str | None = "dynamic_int8"


@dataclass
class VerificationSettings:
    num_examples: int = 256


@dataclass
class OptimizationRecipe:
    graph_optimizer: GraphOptimizerSettings = field(default_factory=GraphOptimizerSettings)
    quantizer: QuantizerSettings = field(default_factory=QuantizerSettings)
    verification: VerificationSettings = field(default_factory=VerificationSettings)

    @classmethod
    def from_yaml(cls, path: str | Path = DEFAULT_RECIPE) -> OptimizationRecipe:
        return cls.from_dict(read_yaml(path), path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | Path) -> OptimizationRecipe:
        """The recipe's sections of `data` (other sections are other readers' business)."""
        recipe = cls(
            graph_optimizer=fill_dataclass(GraphOptimizerSettings,
                                           section(data, "graph_optimizer", path), path,
                                           "graph_optimizer"),
            quantizer=fill_dataclass(QuantizerSettings, section(data, "quantizer", path),
                                     path, "quantizer"),
            verification=fill_dataclass(VerificationSettings,
                                        section(data, "verification", path), path,
                                        "verification"))
        try:
            validate_passes(recipe.graph_optimizer.passes)
        except ServoptError as err:
            raise ServoptError(f"{path}: graph_optimizer.passes: {err}") from None
        for key, modes in (("mode", MODES), ("tflite", TFLITE_MODES)):
            value = getattr(recipe.quantizer, key)
            if value is not None and value not in modes:
                raise ServoptError(f"{path}: quantizer.{key} must be one of {modes}, got "
                                   f"{value!r}")
        return recipe


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
