"""Which op types a model may run: the allowlist the safety scan checks every node against.

The table itself is `op_table.py`, generated once from TensorFlow's op registry (the C
registry every kernel registers into, `TF_GetAllOpList`; `tf.raw_ops` is its public part)
by `python -m components.core.safety.op_classes > components/core/safety/op_table.py`,
then reviewed. The ops of the libraries TF Serving's model server links (TF Text with
SentencePiece, TF Decision Forests' inference; libraries.py) are classified by the same
rules, read from the registry after importing the pinned package (or, where no package
fits this TF, from the source TF Serving builds); an op the pinned package registers but
TF Serving's pinned version does not link is NOT_LINKED. A model's op that is not in the
table (a custom op, an op of a newer TF) is refused; tests/test_safety_allowlist.py fails
when the installed TF or library registers an op the table does not classify, so an
upgrade cannot bring an op nobody looked at.

The classification rules, in order (the first that matches wins):
1. Ops the scan checks where they run (CHECKED): they read a file, which is fine only on
   the paths TF's loader feeds them from the model's own `variables/` and `assets/`.
2. Ops named in `_REFUSED` (by family or by name): they read or write files, run Python,
   open the network, talk to other devices or hosts, reach state outside the model, run
   a graph the scan cannot see into, or only exist for tests.
3. Ops TF registers as stateless (`OpDef.is_stateful` false): a stateless kernel has no
   side effects by TF's own contract (its result depends on its inputs only; Grappler
   folds and prunes them freely), so they compute. The stateless ops that still touch
   files (ReadFile, MatchingFiles, DecodeProtoV2's descriptor file, ...) are caught by 2.
4. Stateful ops reviewed one by one and found to keep their state in memory
   (`_STATEFUL_COMPUTE`: variables, tables, random numbers, control flow, queues,
   tensor arrays, in-memory datasets; the libraries' models and vocabularies).
5. Everything else: UNREVIEWED, refused until someone reviews it.
"""

from __future__ import annotations

import re
import sys

from components.core.safety.categories import (
    CHECKED,
    COMPUTE,
    DEVICES,
    FILE_ATTRIBUTE,
    FILES,
    HIDDEN_GRAPH,
    LOG,
    NETWORK,
    NOT_LINKED,
    OUTSIDE_STATE,
    PROCESS,
    PYTHON,
    RESTORE,
    TABLE_FROM_FILE,
    TEST_ONLY,
    UNKNOWN,
    UNREVIEWED,
)
from components.core.safety.libraries import LIBRARIES, OpLibrary, load

__all__ = ["CHECKED", "COMPUTE", "DEVICES", "FILES", "FILE_ATTRIBUTE", "HIDDEN_GRAPH", "LOG",
           "NETWORK", "NOT_LINKED", "OUTSIDE_STATE", "PROCESS", "PYTHON", "RESTORE",
           "TABLE_FROM_FILE", "TEST_ONLY", "UNKNOWN", "UNREVIEWED", "classify",
           "classify_library", "registered_ops"]

_CHECKED = {
    # tensorflow/cc/saved_model/loader.cc RunRestore feeds the restore op the path of the
    # model's own variables/variables; checkpoint readers elsewhere read any checkpoint.
    "Restore": RESTORE, "RestoreV2": RESTORE, "RestoreSlice": RESTORE,
    # TFX Transform's vocabularies: the loader feeds asset tensors their assets/ paths.
    "InitializeTableFromTextFile": TABLE_FROM_FILE,
    "InitializeTableFromTextFileV2": TABLE_FROM_FILE,
    "DecodeProtoV2": FILE_ATTRIBUTE, "EncodeProto": FILE_ATTRIBUTE,
    "FixedUnigramCandidateSampler": FILE_ATTRIBUTE,
}

# (pattern on the op name, category); op names are TF's CamelCase, internal ones start
# with "_". Families first, then single ops.
_REFUSED: list[tuple[str, str]] = [
    # files: checkpoints, file I/O, queue-based readers, tf.data file sources and sinks,
    # snapshots and caches (an empty cache file name caches in memory: fail closed),
    # summaries written to disk, debugger ops (file:// and grpc:// URLs)
    (r"^(Save|SaveV2|SaveSlices|MergeV2Checkpoints|DTensorRestoreV2|ReadFile|WriteFile"
     r"|MatchingFiles|FileSystemSetConfiguration|ImmutableConst|LoadAndRemapMatrix"
     r"|GenerateVocabRemapping|Skipgram|RecordInput|DumpTensor|CalibrationStatisticsSaver"
     r"|DistributedSave|PrintV2)$", FILES),
    (r"Reader(V2)?$|^Reader", FILES),
    (r"^(Experimental)?(TFRecord|TextLine|FixedLengthRecord|LMDB|Sql|CSV|MatchingFiles)"
     r"Dataset", FILES),
    (r"^(Save|Load|Cache|Snapshot)Dataset|^Snapshot.*(Reader|Dataset)|^ListSnapshotChunks"
     r"|DatasetToTFRecord$", FILES),
    (r"^(Create|Close|Flush)Summary|Summary(Db|File)?Writer$|^Write.*Summary$"
     r"|^ImportEvent$|SetSummaryWriter$", FILES),
    (r"^Debug", FILES),
    (r"PyFunc", PYTHON),
    (r"Rpc|^DataService|^RegisterDataset", NETWORK),
    (r"TPU|Tpu|^_?Xla|^Collective|Nccl|^_?(Host)?(Send|Recv)$|Infeed|Outfeed|^RemoteCall$"
     r"|^WorkerHeartbeat$|^AllToAll$|^CrossReplicaSum$|^_?Mlir|SparseCore|Minibatch"
     r"|^_?DeviceArg$|^_?DeviceRetval$|^ConvertToCooTensor$|DedupData", DEVICES),
    (r"Session(Handle|Tensor)|FromStringHandle", OUTSIDE_STATE),
    (r"^DatasetFromGraph$", HIDDEN_GRAPH),
    # TF Decision Forests (libraries.py): its loaders read a model directory whose path is
    # computed at run time (RegexReplace of an asset's path, decision-forests
    # inference/api.py `_DiskModelLoader.get_model_path`); the identifier form reaches a
    # model in a process-wide container by name, any model's.
    (r"^SimpleMLLoadModelFromPath", FILES),
    (r"^SimpleMLInferenceOp$", OUTSIDE_STATE),
    (r"^Print$", LOG),
    (r"^Abort$", PROCESS),
    (r"Test|^Sleep|SleepDataset$|^(Stub|Dtype)|^ResourceCreateOp$|^ResourceUsingOp$"
     r"|^RequiresOlderGraphVersion$|^GraphDefVersion$|^Namespace>"
     r"|^(ConstructionFails|FuncAttr|FuncListAttr|TwoRefsIn)$", TEST_ONLY),
]

# Stateful ops reviewed and found to compute only (state in memory, in this process).
_STATEFUL_COMPUTE = re.compile(
    r"^(_Arg|_Retval|_If|_While|If|While|Case|StatefulPartitionedCall|Assert|CheckNumerics"
    r"(V2)?|GuaranteeConst|Empty|DeepCopy|Timestamp|_ParallelConcatStart|_ScopedAllocator"
    r"(Concat|Split)?|IsTensorFloat32Enabled|IsResourceHandleRefCounting|DisableCopyOnRead"
    r"|DestroyResourceOp|MakeWeakResourceHandle|DeviceIndex"
    # variables
    r"|VarHandleOp|_VarHandlesOp|ReadVariableOp|_ReadVariablesOp|VarIsInitializedOp"
    r"|VariableShape|Variable|VariableV2|TemporaryVariable|Assign(Add|Sub)?VariableOp"
    r"|Resource(Gather(Nd)?|Scatter\w+|StridedSliceAssign|CountUpTo|Apply\w+"
    r"|SparseApply\w+|ConditionalAccumulator|Accumulator\w+)"
    r"|(Sparse)?ConditionalAccumulator"
    # lookup tables (their text-file initialiser is checked, above)
    r"|(Anonymous)?(Mutable(Dense)?)?HashTable(OfTensors)?(V2)?|InitializeTable(V2"
    r"|FromDataset)|LookupTable\w+V2"
    # random numbers and samplers
    r"|Random\w*|Stateful\w+|StatelessRandomGetAlg|Multinomial|TruncatedNormal"
    r"|ParameterizedTruncatedNormal|NonDeterministicInts|Rng(ReadAndSkip|Skip)"
    r"|SampleDistortedBoundingBox(V2)?|(All|LogUniform|Uniform|LearnedUnigram"
    r"|ThreadUnsafeUnigram)CandidateSampler|(Anonymous|Delete|Dummy)(Random)?SeedGenerator"
    r"|AnonymousRandomSeedGenerator|NegTrain"
    # queues, stacks, barriers, staging areas, tensor arrays, mutexes, sparse maps
    r"|\w*Queue(V2)?|Queue\w+V2|Barrier|Stack(V2|PushV2|PopV2|CloseV2)?|Stage\w*|Unstage"
    r"|(Ordered)?Map(Clear|IncompleteSize|Peek|Size|Stage|Unstage|UnstageNoKey)"
    r"|TensorArray\w*|MutexV2|MutexLock|ConsumeMutexLock"
    r"|Add(Many)?SparseToTensorsMap|TakeManySparseFromTensorsMap"
    # in-memory tf.data: datasets, iterators (their functions are scanned)
    r"|(Anonymous|Delete|Dummy)MemoryCache|(Experimental)?(ThreadPool|Random|GroupByReducer)"
    r"(Dataset|Handle)(V2)?|(Global)?Shuffle\w*Dataset(V\d)?|(Tensor|TensorSlice"
    r"|SparseTensorSlice|Range|List)Dataset|GeneratorDataset|ReduceDataset"
    r"|DatasetToSingleElement|(Anonymous)?(MultiDevice)?Iterator(V\d)?|DeleteIterator"
    r"|DeleteMultiDeviceIterator|(Experimental)?IteratorGet\w+|IteratorToStringHandle"
    r"|MultiDeviceIterator\w+|MakeIterator|OneShotIterator|(Serialize|Deserialize)Iterator"
    r"|DummyIterationCounter|GlobalIterId"
    # boosted trees and cuDNN RNNs: models' own compute
    r"|BoostedTrees\w+|IsBoostedTrees\w+|CudnnRNN\w*"
    # TF Text (libraries.py): SentencePiece's processor, built from the op's `model`
    # attribute, a serialized model proto in memory (tensorflow/text core/kernels/
    # sentencepiece_kernels.cc `LoadFromSerializedProto`); WordPiece's vocabulary, a TF
    # lookup table (wordpiece_kernel.cc `GetLookupTable`; its initialiser is scanned).
    r"|Sentencepiece\w*Op|WordpieceTokenizeWithOffsets"
    # TF Decision Forests: a model resource in memory, used through its handle.
    r"|SimpleML(CreateModelResource|InferenceOpWithHandle|InferenceLeafIndexOpWithHandle))$")


def classify(name: str, is_stateful: bool) -> str:
    """The category of op `name` by the rules above (this module's docstring)."""
    if name in _CHECKED:
        return _CHECKED[name]
    for pattern, category in _REFUSED:
        if re.search(pattern, name):
            return category
    if not is_stateful or _STATEFUL_COMPUTE.match(name):
        return COMPUTE
    return UNREVIEWED


def registered_ops() -> dict[str, bool]:
    """Every op registered in this process's TensorFlow: name -> is_stateful."""
    import components.core.tf_setup  # noqa: F401

    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session

    buffer = pywrap_tf_session.TF_GetAllOpList()
    try:
        ops = op_def_pb2.OpList.FromString(pywrap_tf_session.TF_GetBuffer(buffer))
    finally:
        pywrap_tf_session.TF_DeleteBuffer(buffer)
    return {op.name: op.is_stateful for op in ops.op}


def classify_library(library: OpLibrary, name: str, is_stateful: bool) -> str:
    """The category of op `name` of `library`: the rules above, for an op the version TF
    Serving links registers; NOT_LINKED for any other."""
    if name not in library.linked:
        return NOT_LINKED
    return classify(name, is_stateful)


def library_ops(library: OpLibrary, tf_ops: dict[str, bool]) -> dict[str, bool]:
    """The ops `library` registers here (a diff of the registry around its import, after
    `tf_ops`), or those its source registers where the package cannot be installed."""
    if library.installable:
        return dict(library.linked)
    why = load(library)
    if why:
        raise SystemExit(f"cannot generate the table of {library.name}: {why}")
    return {name: stateful for name, stateful in registered_ops().items()
            if name not in tf_ops}


def _generate() -> str:
    from components.core.tf_setup import tf

    from components.core.safety import categories

    constants = {value: name for name, value in vars(categories).items()
                 if name.isupper() and isinstance(value, str)}
    tf_ops = registered_ops()  # before any library adds its own
    registered: dict[str, dict[str, bool]] = {}
    for key, library in LIBRARIES.items():
        registered[key] = library_ops(library, tf_ops)
    library_names = {name for ops in registered.values() for name in ops}
    entries = ["OP_TABLE: dict[str, str] = {"]
    for name, stateful in sorted(tf_ops.items()):
        if name not in library_names:
            entries.append(f"    {name!r}: {constants[classify(name, stateful)]},")
    entries += ["}", "", "# library (the module that registers its ops) -> op -> category",
                "LIBRARY_OP_TABLE: dict[str, dict[str, str]] = {"]
    for key, ops in registered.items():
        entries.append(f"    {key!r}: {{")
        for name, stateful in sorted(ops.items()):
            category = classify_library(LIBRARIES[key], name, stateful)
            entries.append(f"        {name!r}: {constants[category]},")
        entries.append("    },")
    used = {name for name in constants.values()
            if any(line.endswith(f": {name},") for line in entries)}
    lines = ['"""Generated by `python -m components.core.safety.op_classes` from the op',
             f"registry of TensorFlow {tf.__version__} and of the libraries TF Serving links",
             "(libraries.py): every op type and its category (rules: op_classes.py). Review",
             'changes before committing them."""', "",
             "from components.core.safety.categories import (",
             *[f"    {name}," for name in sorted(used, key=lambda n: n.replace("_", " "))],
             ")", "", *entries, "}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(_generate())
