"""Run optimization steps on a model and publish the verified result.

`optimize_model` is the one entry point the CLI, the TFX executors and the KFP components
share. Each step writes a SavedModel to a scratch directory, which is loaded and run the
way TF Serving runs it and compared with the *source* model (so errors cannot pile up
unseen across steps). A step that cannot apply is skipped with its reason; a step whose
output leaves the tolerance fails the run. Only a verified model is published at `out`,
atomically.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from components.core.bf16 import BF16_REQUIREMENTS, to_bfloat16
from components.core.choices import (
    DEFAULT_PASSES,
    WEIGHT_MODES,
    validate_passes,
    validate_tflite_mode,
)
from components.core.config import QuantizerSettings, VerificationSettings
from components.core.describe import ModelDescription, describe
from components.core.errors import ServoptError, StepSkipped, VerificationError
from components.core.freeze import VARIABLE_OPS, freeze
from components.core.grappler import all_nodes
from components.core.heap import release_freed_memory
from components.core.model_io import (
    ServingGraph,
    read_serving_graph,
    staged_output,
    write_serving_graph,
)
from components.core.model_paths import refuse_outside_links, resolve_saved_model_dir
from components.core.optimize import optimize
from components.core.quantize import quantize_weights
from components.core.requirements import (
    ServingRequirements,
    read_requirements,
    write_requirements,
)
from components.core.safety import refuse_unsafe
from components.core.tflite import (
    TFLiteConversion,
    convert_signatures,
    tflite_file,
    verify_tflite,
)
from components.core.verify import (
    FLOAT32_TOLERANCE,
    QUANTIZED_TOLERANCE,
    TFLITE_FLOAT32_TOLERANCE,
    Reference,
    Tolerance,
    VerificationResult,
)

BFLOAT16_MODE = "bfloat16"  # quantize=bfloat16: compute precision, not weight storage
QUANTIZE_MODES = (*WEIGHT_MODES, BFLOAT16_MODE)
FINAL_STEPS = ("tflite", f"quantize={BFLOAT16_MODE}")  # variants tied to one runtime


@dataclass(frozen=True)
class Step:
    name: str
    argument: str | None = None

    def __str__(self) -> str:
        return self.name if self.argument is None else f"{self.name}={self.argument}"


@dataclass(frozen=True)
class OptimizeConfig:
    passes: tuple[str, ...] = DEFAULT_PASSES
    quantize_min_elements: int = QuantizerSettings.min_elements
    float32_tolerance: Tolerance = FLOAT32_TOLERANCE
    quantized_tolerance: Tolerance = QUANTIZED_TOLERANCE
    num_examples: int = VerificationSettings.num_examples
    batch_size: int = 32
    seed: int = 0
    examples: Path | None = None  # real verification inputs: TFRecords or .npz
    # The published (last) model is always verified against the source; this verifies every
    # intermediate one too, for a per-step error table (costs one more run per step).
    verify_each_step: bool = False
    allowed_ops: tuple[str, ...] = ()  # unsafe op types the source may run (see safety)


@dataclass
class StepRecord:
    step: str
    status: str  # "applied" or "skipped"
    reason: str | None = None
    details: dict = field(default_factory=dict)
    verification: VerificationResult | None = None
    model: ModelDescription | None = None  # the model this step produced
    tflite_verification: VerificationResult | None = None  # model.tflite, for tflite steps


@dataclass
class OptimizationReport:
    source: str
    output: str
    before: ModelDescription
    after: ModelDescription
    steps: list[StepRecord]
    verification: VerificationResult
    requirements: ServingRequirements = ServingRequirements()  # what serving it needs

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _StepOutput:
    graph: ServingGraph | None  # None once written (verification reads the files)
    tolerance: Tolerance
    details: dict
    requirements: ServingRequirements | None = None  # recorded with the model
    tflite: TFLiteConversion | None = None  # written beside saved_model.pb
    tflite_tolerance: Tolerance | None = None


def _frozen_graph(model_dir: Path, details: dict, reference: Reference) -> ServingGraph:
    """The model as a frozen graph; freezes it first if it still has variables."""
    graph = read_serving_graph(model_dir)
    if any(node.op in VARIABLE_OPS for node in all_nodes(graph.graph_def)):
        result = freeze(model_dir, reference.take_source_session(model_dir))
        details["implied_freeze"] = f"froze {result.variables_frozen} variables first"
        return result.graph
    return graph


def _freeze_step(model_dir: Path, argument: str | None, config: OptimizeConfig,
                 reference: Reference) -> _StepOutput:
    result = freeze(model_dir, reference.take_source_session(model_dir))
    return _StepOutput(result.graph, config.float32_tolerance,
                       {"variables_frozen": result.variables_frozen})


def _optimize_step(model_dir: Path, argument: str | None, config: OptimizeConfig,
                   reference: Reference) -> _StepOutput:
    passes = argument.split("+") if argument else list(config.passes)
    details: dict = {}
    graph, results = optimize(_frozen_graph(model_dir, details, reference), passes)
    details["passes"] = [asdict(r) for r in results]
    return _StepOutput(graph, config.float32_tolerance, details)


def _quantize_step(model_dir: Path, argument: str | None, config: OptimizeConfig,
                   reference: Reference) -> _StepOutput:
    details: dict = {}
    if argument == BFLOAT16_MODE:
        graph, details = to_bfloat16(_frozen_graph(model_dir, details, reference))
        return _StepOutput(graph, config.quantized_tolerance, details, BF16_REQUIREMENTS)
    result = quantize_weights(_frozen_graph(model_dir, details, reference),
                              argument or QuantizerSettings.mode, config.quantize_min_elements)
    details.update(mode=result.mode, tensors_quantized=result.tensors_quantized,
                   weight_bytes_before=result.weight_bytes_before,
                   weight_bytes_after=result.weight_bytes_after)
    return _StepOutput(result.graph, config.quantized_tolerance, details)


def _tflite_step(model_dir: Path, argument: str | None, config: OptimizeConfig,
                 reference: Reference) -> _StepOutput:
    details: dict = {}
    graph = _frozen_graph(model_dir, details, reference)
    conversion = convert_signatures(graph, argument or "dynamic_int8", reference)
    details.update(tflite_mode=conversion.mode, tflite_signatures=conversion.signatures,
                   tflite_skipped_signatures=conversion.skipped_signatures,
                   tflite_size_bytes=len(conversion.flatbuffer))
    tolerance = (TFLITE_FLOAT32_TOLERANCE if conversion.mode == "float32"
                 else config.quantized_tolerance)
    return _StepOutput(graph, config.float32_tolerance, details, conversion.requirements(),
                       conversion, tolerance)


StepFunction = Callable[[Path, str | None, OptimizeConfig, Reference], _StepOutput]
STEPS: dict[str, StepFunction] = {  # (model, argument, config, source reference) -> output
    "freeze": _freeze_step,
    "optimize": _optimize_step,
    "quantize": _quantize_step,
    "tflite": _tflite_step,
}


def parse_steps(text: str) -> list[Step]:
    """'freeze,optimize,quantize=int8' -> [Step('freeze'), Step('optimize'), ...]."""
    steps = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, argument = item.partition("=")
        steps.append(Step(name.strip(), argument.strip() or None))
    validate_steps(steps)
    return steps


def validate_steps(steps: list[Step]) -> None:
    if not steps:
        raise ServoptError(f"no steps given; known steps: {', '.join(STEPS)}")
    for step in steps:
        if step.name not in STEPS:
            raise ServoptError(f"unknown step '{step.name}'; known steps: {', '.join(STEPS)}")
        if step.name == "quantize" and step.argument and step.argument not in QUANTIZE_MODES:
            raise ServoptError(f"unknown quantization mode '{step.argument}'; known modes: "
                               f"{', '.join(QUANTIZE_MODES)}")
        if step.name == "tflite" and step.argument:
            validate_tflite_mode(step.argument)
        if (step.name == "tflite" or str(step) in FINAL_STEPS) and step is not steps[-1]:
            raise ServoptError(f"step '{step}' must be the last step: it makes a variant for "
                               "one runtime that later steps would not carry")
        if step.name == "optimize" and step.argument:
            validate_passes(step.argument.split("+"))
        if step.name == "freeze" and step.argument:
            raise ServoptError("the freeze step takes no argument")


def reference_for(source_dir: Path, config: OptimizeConfig, keep_session: bool = False
                  ) -> Reference:
    """The source's outputs on the verification inputs `config` asks for.

    This is the first thing that runs the source (optimize_model builds it before any
    step), so the safety scan runs here: a model with unsafe ops that `config` does not
    allow is refused before it executes. What the steps produce is derived from the
    source's graph and adds no such ops.
    """
    refuse_unsafe(source_dir, config.allowed_ops, "to optimize and verify it")
    return Reference(source_dir, config.num_examples, config.batch_size, config.seed,
                     config.examples, keep_session)


def optimize_model(source, out, steps: list[Step], config: OptimizeConfig = OptimizeConfig(),
                   reference: Reference | None = None, require_applied: bool = False
                   ) -> OptimizationReport:
    """Applies `steps` to the model at `source` and publishes the verified result at `out`.

    `reference` (from `reference_for`) lets a caller that verifies more than one output
    against the same source run the source only once. With `require_applied`, a run where
    every step was skipped publishes nothing and raises StepSkipped with the reasons (for
    variants, where an unchanged copy would be mislabelled).
    """
    validate_steps(steps)
    if config.quantize_min_elements < 1 or config.num_examples < 1 or config.batch_size < 1:
        raise ServoptError("quantize_min_elements, num_examples and batch_size must be >= 1")
    source_dir = resolve_saved_model_dir(source)
    refuse_outside_links(source_dir)  # the output copies the source's assets
    before = describe(source_dir)
    records: list[StepRecord] = []
    with (staged_output(out, source_dir) as staging,
          tempfile.TemporaryDirectory(prefix="servopt-") as work):
        reference = reference or reference_for(source_dir, config, keep_session=True)
        current, requirements = source_dir, ServingRequirements()
        applied: list[tuple[StepRecord, _StepOutput, Path]] = []
        for index, step in enumerate(steps):
            try:
                produced = STEPS[step.name](current, step.argument, config, reference)
            except StepSkipped as skipped:
                records.append(StepRecord(str(step), "skipped", reason=str(skipped)))
                continue
            finally:
                reference.close_source_session()  # only the first step can use it
            current = Path(work) / f"{index}-{step.name}"
            current.mkdir()
            produced = _write_step(produced, current)
            release_freed_memory([current])  # and what the step built on the way
            records.append(StepRecord(str(step), "applied", details=produced.details,
                                      model=describe(current)))
            applied.append((records[-1], produced, current))
            requirements = produced.requirements or requirements
        if require_applied and not applied:
            raise StepSkipped("; ".join(f"{r.step}: {r.reason}" for r in records))
        if applied:
            _verify_steps(applied, reference, out, config.verify_each_step)
            verification = applied[-1][0].verification
        shutil.copytree(current, staging, dirs_exist_ok=True)
        if not applied:  # nothing applied: check the copy serves like the source
            verification = reference.compare(staging, FLOAT32_TOLERANCE,
                                             read_requirements(staging).needs_onednn)
    return OptimizationReport(str(source_dir), str(out), before, describe(out), records,
                              verification, requirements)


def _write_step(produced: _StepOutput, step_dir: Path) -> _StepOutput:
    """A step's model as a SavedModel, with model.tflite and requirements where it has them;
    returns `produced` without what is now on disk (the graph, the flatbuffer: a large
    model's weights, held once per step until the last is verified otherwise)."""
    write_serving_graph(produced.graph, step_dir)
    if produced.requirements is not None:
        write_requirements(step_dir, produced.requirements)
    tflite = produced.tflite
    if tflite is not None:
        tflite_file(step_dir).write_bytes(tflite.flatbuffer)
        tflite = replace(tflite, flatbuffer=b"")
    return replace(produced, graph=None, tflite=tflite)


def _verify_steps(applied: list[tuple[StepRecord, _StepOutput, Path]], reference: Reference,
                  out, each_step: bool) -> None:
    """Verifies what will be published (the last step's model) against the source, or every
    step's model with `each_step`. When the published model fails, the earlier steps are
    verified too, so the error names the first step that left its tolerance."""
    for record, produced, step_dir in (applied if each_step else applied[-1:]):
        try:
            _verify_step(record, produced, step_dir, reference, out)
        except VerificationError:
            for earlier in applied[:-1]:
                if earlier[0].verification is None:
                    _verify_step(*earlier, reference, out)
            raise


def _verify_step(record: StepRecord, produced: _StepOutput, step_dir: Path,
                 reference: Reference, out) -> None:
    """Runs the step's model on every runtime it has (Session; TFLite interpreter for
    model.tflite) and compares with the source; raises VerificationError outside tolerance."""
    needs_onednn = produced.requirements is not None and produced.requirements.needs_onednn
    record.verification = reference.compare(step_dir, produced.tolerance, needs_onednn)
    checks = [("", record.verification)]
    if produced.tflite is not None:
        record.tflite_verification = verify_tflite(
            tflite_file(step_dir), reference, produced.tflite_tolerance,
            produced.tflite.signatures)
        checks.append(("model.tflite: ", record.tflite_verification))
    for prefix, check in checks:
        if not check.passed:
            raise VerificationError(
                f"step '{record.step}' changed the model's outputs beyond tolerance: {prefix}"
                f"{check.failures[0]}; nothing was written to {out}")
