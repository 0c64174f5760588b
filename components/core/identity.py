"""A produced model's identity: the component that made it, its variant, the outputs it
comes from, as its artifact carries them.

A model's identity travels on its artifact as properties (TFX custom properties, KFP
artifact metadata) that the producer sets and the consumers (ServingBenchmark, the gate,
the push) read: `servopt_component` (the producing component: Freezer, GraphOptimizer,
Quantizer) and `servopt_variant` (a Quantizer variant: bfloat16, tflite-<mode>). Its name
in benchmarks and decisions is `<component>` or `<component>-<variant>` (e.g.
`Quantizer-tflite-full_int8`). A variant that could not be produced has `produced` = 0
and its `skipped_reason`, and is passed over.

TensorFlow-free, like choices: the pipeline orchestrators and the consumers read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.core.choices import TFLITE_MODES

COMPONENT_PROPERTY = "servopt_component"
VARIANT_PROPERTY = "servopt_variant"
PRODUCED_PROPERTY = "produced"

# The component names the TFX components have by default; the KFP steps use the same.
FREEZER, GRAPH_OPTIMIZER, QUANTIZER = "Freezer", "GraphOptimizer", "Quantizer"
# The Quantizer's outputs (TFX output keys and KFP output names alike).
QUANTIZED_OUTPUT = "quantized_model"
BFLOAT16_OUTPUT = "bfloat16_model"
TFLITE_OUTPUTS = {mode: f"tflite_{mode}_model" for mode in TFLITE_MODES}  # mode -> output
VARIANT_OUTPUTS = {BFLOAT16_OUTPUT: "bfloat16",  # output -> variant
                   **{output: f"tflite-{mode}" for mode, output in TFLITE_OUTPUTS.items()}}
QUANTIZER_OUTPUTS = (QUANTIZED_OUTPUT, *VARIANT_OUTPUTS)
# Every model output of the producing components, in pipeline order (the candidates).
MODEL_OUTPUTS = ("frozen_model", "optimized_model", *QUANTIZER_OUTPUTS)


@dataclass(frozen=True)
class ModelIdentity:
    """Which component made a model, and which of its variants it is."""

    component: str
    variant: str | None = None

    @property
    def name(self) -> str:
        return f"{self.component}-{self.variant}" if self.variant else self.component

    def properties(self) -> dict[str, str]:
        return {COMPONENT_PROPERTY: self.component,
                **({VARIANT_PROPERTY: self.variant} if self.variant else {})}

    @classmethod
    def from_properties(cls, properties: Mapping[str, Any]) -> ModelIdentity | None:
        """The identity a producer recorded, or None for a model from elsewhere."""
        component = properties.get(COMPONENT_PROPERTY)
        if not component:
            return None
        return cls(str(component), properties.get(VARIANT_PROPERTY) or None)


def was_produced(properties: Mapping[str, Any]) -> bool:
    """False for a variant recorded as not produced (`produced` = 0)."""
    return int(properties.get(PRODUCED_PROPERTY, 1)) != 0
