"""YAML configuration: the optimization recipe the components and the demo read.

Every section and key is optional; what is absent takes the library default. Unknown keys
and wrong types are errors that name the file and the key, so a typo never silently falls
back to a default.

The default files ship inside the package (components/configs/, read with
importlib.resources), so an installed wheel finds them wherever it runs; the top-level
configs/ of the repository holds the same files as the documented copy to start from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.core.choices import (
    DEFAULT_MIN_ELEMENTS,
    DEFAULT_PASSES,
    MIN_TOP1_AGREEMENT,
    TFLITE_MODES,
    WEIGHT_MODES,
    validate_passes,
    validate_tflite_mode,
)
from components.core.errors import ServoptError
from components.core.yaml_io import (  # noqa: F401 (re-exported)
    ONE_OR_LIST,
    default_config,
    fill_dataclass,
    read_yaml,
    section,
)

DEFAULT_RECIPE = default_config("optimization.yaml")


# One dataclass per settings group: its defaults are the only ones. The CLI, the TFX
# components, the KFP components and the packaged optimization.yaml (which states exactly
# these values; tests/test_packaged_defaults.py) all start from them.

@dataclass
class GraphOptimizerSettings:
    passes: list[str] = field(default_factory=lambda: list(DEFAULT_PASSES))

    def __post_init__(self) -> None:
        try:
            validate_passes(self.passes)
        except ServoptError as err:
            raise ServoptError(f"graph_optimizer.passes: {err}") from None


@dataclass
class QuantizerSettings:
    mode: str = "int8"  # weight storage; compute stays fp32
    min_elements: int = DEFAULT_MIN_ELEMENTS
    # Classifiers must keep this share of decisions, or nothing is published.
    min_top1_agreement: float = MIN_TOP1_AGREEMENT
    bfloat16: bool = True  # skipped, with the reason recorded, on CPUs without bf16 units
    # TFLite modes, one variant each; which is fastest depends on the serving CPU, so all.
    tflite: list[str] = field(default_factory=lambda: list(TFLITE_MODES),
                              metadata={ONE_OR_LIST: True})

    def __post_init__(self) -> None:
        """The one validation of these settings (the TFX Quantizer, the KFP quantize step
        and the YAML reader all build this dataclass)."""
        if self.mode not in WEIGHT_MODES:
            raise ServoptError(f"quantizer.mode must be one of {', '.join(WEIGHT_MODES)} (bfloat16 "
                               f"compute is `bfloat16: true`), got {self.mode!r}")
        self.tflite = tflite_modes(self.tflite)
        if not 0.0 <= self.min_top1_agreement <= 1.0 or self.min_elements < 1:
            raise ServoptError("quantizer.min_top1_agreement must be in [0, 1] and "
                               "quantizer.min_elements >= 1, got "
                               f"{self.min_top1_agreement!r} and {self.min_elements!r}")


def tflite_modes(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """`quantizer.tflite` as a list of modes: one mode as a string is a one-item list, null
    or [] none; an unknown mode or a repeat is refused."""
    modes = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(modes, list | tuple):
        raise ServoptError(f"quantizer.tflite must be a list of TFLite modes "
                           f"({', '.join(TFLITE_MODES)}), one mode, or null for none; got "
                           f"{value!r}")
    for i, mode in enumerate(modes):
        try:
            validate_tflite_mode(mode)
        except ServoptError as err:
            raise ServoptError(f"quantizer.tflite: {err}; or null for none") from None
        if mode in modes[:i]:
            raise ServoptError(f"quantizer.tflite: '{mode}' is listed twice; list each "
                               "mode once")
    return list(modes)


@dataclass
class VerificationSettings:
    num_examples: int = 256  # inputs every produced model is verified on

    def __post_init__(self) -> None:
        if self.num_examples < 1:
            raise ServoptError(f"verification.num_examples must be >= 1, got "
                               f"{self.num_examples!r}")


SETTINGS_GROUPS = {"graph_optimizer": GraphOptimizerSettings, "quantizer": QuantizerSettings,
                   "verification": VerificationSettings}


def settings_from_dict(name: str, values: dict[str, Any] | None, source: Path | str):
    """The settings group `name` from a mapping of its keys (a YAML section, a KFP or TFX
    parameter): absent keys take the defaults; errors name `source` and the key."""
    cls = SETTINGS_GROUPS[name]
    try:
        return fill_dataclass(cls, dict(values or {}), source, name)
    except ServoptError as err:
        text = str(err)
        raise ServoptError(text if text.startswith(f"{source}:") else f"{source}: {text}"
                           ) from None


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
        return cls(**{name: settings_from_dict(name, section(data, name, path), path)
                      for name in SETTINGS_GROUPS})


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
