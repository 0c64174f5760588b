"""TF Serving's TFLite runtime (`TfLiteSession`), modelled rule by rule on its source.

TF Serving started with `--prefer_tflite_model=true` loads a version directory holding
`model.tflite` with `LoadTfLiteModel` alone (tensorflow/serving
servables/tensorflow/saved_model_bundle_factory.cc): `saved_model.pb` is not read, so the
version serves exactly the signatures the TFLite model declares. Everything here that
runs `model.tflite` as TF Serving would (the benchmark's TFLite rows, the verification
of TFLite variants, the warm-up replay) goes through `TfLiteSession`, so it refuses what
TF Serving refuses. Sources (tensorflow/serving at commit 9d981c5; tensorflow at HEAD):

- Signatures (servables/tensorflow/tflite_session.cc, `TfLiteSession::Create`): ONLY the
  flatbuffer metadata entry `signature_defs_metadata`, read by `tflite::GetSignatureDefMap`
  (tensorflow lite/tools/signature/signature_def_util.cc): a flexbuffer map, signature
  key -> serialized `tensorflow.SignatureDef`. The converter's own SignatureDef table is
  not read. Each tensor name in it must name an input (output) tensor of the primary
  subgraph, as given or cut at ':' (`FixTfLiteTensorName`), or the load fails.
- Without that entry (tflite_session.cc): one generated `serving_default`, method
  Predict, whose input and output keys are the primary subgraph's tensor names cut at
  ':' (`TfToTfLiteLegacyTensorName`).
- Only the primary subgraph runs (tflite_session.cc: the tensor maps come from
  `interpreter->inputs()` / `outputs()`, `Invoke()` runs subgraph 0): every signature of
  a version must be computed by subgraph 0.
- Ops (servables/tensorflow/tflite_interpreter_pool.cc): `BuiltinOpResolver` plus TFLite's
  custom ParseExample op (`AddParseExampleOp`); no Flex ops. TensorFlow's Python
  interpreter has no ParseExample kernel, so a model using it cannot be run (verified)
  here and is refused with that reason.
- Threads (tflite_interpreter_pool.cc): every interpreter is built with ONE thread;
  `--num_tflite_pools` interpreters, a request runs whole on one free interpreter.
- Requests: the Predict API (predict_util.cc): the signature's method must be Predict,
  Classify or Regress; the request's input keys must be the signature's; an input whose
  shape differs is resized (tflite_session.cc `SetInputAndInvokeMiniBatch`). Classify,
  Regress and MultiInference requests feed serialized tf.Example (ParseExample), which
  cannot run here: this model serves Predict only.
"""

from __future__ import annotations

import queue
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from components.core.tf_setup import quiet_stderr, tf, without_noise

import flatbuffers
import numpy as np
from flatbuffers import flexbuffers
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.lite.python import schema_py_generated as schema

from components.core.errors import ServoptError, first_line

# lite/tools/signature/signature_def_util.h: kSignatureDefsMetadataName
SIGNATURE_DEFS_METADATA = "signature_defs_metadata"
DEFAULT_SIGNATURE = "serving_default"  # kDefaultServingSignatureDefKey
PREDICT_METHOD = "tensorflow/serving/predict"  # kPredictMethodName
# predict_util.cc VerifySignature: the methods a Predict request may run
PREDICT_API_METHODS = (PREDICT_METHOD, "tensorflow/serving/classify",
                       "tensorflow/serving/regress")
# tflite_interpreter_pool.cc: AddParseExampleOp registers these custom ops
PARSE_EXAMPLE_OPS = ("ParseExample", "ParseExampleV2")
THREADS_PER_INTERPRETER = 1  # tflite_interpreter_pool.cc: num_threads = 1


class TfLiteSessionError(ServoptError):
    """TF Serving would refuse to load this model.tflite, or to answer this request."""


# --- signature_defs_metadata (lite/tools/signature/signature_def_util.cc) ---------------

def _model(content: bytes):
    try:
        return schema.Model.GetRootAsModel(content, 0)
    except Exception as err:  # flatbuffers raises struct/index errors on garbage
        raise TfLiteSessionError(f"not a TFLite flatbuffer ({first_line(err)})") from None


def read_signature_defs_metadata(content: bytes
                                 ) -> dict[str, meta_graph_pb2.SignatureDef] | None:
    """`GetSignatureDefMap`: the metadata entry's SignatureDefs; None without the entry.

    The C++ reads each value with `AsString().c_str()`, so a value is cut at its first
    NUL byte before it is parsed; this does the same (the writer never emits one)."""
    model = _model(content)
    for i in range(model.MetadataLength()):
        metadata = model.Metadata(i)
        if (metadata.Name() or b"").decode() != SIGNATURE_DEFS_METADATA:
            continue
        data = model.Buffers(metadata.Buffer()).DataAsNumpy()
        if not isinstance(data, np.ndarray):
            raise TfLiteSessionError(f"'{SIGNATURE_DEFS_METADATA}' points to an empty buffer")
        try:
            entries = flexbuffers.GetRoot(data.tobytes()).AsMap
            serialized = {key.AsKey: value.AsStringBytes.split(b"\0")[0]
                          for key, value in zip(entries.Keys, entries.Values, strict=True)}
        except Exception as err:
            raise TfLiteSessionError(f"Error reading signature def map: {first_line(err)}"
                                     ) from None
        signatures = {}
        for key, value in serialized.items():
            try:
                signatures[key] = meta_graph_pb2.SignatureDef.FromString(value)
            except Exception:
                raise TfLiteSessionError("Cannot parse signature def found in flatbuffer."
                                         ) from None
        return signatures
    return None


def _nul_free(signature_def: meta_graph_pb2.SignatureDef) -> bytes:
    """The serialized SignatureDef, free of NUL bytes (see read_signature_defs_metadata).
    A NUL comes only from a zero varint: an empty (scalar) shape or a 0-sized dimension;
    such shapes are dropped (a Predict request is not checked against them)."""
    serialized = signature_def.SerializeToString()
    if b"\0" not in serialized:
        return serialized
    stripped = meta_graph_pb2.SignatureDef()
    stripped.CopyFrom(signature_def)
    for infos in (stripped.inputs, stripped.outputs):
        for info in infos.values():
            if b"\0" in info.tensor_shape.SerializeToString() or not info.tensor_shape.dim:
                info.ClearField("tensor_shape")
    serialized = stripped.SerializeToString()
    if b"\0" in serialized:
        raise ServoptError("a SignatureDef serializes with a NUL byte, which TF Serving's "
                           "signature_defs_metadata reader would cut; rename its keys")
    return serialized


def with_signature_defs_metadata(content: bytes,
                                 signatures: Mapping[str, meta_graph_pb2.SignatureDef]
                                 ) -> bytes:
    """`SetSignatureDefMap`: `content` with the metadata entry set to `signatures`."""
    if not signatures:
        raise ServoptError("signature_def_map should not be empty")
    builder = flexbuffers.Builder()
    with builder.Map():
        for key in sorted(signatures):
            builder.Key(key)
            # C++ writes fbb.String(key, bytes): a STRING holding the serialized proto.
            # Python's Builder.String takes text only, so the same bytes are written
            # through its blob writer with the STRING type.
            builder._WriteBlob(_nul_free(signatures[key]), append_zero=True,
                               type_=flexbuffers.Type.STRING)
    data = builder.Finish()
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    model.metadata = model.metadata or []
    model.buffers = model.buffers or []
    entry = next((m for m in model.metadata
                  if (m.name or b"").decode() == SIGNATURE_DEFS_METADATA), None)
    if entry is None:
        entry = schema.MetadataT()
        entry.name, entry.buffer = SIGNATURE_DEFS_METADATA, len(model.buffers)
        model.buffers.append(schema.BufferT())
        model.metadata.append(entry)
    model.buffers[entry.buffer].data = np.frombuffer(bytes(data), dtype=np.uint8)
    return pack_model(model)


def pack_model(model) -> bytes:
    """A ModelT as a flatbuffer with TFLite's file identifier (`FinishModelBuffer`)."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# --- tensor names (tflite_session.cc) ---------------------------------------------------

def legacy_tensor_name(name: str) -> str:
    """`TfToTfLiteLegacyTensorName`: a TF tensor name cut at the first ':'."""
    return name.split(":", 1)[0]


def fix_tensor_name(tensors: Mapping[str, int], name: str) -> str:
    """`FixTfLiteTensorName`: `name` if a tensor has it, else its legacy form; or fails."""
    if name in tensors:
        return name
    if legacy_tensor_name(name) in tensors:
        return legacy_tensor_name(name)
    raise TfLiteSessionError(f"Unknown tensor '{name}'.")


def _tensor_map(details: list[dict], kind: str) -> dict[str, int]:
    """`GetTensorInfoMap`: the primary subgraph's input or output tensors by name."""
    tensors: dict[str, int] = {}
    for detail in details:
        if not detail["name"]:
            raise TfLiteSessionError(f"{kind} name missing for tensor index: "
                                     f"{detail['index']}")
        if detail["name"] in tensors:
            raise TfLiteSessionError(f"{kind} tensor name: {detail['name']} has multiple "
                                     "indices")
        tensors[detail["name"]] = detail["index"]
    return tensors


def _tensor_info(detail: dict) -> meta_graph_pb2.TensorInfo:
    """`TfLiteTensorToTensorInfo`: name, dtype and the tensor's current dims."""
    info = meta_graph_pb2.TensorInfo(name=detail["name"],
                                     dtype=tf.as_dtype(detail["dtype"]).as_datatype_enum)
    for size in detail["shape"]:
        info.tensor_shape.dim.add().size = int(size)
    return info


@dataclass(frozen=True)
class ResolvedSignatures:
    """The signatures TF Serving serves from a model.tflite, with tensor names fixed."""

    signatures: dict[str, meta_graph_pb2.SignatureDef]
    generated: bool  # True: no signature_defs_metadata, one generated serving_default


def resolve_signatures(content: bytes, inputs: list[dict], outputs: list[dict]
                       ) -> ResolvedSignatures:
    """`TfLiteSession::Create`'s signature rules, for the primary subgraph's input and
    output tensor details (as the interpreter lists them)."""
    input_map, output_map = _tensor_map(inputs, "Input"), _tensor_map(outputs, "Output")
    try:
        metadata = read_signature_defs_metadata(content)
    except TfLiteSessionError as err:
        raise TfLiteSessionError(f"Invalid SignatureDefs found in TfLite model: {err}"
                                 ) from None
    if metadata:  # has_lite_signature_def = !signature_defs.empty()
        fixed = {}
        for key, signature in metadata.items():
            signature = meta_graph_pb2.SignatureDef.FromString(signature.SerializeToString())
            for kind, infos, tensors in (("input", signature.inputs, input_map),
                                         ("output", signature.outputs, output_map)):
                for alias, info in infos.items():
                    try:
                        info.name = fix_tensor_name(tensors, info.name)
                    except TfLiteSessionError as err:
                        raise TfLiteSessionError(
                            f"Signature {kind} {alias} references an unknown tensor: {err} "
                            f"(signature '{key}'; the primary subgraph's {kind}s: "
                            f"{sorted(tensors)})") from None
            fixed[key] = signature
        return ResolvedSignatures(fixed, generated=False)
    generated = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
    for infos, details in ((generated.inputs, inputs), (generated.outputs, outputs)):
        for detail in details:
            infos[legacy_tensor_name(detail["name"])].CopyFrom(_tensor_info(detail))
    return ResolvedSignatures({DEFAULT_SIGNATURE: generated}, generated=True)


# --- ops (tflite_interpreter_pool.cc) ---------------------------------------------------

def custom_ops(content: bytes) -> list[str]:
    """The custom ops the model uses (BuiltinOpResolver resolves every other op)."""
    model = _model(content)
    names = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.add((code.CustomCode() or b"").decode())
    return sorted(names)


def _check_ops(path: Path, content: bytes) -> None:
    unknown = [op for op in custom_ops(content) if op not in PARSE_EXAMPLE_OPS]
    if unknown:
        raise TfLiteSessionError(
            f"{path}: uses custom ops {', '.join(unknown)}, which TF Serving's interpreters "
            "do not register (builtin ops and ParseExample only); convert with builtin ops")
    if custom_ops(content):
        raise TfLiteSessionError(
            f"{path}: uses TFLite's custom ParseExample op, which TF Serving registers but "
            "this machine's TensorFlow cannot run, so it cannot be verified here")


# --- the session ------------------------------------------------------------------------

def _interpreter(path: Path, content: bytes):
    with warnings.catch_warnings():  # tf.lite.Interpreter warns that LiteRT replaces it
        warnings.simplefilter("ignore")
        try:
            return tf.lite.Interpreter(model_content=content,
                                       num_threads=THREADS_PER_INTERPRETER)
        except (ValueError, RuntimeError) as err:
            raise TfLiteSessionError(f"{path}: Cannot build Interpreter from buffer: "
                                     f"{first_line(err)}; convert the model again") from None


class TfLiteSession:
    """A model.tflite as TF Serving's TfLiteSession loads and runs it: `pools` 1-thread
    interpreters, signatures resolved by TF Serving's rules, Predict requests only.
    Thread-safe: concurrent callers each take a free interpreter (blocking while all are
    busy), as TF Serving's interpreter pool does."""

    def __init__(self, path: str | Path, pools: int = 1):
        self.path = Path(path)
        try:
            content = self.path.read_bytes()
        except OSError as err:
            raise ServoptError(f"{self.path}: cannot read the TFLite model ({err.strerror})"
                               ) from None
        try:
            _model(content)
        except TfLiteSessionError as err:
            raise TfLiteSessionError(f"{self.path}: {err}") from None
        _check_ops(self.path, content)
        # The first interpreter with XNNPACK prints TFLite's "Created TensorFlow Lite XNNPACK
        # delegate for CPU" (start-up noise, tf_setup.STARTUP_NOISE): left out here.
        with quiet_stderr(keep=without_noise):
            first = _interpreter(self.path, content)
            try:
                resolved = resolve_signatures(content, first.get_input_details(),
                                              first.get_output_details())
            except TfLiteSessionError as err:
                raise TfLiteSessionError(f"{self.path}: {err}") from None
            self.signatures, self.generated = resolved.signatures, resolved.generated
            self._inputs = _tensor_map(first.get_input_details(), "Input")
            self._outputs = _tensor_map(first.get_output_details(), "Output")
            self._free: queue.Queue = queue.Queue()
            for index in range(max(1, pools)):
                interpreter = first if index == 0 else _interpreter(self.path, content)
                interpreter.allocate_tensors()
                shapes = {d["index"]: list(d["shape"]) for d in interpreter.get_input_details()}
                self._free.put((interpreter, shapes))

    def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
        """predict_util.cc: an unknown key fails; so does a method Predict cannot run."""
        if name not in self.signatures:
            raise TfLiteSessionError(
                f"{self.path}: Serving signature key \"{name}\" not found (TF Serving "
                f"serves {sorted(self.signatures)} from this model.tflite"
                + (": it has no signature_defs_metadata" if self.generated else "") + ")")
        signature = self.signatures[name]
        if signature.method_name not in PREDICT_API_METHODS:
            raise TfLiteSessionError(
                f"{self.path}: signature '{name}': Expected prediction signature method_name "
                f"to be one of {{{', '.join(PREDICT_API_METHODS)}}}. Was: "
                f"{signature.method_name}")
        return signature

    def run(self, name: str, inputs: Mapping[str, np.ndarray],
            output_keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """A Predict request on signature `name`: input key -> array; returns output key
        -> array (every output, or `output_keys`, as Predict's output_filter)."""
        signature = self.signature(name)
        if set(inputs) != set(signature.inputs):  # VerifyRequestInputsSize
            raise TfLiteSessionError(
                f"{self.path}: signature '{name}': input size does not match signature: "
                f"sent {sorted(inputs)}, the signature has {sorted(signature.inputs)}")
        wanted = list(signature.outputs) if output_keys is None else list(output_keys)
        for key in wanted:
            if key not in signature.outputs:
                raise TfLiteSessionError(f"{self.path}: output tensor alias not found in "
                                         f"signature: {key}")
        interpreter, shapes = entry = self._free.get()
        try:
            for key, value in inputs.items():
                index = self._inputs[signature.inputs[key].name]
                value = np.asarray(value)
                if shapes[index] != list(value.shape):  # SetInputAndInvokeMiniBatch
                    interpreter.resize_tensor_input(index, value.shape)
                    interpreter.allocate_tensors()
                    shapes[index] = list(value.shape)
                interpreter.set_tensor(index, value)
            interpreter.invoke()
            return {key: interpreter.get_tensor(self._outputs[signature.outputs[key].name])
                    for key in wanted}
        except (ValueError, RuntimeError) as err:
            raise TfLiteSessionError(f"{self.path}: the TFLite interpreter failed on "
                                     f"signature '{name}': {first_line(err)}") from None
        finally:
            self._free.put(entry)

    def close(self) -> None:
        self._free = queue.Queue()

    def __enter__(self) -> TfLiteSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
