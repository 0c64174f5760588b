"""TF Serving's BatchingSession, modelled in our Session with TensorFlow's BatchFunction op.

TF Serving wraps a batched model's Session (tensorflow/serving batching/batching_session.cc):
each Run() call for a signature becomes a task in that signature's queue of a
SharedBatchScheduler (tensorflow core/kernels/batching_util); a batch thread concatenates
the queued tasks' inputs along dimension 0, pads the batch to the next allowed batch size
with copies of a row, runs the wrapped Session once and splits the outputs back per task.
A task larger than max_batch_size is refused ("Task size N is larger than maximum input
batch size M", shared_batch_scheduler.h), also with large-batch splitting on, which splits a
task only across executions of max_execution_batch_size.

TF's `BatchFunction` op (core/kernels/batch_kernels.cc, batching_util/batch_resource_base.cc)
runs the same scheduler with the same queue options, concatenation, padding
(`RoundToLowestAllowedBatchSize`) and splitting on a function instead of a Session. So the
signature's computation is cut out of the loaded graph into a function and called through
one BatchFunction node fed by the signature's own input tensors:

- the body: every node on a path from a signature input to a signature output;
- everything the body reads from outside it (variable handles, tables, constants) is
  computed in the outer graph each step and passed in as a captured tensor, so the
  function reads the very variables the loader restored;
- control edges from outside into the body are dropped (they order restore/init, which
  has run by then).

Differences from TF Serving, none of which changes a batch's work: the padding rows copy
the first task's first row (BatchingSession: the last task's); each signature has its own
batch thread pool of num_batch_threads (TF Serving: one pool per server, shared by every
batched signature and model); the Session step that waits in the queue is a client's
Session::Run as in TF Serving, and releases the GIL, so Python client threads overlap.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass

from components.core.tf_setup import tf

from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.ops import gen_batch_ops

from components.core.batching import BatchingParameters
from components.core.errors import ServoptError


@dataclass
class BatchedSignature:
    """One signature behind a BatchFunction node: feed `inputs`, fetch `outputs` (both in
    sorted key order). `counters`: variables counting the batches the function ran and the
    examples in them, padding included (None unless asked for)."""

    inputs: list
    outputs: list
    counters: tuple | None = None


def _tensor_name(name: str) -> str:
    node, _, index = name.lstrip("^").partition(":")
    return f"{node}:{index or 0}"


def _node_of(name: str) -> str:
    return name.lstrip("^").partition(":")[0]


def _body(graph_def: graph_pb2.GraphDef, inputs: list[str], outputs: list[str]) -> set[str]:
    """The nodes on a path from an input tensor to an output tensor."""
    nodes = {node.name: node for node in graph_def.node}
    consumers = collections.defaultdict(list)
    for node in graph_def.node:
        for name in node.input:
            consumers[_node_of(name)].append((node.name, name))
    forward: set[str] = set()
    todo = [consumer for tensor in inputs for consumer, name in consumers[_node_of(tensor)]
            if not name.startswith("^") and _tensor_name(name) == tensor]
    while todo:
        name = todo.pop()
        if name not in forward:
            forward.add(name)
            todo.extend(consumer for consumer, _ in consumers[name])
    backward: set[str] = set()
    todo = [_node_of(tensor) for tensor in outputs]
    while todo:
        name = todo.pop()
        if name not in backward and name in nodes:
            backward.add(name)
            todo.extend(_node_of(i) for i in nodes[name].input)
    return forward & backward


def function_arguments(params: BatchingParameters) -> dict:
    """The BatchFunction attributes that run TF Serving's queue options `params`.

    BatchFunction executes batches of at most the last allowed size (or max_batch_size)
    (batch_resource_base.cc GetBatcherQueueOptions); TF Serving's max_execution_batch_size
    is that limit when splitting. Below max_batch_size with no allowed sizes, every size
    1..limit is allowed: the same limit, and no padding."""
    params.validate()
    allowed = list(params.allowed_batch_sizes)
    limit = params.execution_batch_limit
    if limit != params.max_batch_size:
        if allowed:
            raise ServoptError(
                f"batching {params.label()}: max_execution_batch_size {limit} below "
                f"max_batch_size with allowed_batch_sizes {allowed} pads batches beyond "
                "the execution size; TF's BatchFunction cannot run that, so it is not "
                "measured here: drop allowed_batch_sizes or max_execution_batch_size")
        allowed = list(range(1, limit + 1))
    return {"num_batch_threads": params.batch_threads,
            "max_batch_size": params.max_batch_size,
            "batch_timeout_micros": params.batch_timeout_micros,
            "max_enqueued_batches": params.max_enqueued_batches,
            "allowed_batch_sizes": allowed,
            "enable_large_batch_splitting": params.enable_large_batch_splitting}


def batch_signature(graph: tf.Graph, session: tf.compat.v1.Session, name: str,
                    signature: meta_graph_pb2.SignatureDef, params: BatchingParameters,
                    count: bool = False) -> BatchedSignature:
    """Adds a BatchFunction node running `signature` with `params` to the loaded `graph`
    (module docstring)."""
    attributes = function_arguments(params)
    input_keys, output_keys = sorted(signature.inputs), sorted(signature.outputs)
    inputs = [_tensor_name(signature.inputs[k].name) for k in input_keys]
    outputs = [_tensor_name(signature.outputs[k].name) for k in output_keys]
    graph_def = graph.as_graph_def()
    body = _body(graph_def, inputs, outputs)
    nodes = {node.name: node for node in graph_def.node}
    body_def = graph_pb2.GraphDef(versions=graph_def.versions, library=graph_def.library)
    outside: list[str] = []  # tensors the body reads from outside it
    for node_name in sorted(body):
        node = body_def.node.add()
        node.CopyFrom(nodes[node_name])
        del node.input[:]
        for source in nodes[node_name].input:
            if source.startswith("^"):
                if _node_of(source) in body:
                    node.input.append(source)
                continue
            node.input.append(source)
            tensor = _tensor_name(source)
            if _node_of(source) not in body and tensor not in inputs and tensor not in outside:
                outside.append(tensor)
    # An output that does not depend on the inputs is computed outside, passed through.
    outside += [t for t in outputs
                if _node_of(t) not in body and t not in inputs and t not in outside]
    read = {_tensor_name(i) for node in body_def.node for i in node.input
            if not i.startswith("^")}
    scope = "servopt_batch_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
    with graph.as_default(), tf.name_scope(scope):
        feeds = [graph.get_tensor_by_name(t) for t in inputs]
        # A ref-typed tensor (a TF1 variable) is passed by value.
        captured = [tf.identity(t) if t.dtype._is_ref_dtype else t
                    for t in (graph.get_tensor_by_name(n) for n in outside)]
        counters = None
        if count:
            counters = tuple(tf.compat.v1.get_variable(
                f"{scope}_{what}", shape=[], dtype=tf.int64, use_resource=True,
                trainable=False, initializer=tf.compat.v1.zeros_initializer())
                for what in ("batches", "examples"))

        def computation(*args):
            func_graph = tf.compat.v1.get_default_graph()
            input_map = dict(zip(inputs, args, strict=True))
            input_map.update({n: func_graph.capture(t)
                              for n, t in zip(outside, captured, strict=True)})
            in_body = [t for t in outputs if _node_of(t) in body]
            results = dict(zip(in_body, tf.compat.v1.import_graph_def(
                body_def, input_map={k: v for k, v in input_map.items() if k in read},
                return_elements=in_body, name="") if in_body else [], strict=True))
            if counters:
                counters[0].assign_add(1)
                counters[1].assign_add(tf.shape(args[0], out_type=tf.int64)[0])
            return [tf.identity(results.get(t, input_map.get(t))) for t in outputs]

        specs = [tf.TensorSpec(t.shape, t.dtype) for t in feeds]
        function = tf.function(computation, input_signature=specs,
                               autograph=False).get_concrete_function()
        batched = gen_batch_ops.batch_function(
            in_tensors=feeds, captured_tensors=function.captured_inputs, f=function,
            Tout=[t.dtype for t in function.outputs], shared_name=scope, **attributes)
        if counters:
            session.run([c.initializer for c in counters])
    return BatchedSignature(feeds, list(batched), counters)
