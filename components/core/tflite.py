"""TFLite inside the SavedModel, for TF Serving's TFLite runtime.

TF Serving started with `--prefer_tflite_model=true` serves `model.tflite` from the
SavedModel version directory and nothing else of it (see tflite_session: builtin ops,
signatures only from the `signature_defs_metadata` entry, only the primary subgraph
runs); without the flag it serves `saved_model.pb`. So a TFLite variant is the fp32
SavedModel plus `model.tflite`, both verified, the latter through the TfLiteSession model.

Every convertible signature is converted into ONE function, so that the primary subgraph
computes all of them (TF Serving runs no other subgraph); its input and output tensors
are renamed to the SavedModel's tensor names, and `signature_defs_metadata` holds the
SavedModel's SignatureDefs of those signatures (keys, method names, tensor names) as TF
Serving reads them. The converter's SignatureDef table is rewritten to the same
signatures (for LiteRT's signature runners; TF Serving does not read it).

Modes: `float32` (plain conversion), `float16` (fp16 weights), `dynamic_int8` (int8
weights, activations quantized at run time), `full_int8` (int8 weights and activations,
calibrated on the verification inputs: the eval split when Examples are given). Inputs and
outputs stay float32, so the same Predict requests work on both paths. A signature that
does not convert with builtin ops (e.g. tf.Example parsing: TF Serving registers TFLite's
custom ParseExample op, but TensorFlow here has no kernel for it, so the result could not
be verified) is left out with the converter's reason and recorded as a signature the
variant lacks: a version served from model.tflite does not serve it at all, and the gate
refuses the variant unless the thresholds name the signatures clients need.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from components.core.tf_setup import quiet_stderr, tf

import numpy as np
from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.lite.python import schema_py_generated as schema

from components.core.choices import validate_tflite_mode
from components.core.errors import ServoptError, StepSkipped
from components.core.inputs import GENERATED_INPUTS
from components.core.model_io import ServingGraph, write_serving_graph
from components.core.requirements import (
    PREFER_TFLITE_FLAG,
    TFLITE_MODEL_FILE,
    TFLITE_RUNTIME,
    ServingRequirements,
)
from components.core.rewrite import CannotUnfuse, unfuse
from components.core.safety.allowlist import library_of
from components.core.serving_session import first_line
from components.core.tflite_session import (
    TfLiteSession,
    TfLiteSessionError,
    pack_model,
    with_signature_defs_metadata,
)
from components.core.verify import Reference, Tolerance, VerificationResult, compare_outputs

TFLITE_PRECISION = {"float32": "float32", "float16": "float16-weights",
                    "dynamic_int8": "int8-dynamic-range", "full_int8": "int8"}
CALIBRATION_BATCHES = 100  # representative samples (batch 1 each) for full_int8
_COMBINED = "servopt_all"  # the one function every converted signature is converted in


@dataclass
class TFLiteConversion:
    flatbuffer: bytes
    mode: str
    signatures: list[str]
    skipped_signatures: dict[str, str] = field(default_factory=dict)  # name -> reason

    def requirements(self) -> ServingRequirements:
        lacks = "; ".join(f"'{k}' is not served from model.tflite (TF Serving does not fall "
                          f"back to saved_model.pb): {v}"
                          for k, v in self.skipped_signatures.items())
        return ServingRequirements(runtime=TFLITE_RUNTIME, precision=TFLITE_PRECISION[self.mode],
                                   server_flags=(PREFER_TFLITE_FLAG,), note=lacks,
                                   lacks_signatures=dict(self.skipped_signatures))


# --- conversion ------------------------------------------------------------------------

def _converter(model_dir: Path, signatures: list[str], mode: str,
               representative: Reference | None, feeds: dict | None = None):
    """`feeds`: for the combined function, its input key -> (signature, input key)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(model_dir),
                                                         signature_keys=signatures)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "full_int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: _calibration_samples(
            representative, signatures, feeds)
    return converter


def _rows(reference: Reference, name: str) -> Iterator[dict[str, np.ndarray]]:
    """The verification inputs of signature `name`, one example (batch 1) at a time."""
    for feed in reference.inputs[name]:
        for i in range(len(next(iter(feed.values())))):
            yield {k: v[i:i + 1] for k, v in feed.items()}


def _calibration_samples(reference: Reference, signatures: list[str],
                         feeds: dict | None) -> Iterator:
    """(signature, inputs) samples of batch 1, drawn from the verification inputs; for
    the combined function, each sample takes every input from its source signature."""
    if feeds is None:
        for name in signatures:
            for count, row in enumerate(_rows(reference, name)):
                if count == CALIBRATION_BATCHES:
                    break
                yield name, row
        return
    sources = {name for name, _ in feeds.values()}
    rows = {name: list(_rows(reference, name))[:CALIBRATION_BATCHES] for name in sources}
    for i in range(min(len(r) for r in rows.values())):
        yield signatures[0], {key: rows[name][i][input_key]
                              for key, (name, input_key) in feeds.items()}


def _convert(model_dir: Path, signatures: list[str], mode: str,
             reference: Reference | None, feeds: dict | None = None) -> bytes:
    with warnings.catch_warnings(), quiet_stderr(replay_on_error=False):  # MLIR dumps
        warnings.simplefilter("ignore")
        return _converter(model_dir, signatures, mode, reference, feeds).convert()


@dataclass
class _Combined:
    """Every converted signature as one function: its SignatureDef, and for each of its
    input (output) keys the SavedModel tensor name it stands for."""

    signature: meta_graph_pb2.SignatureDef
    tensor_of: dict[str, str]  # combined key -> the SavedModel's tensor name
    feeds: dict[str, tuple[str, str]]  # combined input key -> (signature, input key)
    same_as: dict[str, str]  # signature -> an earlier one computing the same function


def _structural_hashes(graph_def: graph_pb2.GraphDef, placeholders: dict[str, str]
                       ) -> dict[str, str]:
    """node name -> a hash of what it computes: its op, attrs and inputs' hashes, with the
    signature inputs in `placeholders` (node -> key:dtype) hashed by key, not by name."""
    nodes = {node.name: node for node in graph_def.node}
    hashes: dict[str, str] = {}
    for root in nodes:
        stack = [root]
        while stack:
            name = stack[-1]
            if name in hashes:
                stack.pop()
                continue
            node = nodes[name]
            sources = [i.lstrip("^").split(":")[0] for i in node.input]
            pending = [n for n in sources if n in nodes and n not in hashes]
            if pending and name not in placeholders:
                stack.extend(pending)
                continue
            stack.pop()
            digest = hashlib.sha256()
            if name in placeholders:
                digest.update(f"input {placeholders[name]}".encode())
            else:
                digest.update(node.op.encode())
                for key in sorted(k for k in node.attr if not k.startswith("_")):
                    digest.update(key.encode())
                    digest.update(node.attr[key].SerializeToString(deterministic=True))
                for given in node.input:
                    source, _, port = given.lstrip("^").partition(":")
                    digest.update(f"{given[:1] == '^'}{hashes.get(source, source)}:{port}"
                                  .encode())
            hashes[name] = digest.hexdigest()
    return hashes


def _duplicates(graph: ServingGraph, names: list[str]) -> dict[str, str]:
    """Signatures that compute the same function as an earlier one (same input and output
    keys; e.g. Keras's `serve` and `serving_default`): converted once, since TF Serving
    runs the whole primary subgraph on every request."""
    def shape(signature: meta_graph_pb2.SignatureDef) -> tuple:
        inputs = {info.name.split(":")[0]: f"{alias}:{info.dtype}"
                  for alias, info in signature.inputs.items()}
        hashes = _structural_hashes(graph.graph_def, inputs)
        outputs = []
        for alias in sorted(signature.outputs):
            node, _, port = signature.outputs[alias].name.partition(":")
            outputs.append((alias, hashes.get(node, node), port or "0"))
        return tuple(sorted(inputs.values())), tuple(outputs)

    seen: dict[tuple, str] = {}
    same_as = {}
    for name in names:
        key = shape(graph.signatures[name])
        if key in seen:
            same_as[name] = seen[key]
        else:
            seen[key] = name
    return same_as


def _combine(graph: ServingGraph, names: list[str]) -> _Combined:
    combined = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    key_of: dict[tuple[str, str], str] = {}  # (kind, tensor name) -> combined key
    tensor_of, feeds = {}, {}
    same_as = _duplicates(graph, names)
    for name in names:
        if name in same_as:
            continue
        signature = graph.signatures[name]
        for kind, infos, target in (("i", signature.inputs, combined.inputs),
                                    ("o", signature.outputs, combined.outputs)):
            for alias in sorted(infos):
                info = infos[alias]
                if (kind, info.name) not in key_of:
                    key = f"{kind}{len(target)}"
                    key_of[kind, info.name] = key
                    target[key].CopyFrom(info)
                    tensor_of[key] = info.name
                    if kind == "i":
                        feeds[key] = (name, alias)
    return _Combined(combined, tensor_of, feeds, same_as)


def _serving_flatbuffer(flatbuffer: bytes, graph: ServingGraph, names: list[str],
                        combined: _Combined) -> bytes:
    """The converted combined function as TF Serving serves it: its primary subgraph's
    inputs and outputs named as the SavedModel's tensors, the SignatureDef table and
    `signature_defs_metadata` holding the SavedModel's signatures `names` (a duplicate
    signature names the tensors of the one it duplicates)."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    table = model.signatureDefs[0]
    if len(model.signatureDefs) != 1 or table.subgraphIndex != 0:
        raise ServoptError("the TFLite converter did not put the combined signature in the "
                           "primary subgraph, the only one TF Serving runs")
    index_of = {m.name.decode(): m.tensorIndex for m in [*table.inputs, *table.outputs]}
    tensors = model.subgraphs[0].tensors
    for key, tensor_name in combined.tensor_of.items():
        tensors[index_of[key]].name = tensor_name.encode()
    index_by_tensor = {combined.tensor_of[key]: index for key, index in index_of.items()}
    model.signatureDefs, metadata = [], {}
    for name in names:
        served = meta_graph_pb2.SignatureDef()
        served.CopyFrom(graph.signatures[name])
        computed = graph.signatures[combined.same_as.get(name, name)]
        entry = schema.SignatureDefT()
        entry.signatureKey, entry.subgraphIndex = name.encode(), 0
        entry.inputs, entry.outputs = [], []
        for infos, computed_infos, maps in ((served.inputs, computed.inputs, entry.inputs),
                                            (served.outputs, computed.outputs,
                                             entry.outputs)):
            for alias in sorted(infos):
                infos[alias].name = computed_infos[alias].name
                tensor_map = schema.TensorMapT()
                tensor_map.name = alias.encode()
                tensor_map.tensorIndex = index_by_tensor[infos[alias].name]
                maps.append(tensor_map)
        model.signatureDefs.append(entry)
        metadata[name] = served
    return with_signature_defs_metadata(pack_model(model), metadata)


def _write_source(scratch: str, graph: ServingGraph, names: list[str]
                  ) -> tuple[_Combined, Path]:
    """The (unfused) graph as a SavedModel that also holds the combined function."""
    combined = _combine(graph, names)
    source = Path(scratch) / f"model-{len(names)}"
    source.mkdir()
    write_serving_graph(ServingGraph(
        graph.graph_def, {**graph.signatures, _COMBINED: combined.signature},
        graph.tags, graph.init_op, graph.asset_file_defs), source)
    return combined, source


def convert_signatures(graph: ServingGraph, mode: str, reference: Reference
                       ) -> TFLiteConversion:
    """Converts every signature that converts with builtin ops, all in the primary
    subgraph, with `signature_defs_metadata`; skips if none converts."""
    validate_tflite_mode(mode)
    names = [n for n in graph.signatures if n in reference.inputs]
    skipped: dict[str, str] = {name: reason for name in names
                               if (reason := _runtime_lacks(graph, name))}
    names = [n for n in names if n not in skipped]
    if not names:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise StepSkipped(f"no signature can run in TF Serving's TFLite runtime: {reasons}")
    with tempfile.TemporaryDirectory(prefix="servopt-tflite-") as scratch:
        try:  # Grappler's fused ops are TF-internal: the converter reads standard ops
            standard = graph.with_graph(unfuse(graph.graph_def))
        except CannotUnfuse as err:
            raise StepSkipped(f"{err} for TFLite") from None
        combined, source = _write_source(scratch, standard, names)
        try:
            flatbuffer = _convert(source, [_COMBINED], mode, reference, combined.feeds)
        except Exception:  # the converter raises many types; find the signatures that fail
            for name in names:
                try:
                    _convert(source, [name], mode, reference)
                except Exception as err:  # ConverterError, ValueError, RuntimeError, ...
                    skipped[name] = _converter_reason(err)
            names = [n for n in names if n not in skipped]
            if not names:
                reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
                raise StepSkipped(f"no signature converts to TFLite {mode} with builtin ops "
                                  f"(TF Serving's TfLiteSession has no Flex ops): {reasons}"
                                  ) from None
            combined, source = _write_source(scratch, standard, names)
            try:
                flatbuffer = _convert(source, [_COMBINED], mode, reference, combined.feeds)
            except Exception as err:
                raise StepSkipped(f"TFLite {mode} conversion failed: "
                                  f"{_converter_reason(err)}") from None
    served = _serving_flatbuffer(flatbuffer, graph, names, combined)
    lost = inputs_lost_on_resize(served, [
        {info.name for info in graph.signatures[combined.same_as.get(n, n)].inputs.values()}
        for n in names])
    if lost:
        raise StepSkipped(lost)
    return TFLiteConversion(served, mode, names, skipped)


def inputs_lost_on_resize(flatbuffer: bytes, requests: list[set[str]]) -> str | None:
    """Why TF Serving would run this model on a lost input, or None.

    TF Serving's TfLiteSession fills inputs one at a time and, for each whose shape differs
    from the interpreter's, resizes it and calls AllocateTensors before copying it in
    (tensorflow_serving/servables/tensorflow/tflite_session.cc `SetInputAndInvokeMiniBatch`).
    AllocateTensors re-plans the arena, so an input copied before a later input's resize
    can lose its data: a model with several resizable inputs then computes, on the first
    request at each new shape, on whatever the arena held (a transformer's token ids read
    as garbage fail TFLite's GATHER with "gather index out of bounds"). This replays that
    sequence for the inputs of each request (`requests`: the tensor names one signature
    takes), both ways round, without running the model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)
    resizable = [d for d in probe.get_input_details()
                 if d["dtype"] not in (np.bytes_, np.object_)
                 and any(size < 0 for size in d["shape_signature"])]
    for request in requests:
        inputs = [d for d in resizable if d["name"] in request]
        if len(inputs) > 1:
            lost = _lost_on_resize(flatbuffer, inputs)
            if lost:
                return lost
    return None


def _lost_on_resize(flatbuffer: bytes, inputs: list[dict]) -> str | None:
    for new_size, order in ((n, o) for n in (3, 64) for o in (inputs, inputs[::-1])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)
        interpreter.allocate_tensors()
        written = {}
        for detail in order:
            shape = [new_size if size < 0 else size for size in detail["shape_signature"]]
            interpreter.resize_tensor_input(detail["index"], shape)
            try:
                interpreter.allocate_tensors()
            except RuntimeError as err:
                return (f"in TF Serving's TFLite runtime, resizing input '{detail['name']}' "
                        "before the others fails (TfLiteSession resizes and allocates each "
                        "input in turn, tflite_session.cc SetInputAndInvokeMiniBatch): "
                        f"{first_line(err)}; serve saved_model.pb")
            value = (np.arange(int(np.prod(shape))) % 7 + 1).reshape(shape).astype(
                detail["dtype"])
            interpreter.set_tensor(detail["index"], value)
            written[detail["name"]] = (detail["index"], value)
        for name, (index, value) in written.items():
            if not np.array_equal(interpreter.get_tensor(index), value):
                return (f"in TF Serving's TFLite runtime, input '{name}' would be lost when "
                        "a later input is resized: TfLiteSession resizes and allocates each "
                        "input before copying it in (tflite_session.cc "
                        "SetInputAndInvokeMiniBatch), and with several resizable inputs an "
                        "input copied first is re-planned away, so the first request at each "
                        "new batch size computes on garbage; serve saved_model.pb")
    return None


def _runtime_lacks(graph: ServingGraph, name: str) -> str | None:
    """Why signature `name` cannot run in TF Serving's TFLite runtime, read before
    converting: it computes with a custom-op library's ops (TF Text's tokenizers, ...).
    TF Serving links their TensorFlow kernels (safety/libraries.py), but its TFLite
    interpreters register TFLite's builtin ops and the ParseExample custom op only
    (tensorflow_serving/servables/tensorflow/tflite_interpreter_pool.cc, `BuiltinOpResolver`
    + `AddParseExampleOp`), so no conversion of them (Flex or custom ops) would be served."""
    signature = graph.signatures[name]
    nodes = {node.name: node for node in graph.graph_def.node}
    functions = {f.signature.name: f for f in graph.graph_def.library.function}
    pending = [t.name.split(":")[0] for t in signature.outputs.values()]
    seen: set[str] = set()
    ops: set[str] = set()
    while pending:
        node = nodes.get(pending.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        ops.add(node.op)
        ops.update(n.op for f in _functions_of(node, functions) for n in f.node_def)
        pending.extend(i.lstrip("^").split(":")[0] for i in node.input)
    libraries: dict[str, list[str]] = {}
    for op in sorted(ops):
        library = library_of(op)
        if library is not None:
            libraries.setdefault(library.name, []).append(op)
    if not libraries:
        return None
    used = "; ".join(f"{', '.join(found)} ({library})" for library, found in libraries.items())
    return (f"it runs {used}, which TF Serving's TFLite runtime lacks: its interpreters "
            "have TFLite's builtin ops and ParseExample only (tflite_interpreter_pool.cc); "
            "serve it from saved_model.pb, where TF Serving links these ops")


def _functions_of(node, functions: dict) -> list:
    """The library functions `node` runs, however deep (its op, attributes naming one)."""
    found, pending = [], [node.op, *(a.func.name for a in node.attr.values()
                                     if a.HasField("func"))]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        found.append(functions[name])
        for inner in functions[name].node_def:
            pending += [inner.op, *(a.func.name for a in inner.attr.values()
                                    if a.HasField("func"))]
    return found


def _converter_reason(err: Exception) -> str:
    """The converter's complaint in a line: the ops TFLite has no builtin kernel for."""
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op",
                                str(err))))
    if ops:
        return f"ops with no TFLite builtin kernel: {', '.join(ops)}"
    return first_line(err)[:300]


# --- running, as TF Serving runs it -------------------------------------------------

def verify_tflite(path: Path, reference: Reference, tolerance: Tolerance,
                  signatures: list[str]) -> VerificationResult:
    """Runs `signatures` of the model.tflite at `path` the way TF Serving's TfLiteSession
    would (see tflite_session) and compares with the source. Fails, with the reason, where
    TF Serving would not serve a signature under the source's name and keys."""
    try:
        session = TfLiteSession(path)
    except TfLiteSessionError as err:
        return _failed(reference, tolerance, f"TF Serving would not load it: {err}")
    if session.generated:
        return _failed(reference, tolerance, (
            f"{path} has no signature_defs_metadata, so TF Serving would serve only a "
            f"generated 'serving_default' with keys {_keys(session.signatures)}, not the "
            "SavedModel's signatures; convert it again with this version of servopt"))
    produced, problems = {}, []
    for name in signatures:
        try:
            produced[name] = [session.run(name, feed) for feed in reference.inputs[name]]
        except TfLiteSessionError as err:
            hint = (f" ({GENERATED_INPUTS})" if name in getattr(reference, "generated", ())
                    else "")
            problems.append(f"signature '{name}': {err}{hint}")
    result = compare_outputs(reference, produced, tolerance, signatures)
    if problems:
        result.failures[:0] = problems
        result.passed = False
    return result


def _keys(signatures: dict[str, meta_graph_pb2.SignatureDef]) -> str:
    signature = next(iter(signatures.values()))
    return f"inputs {sorted(signature.inputs)}, outputs {sorted(signature.outputs)}"


def _failed(reference: Reference, tolerance: Tolerance, reason: str) -> VerificationResult:
    return VerificationResult(num_examples=reference.num_examples, max_abs_diff=float("inf"),
                              top1_agreement=None, tolerance=tolerance.describe(),
                              passed=False, failures=[reason])


def tflite_file(model_dir: Path) -> Path:
    return Path(model_dir) / TFLITE_MODEL_FILE
