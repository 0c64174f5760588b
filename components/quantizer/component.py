"""Quantizer: smaller weights TF Serving serves as they are, and faster-compute variants.

    quantizer = Quantizer(model=optimizer.outputs['optimized_model'], mode='int8',
                          bfloat16=True, tflite=['dynamic_int8', 'full_int8'],
                          examples=example_gen.outputs['examples'])
    quantizer.outputs['quantized_model']  # int8/float16 weights, fp32 compute (smaller)
    quantizer.outputs['bfloat16_model']   # bf16 compute in the graph (CPUs with bf16)
    quantizer.outputs['tflite_full_int8_model']  # one per mode listed (default: all
        # four, tflite_<mode>_model): SavedModel + model.tflite, for TF Serving's
        # --prefer_tflite_model=true

Each is a standard Model artifact (`Format-Serving/`), verified against the input model
(top-1 agreement for classifiers, elementwise error otherwise) on the eval examples when
given. The weight-quantized model fails the run if it leaves the tolerance. The bf16 and
TFLite variants are never published when they cannot apply or leave the tolerance: the
artifact then has `produced=0` and the reason in `skipped_reason`, and ServingBenchmark
passes it over. What a variant needs from TF Serving (runtime, flags, CPU features) is in
its custom properties and in `assets.extra/serving_requirements.json`.
"""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.core.config import QuantizerSettings
from components.core.identity import QUANTIZED_OUTPUT, QUANTIZER_OUTPUTS
from components.core.producers import quantizer_steps
from components.quantizer import executor
from components.tfx_params import VERIFICATION_PARAMETERS, verification_parameters


class QuantizerSpec(ComponentSpec):
    PARAMETERS = {  # the fields of QuantizerSettings, resolved (defaults filled in)
        "mode": ExecutionParameter(type=str),
        "min_elements": ExecutionParameter(type=int, optional=True),
        "min_top1_agreement": ExecutionParameter(type=float, optional=True),
        "bfloat16": ExecutionParameter(type=int, optional=True),
        "tflite": ExecutionParameter(type=str, optional=True),  # JSON list of modes
        **VERIFICATION_PARAMETERS,
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {key: ChannelParameter(type=standard_artifacts.Model,
                                     optional=key != QUANTIZED_OUTPUT)
               for key in QUANTIZER_OUTPUTS}


_DEFAULTS = QuantizerSettings()


class Quantizer(base_component.BaseComponent):
    SPEC_CLASS = QuantizerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, mode: str = _DEFAULTS.mode,
                 examples: types.BaseChannel | None = None,
                 min_elements: int = _DEFAULTS.min_elements,
                 min_top1_agreement: float = _DEFAULTS.min_top1_agreement,
                 bfloat16: bool = _DEFAULTS.bfloat16,
                 tflite: list[str] | str | None = _DEFAULTS.tflite,
                 num_examples: int | None = None, atol: float | None = None,
                 rtol: float | None = None, allowed_ops: list[str] | None = None):
        """Args (defaults: components.core.config.QuantizerSettings, the same as the
        `quantizer` section of configs/optimization.yaml and the KFP pipeline's):
          model: a Model channel; a model that still has variables is frozen first.
          mode: 'int8' (per-channel symmetric) or 'float16' weights; compute stays fp32.
          examples: Examples to verify on and calibrate with (eval split).
          min_elements: quantize float32 weights with at least this many elements.
          min_top1_agreement: classifier outputs must keep this share of decisions.
          bfloat16: also emit `bfloat16_model` (skipped on CPUs without bf16 units).
          tflite: TFLite modes ('float32', 'float16', 'dynamic_int8', 'full_int8'),
            a list or one; each is emitted as `tflite_<mode>_model`. None or []: none.
          num_examples, atol, rtol: verification settings (configs/optimization.yaml).
          allowed_ops: unsafe op types the model may run while verified (default none).
        """
        settings = QuantizerSettings(mode=mode, min_elements=min_elements,
                                     min_top1_agreement=min_top1_agreement,
                                     bfloat16=bool(bfloat16), tflite=tflite)  # validates
        outputs = quantizer_steps(settings)
        super().__init__(spec=QuantizerSpec(
            model=model, examples=examples, mode=settings.mode,
            min_elements=settings.min_elements,
            min_top1_agreement=settings.min_top1_agreement, bfloat16=int(settings.bfloat16),
            tflite=json.dumps(settings.tflite),
            **{key: types.Channel(type=standard_artifacts.Model) if key in outputs else None
               for key in QUANTIZER_OUTPUTS},
            **verification_parameters(num_examples, atol, rtol, allowed_ops)))
