"""Quantizer: float16 / int8 weights TF Serving can serve, and optional TFLite for edge.

    quantizer = Quantizer(model=optimizer.outputs['optimized_model'], mode='int8',
                          examples=example_gen.outputs['examples'], tflite='int8')
    quantizer.outputs['quantized_model']   # standard Model, Format-Serving/
    quantizer.outputs['tflite_model']      # standard Model, Format-TFLite/model.tflite

Both are verified against the input model (top-1 agreement for classifiers, elementwise
error otherwise) on the eval examples when given; a variant that leaves the tolerance is
never published: the quantized model fails the run, the TFLite variant is skipped with
its reason recorded on the artifact.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.core.errors import ServoptError
from components.core.quantize import MODES
from components.quantizer import executor
from components.tfx_params import VERIFICATION_PARAMETERS, verification_parameters


class QuantizerSpec(ComponentSpec):
    PARAMETERS = {
        "mode": ExecutionParameter(type=str),
        "min_elements": ExecutionParameter(type=int, optional=True),
        "min_top1_agreement": ExecutionParameter(type=float, optional=True),
        "tflite": ExecutionParameter(type=str, optional=True),
        **VERIFICATION_PARAMETERS,
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {
        "quantized_model": ChannelParameter(type=standard_artifacts.Model),
        "tflite_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
    }


class Quantizer(base_component.BaseComponent):
    SPEC_CLASS = QuantizerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, mode: str = "int8",
                 examples: types.BaseChannel | None = None, min_elements: int | None = None,
                 min_top1_agreement: float | None = None, tflite: str | None = None,
                 num_examples: int | None = None, atol: float | None = None,
                 rtol: float | None = None):
        """Args:
          model: a Model channel; a model that still has variables is frozen first.
          mode: 'int8' (per-channel symmetric) or 'float16' weights.
          examples: Examples to verify on (eval split); generated inputs otherwise.
          min_elements: quantize float32 weights with at least this many elements.
          min_top1_agreement: classifier outputs must keep this share of decisions.
          tflite: also emit a TFLite variant: 'int8' (dynamic range) or 'float16'.
          num_examples, atol, rtol: verification settings (configs/optimization.yaml).
        """
        for name, value in (("mode", mode), ("tflite", tflite)):
            if value is not None and value not in MODES:
                raise ServoptError(f"Quantizer {name}={value!r}: use one of {MODES}")
        super().__init__(spec=QuantizerSpec(
            model=model, examples=examples, mode=mode, min_elements=min_elements,
            min_top1_agreement=min_top1_agreement, tflite=tflite,
            quantized_model=types.Channel(type=standard_artifacts.Model),
            tflite_model=types.Channel(type=standard_artifacts.Model) if tflite else None,
            **verification_parameters(num_examples, atol, rtol)))
