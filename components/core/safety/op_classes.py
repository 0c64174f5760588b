"""Which op types a model may run: the allowlist the safety scan checks every node against.

The table itself is `op_table.py`, generated once from TensorFlow's op registry (the C
registry every kernel registers into, `TF_GetAllOpList`; `tf.raw_ops` is its public part)
by `python -m components.core.safety.op_classes > components/core/safety/op_table.py`,
then reviewed. A model's op that is not in the table (a custom op, an op of a newer TF)
is refused; tests/test_safety_op_table.py fails when the installed TF registers an op
the table does not classify, so a TF upgrade cannot bring an op nobody looked at.

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
   tensor arrays, in-memory datasets).
5. Everything else: UNREVIEWED, refused until someone reviews it.
"""

from __future__ import annotations

import re
import sys

COMPUTE = "compute"
# Checked where they run (see safety/scan.py): allowed on the loader's own paths only.
RESTORE = "restores a checkpoint"
TABLE_FROM_FILE = "fills a table from a file"
FILE_ATTRIBUTE = "opens a file when an attribute names one"
CHECKED = frozenset({RESTORE, TABLE_FROM_FILE, FILE_ATTRIBUTE})
# Refused unless allowed by name.
FILES = "reads or writes files"
PYTHON = "runs Python"
NETWORK = "opens the network"
DEVICES = "talks to other devices or hosts (TPU, XLA, collectives, send/recv)"
OUTSIDE_STATE = "reaches state outside the model (session handles, iterators by name)"
HIDDEN_GRAPH = "runs a graph carried as a serialized string, which the scan cannot see into"
LOG = "writes to the server's log"
PROCESS = "ends the server's process"
TEST_ONLY = "exists only for TensorFlow's own tests"
UNREVIEWED = "not known to compute only (a stateful op nobody reviewed)"
UNKNOWN = "not a TensorFlow op this version of servopt knows (a custom op?)"

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
    r"|BoostedTrees\w+|IsBoostedTrees\w+|CudnnRNN\w*)$")


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


def op_category(name: str) -> str:
    """The category the table gives op `name` (UNKNOWN when it holds none)."""
    from components.core.safety.op_table import OP_TABLE

    return OP_TABLE.get(name, UNKNOWN)


def _generate() -> str:
    from components.core.tf_setup import tf

    constants = {value: name for name, value in globals().items()
                 if name.isupper() and isinstance(value, str)}
    lines = ['"""Generated by `python -m components.core.safety.op_classes` from the op',
             f"registry of TensorFlow {tf.__version__}: every op type and its category (rules:",
             'op_classes.py). Review changes before committing them."""', "",
             "from components.core.safety.op_classes import (",
             *[f"    {name}," for name in sorted(set(constants.values()) - {"UNKNOWN"},
                                             key=lambda name: name.replace("_", " "))],
             ")",
             "", "OP_TABLE: dict[str, str] = {"]
    for name, stateful in sorted(registered_ops().items()):
        lines.append(f"    {name!r}: {constants[classify(name, stateful)]},")
    return "\n".join([*lines, "}", ""])


if __name__ == "__main__":
    sys.stdout.write(_generate())
