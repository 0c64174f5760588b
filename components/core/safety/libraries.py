"""The custom-op libraries TF Serving's model server links, and how to load their ops here.

tensorflow/serving `tensorflow_serving/model_servers/BUILD` (`SUPPORTED_TENSORFLOW_OPS`,
at 9d981c5) links, besides TF's own ops:
- `@org_tensorflow_text//tensorflow_text:ops_lib`: TF Text's ops, SentencePiece's
  (`Sentencepiece*Op`, TF Text's `sentencepiece_tokenizer_cc`) among them;
  `tensorflow_serving/workspace.bzl` pins tensorflow/text v2.20.0.
- `@org_tensorflow_decision_forests//tensorflow_decision_forests/tensorflow/ops/inference:
  kernel_and_op`: TF Decision Forests' inference ops; workspace.bzl pins
  tensorflow/decision-forests 1.3.0.
A SavedModel that uses them loads in the stock model server. Here their ops exist only
once the Python package that carries their kernels is imported: `register_libraries`
imports it before anything loads such a model.

`linked` is each library's ops as TF Serving's pinned version registers them, read from
that source (REGISTER_OP and the TF op shims' `kOpName`, in the files of the targets
above): only these may be allowed, whatever a newer package registers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from components.core.keras_deferred import allow_keras


@dataclass(frozen=True)
class OpLibrary:
    key: str  # the Python module whose import registers the ops (their kernels)
    name: str
    package: str  # the PyPI requirement that provides them here
    tf_serving_target: str
    linked: dict[str, bool]  # op -> is_stateful, in the version TF Serving links
    installable: str = ""  # why the package cannot be installed with this TF, if so

    def install_hint(self) -> str:
        if self.installable:
            return self.installable
        return (f"install {self.package} (pip install 'tfx-serving-optimizer[text]'), "
                "whose ops TF Serving's model server links")


# tensorflow/text v2.20.0 tensorflow_text/BUILD `ops_lib` (its 23 `*_cc` deps) and their
# tensorflow_text/core/ops/*.cc registrations; stateful as registered (tensorflow-text
# 2.21.1 registers the same 38 ops; tests/test_safety_allowlist.py checks the installed one).
_TEXT_STATEFUL = {"SentencepieceDetokenizeOp", "SentencepieceIdToStringOp", "SentencepieceOp",
                  "SentencepieceStringToIdOp", "SentencepieceTokenizeOp",
                  "SentencepieceTokenizeWithOffsetsOp", "SentencepieceVocabSizeOp",
                  "WordpieceTokenizeWithOffsets"}
_TEXT_OPS = (
    'CaseFoldUTF8', 'ConstrainedSequence', 'FastBertNormalize',
    'FastWordpieceTokenizeWithOffsets', 'FindSourceOffsets', 'MaxSpanningTree',
    'NormalizeUTF8', 'NormalizeUTF8WithOffsetsMap', 'PhraseTokenize', 'RegexSplitWithOffsets',
    'RougeL', 'SentenceFragments', 'SentenceFragmentsV2', 'SentencepieceDetokenizeOp',
    'SentencepieceIdToStringOp', 'SentencepieceOp', 'SentencepieceStringToIdOp',
    'SentencepieceTokenizeOp', 'SentencepieceTokenizeWithOffsetsOp',
    'SentencepieceVocabSizeOp', 'SplitMergeTokenizeWithOffsets', 'TFText>BoiseTagsToOffsets',
    'TFText>ByteSplitByOffsets', 'TFText>ByteSplitWithOffsets',
    'TFText>FastSentencepieceDetokenize', 'TFText>FastSentencepieceTokenize',
    'TFText>FastWordpieceDetokenize', 'TFText>NgramsStringJoin', 'TFText>OffsetsToBoiseTags',
    'TFText>PhraseDetokenize', 'TFText>RoundRobinGenerateMasks', 'TFText>RoundRobinTrim',
    'TFText>Utf8Binarize', 'TFText>WhitespaceTokenizeWithOffsetsV2', 'TokenizerFromLogits',
    'UnicodeScriptTokenizeWithOffsets', 'WhitespaceTokenizeWithOffsets',
    'WordpieceTokenizeWithOffsets',
)

TF_TEXT = OpLibrary(
    key="tensorflow_text", name="TF Text", package="tensorflow-text==2.21.1",
    tf_serving_target="@org_tensorflow_text//tensorflow_text:ops_lib",
    linked={op: op in _TEXT_STATEFUL for op in _TEXT_OPS})

# tensorflow/decision-forests 1.3.0 tensorflow_decision_forests/tensorflow/ops/inference/
# op.cc: six ops, all `.SetIsStateful()`. No tensorflow-decision-forests release supports
# TF 2.21 (1.12.0, the newest, is built for TF 2.19), so the table is read from source.
TF_DECISION_FORESTS = OpLibrary(
    key="tensorflow_decision_forests", name="TF Decision Forests",
    package="tensorflow-decision-forests",
    tf_serving_target=("@org_tensorflow_decision_forests//tensorflow_decision_forests/"
                       "tensorflow/ops/inference:kernel_and_op"),
    linked=dict.fromkeys(("SimpleMLCreateModelResource", "SimpleMLInferenceLeafIndexOpWithHandle",
                          "SimpleMLInferenceOp", "SimpleMLInferenceOpWithHandle",
                          "SimpleMLLoadModelFromPath", "SimpleMLLoadModelFromPathWithHandle"),
                         True),
    installable=("needs tensorflow-decision-forests, which has no release for this "
                 "TensorFlow (TF Serving's model server links its inference ops): serve "
                 "the model as it is"))

LIBRARIES: dict[str, OpLibrary] = {lib.key: lib for lib in (TF_TEXT, TF_DECISION_FORESTS)}

_loaded: dict[str, str | None] = {}  # library key -> None when imported, else why not


def load(library: OpLibrary) -> str | None:
    """Imports `library`'s package (registering its ops in this process); None when its
    ops are registered, else why they cannot be. Cached: one import per process."""
    if library.key not in _loaded:
        if library.installable:
            _loaded[library.key] = library.installable
        else:
            try:
                allow_keras()  # TF Text uses tf.keras at import (keras_deferred)
                importlib.import_module(library.key)
                _loaded[library.key] = None
            except ModuleNotFoundError as err:
                _loaded[library.key] = (library.install_hint() if err.name == library.key
                                        else f"{library.package} does not import ({err})")
            except ImportError as err:
                _loaded[library.key] = f"{library.package} does not import ({err})"
            except Exception as err:  # noqa: BLE001  a broken build fails in many ways
                _loaded[library.key] = (f"{library.package} does not import "
                                        f"({type(err).__name__}: {err})")
    return _loaded[library.key]
