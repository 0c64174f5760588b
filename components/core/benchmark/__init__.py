"""Benchmark a baseline model and its candidates side by side: the ServingBenchmark library.

Method (vocabulary from Triton's perf_analyzer):
- Each model is measured on the runtime TF Serving would use for it (see runtimes): a
  SavedModel the way TF Serving loads it (Session + signature tensors via make_callable);
  `model.tflite` beside a saved_model.pb on both paths, as two rows (TfLiteSession's
  1-thread interpreter pool, what --prefer_tflite_model=true serves, and the Session); a
  bare `.tflite` file in that interpreter. Each row runs in its own spawned worker with
  identical thread settings. The `tfserving` backend measures a real
  `tensorflow_model_server` over gRPC or REST instead.
- Warm-up requests are excluded. Requests are timed in measurement windows (a time span,
  1 s by default, or a number of requests), each after a few untimed re-warm requests. A
  result is stable when the p50 of its last 3 windows spreads by at most
  `stability_percent` (max/min - 1), a candidate's speedup when its last 3 per-round
  ratios do; after `max_windows` an unsettled result is reported with `stable: false`,
  never silently.
- Models are measured in interleaved rounds (one window of each model per round, the
  order rotating: A B C, B C A, ...), and a candidate's speedup is the median over
  rounds of the ratio of the baseline's p50 (p99) to the candidate's in the same round,
  so machine drift cancels.
- Statistics cover every measured request of a model at a batch size; throughput is
  examples per second of wall time over the windows. Load time, first-request latency,
  peak resident memory of the worker, size on disk, FLOPs per example (TF's profiler) and
  achieved FLOP/s are reported per model; a concurrency sweep (N client threads against
  one loaded model) gives throughput against p99.
- With labelled examples, an Apache Beam pipeline computes accuracy per model and, for
  candidates, top-1 agreement and largest output difference against the baseline.

Failures: settings that cannot work (a batch size of 0, an unknown backend, a missing
model path, examples without the label key) raise ServoptError before anything starts. A
model that cannot be loaded or run gets `error` in its result, and the others are still
measured. The `servopt benchmark` command then exits 2 with a one-line message when the
*baseline* failed (nothing can be compared with it), and prints a warning line and exits
0 when only candidates failed: their failure is a measured result (metrics.json records
it), and a gate downstream rejects them.
"""

import importlib

# Name -> the module that defines it, imported on first use: the settings (config) load
# without TensorFlow, so `servopt --help` and the YAML readers stay fast.
_EXPORTS = {
    "AccuracyModel": "accuracy", "compute_accuracy": "accuracy",
    "BACKENDS": "config", "BenchmarkConfig": "config", "ModelSpec": "config",
    "TFServingOptions": "config", "name_models": "config", "parse_int_list": "config",
    "render_report": "report", "write_report": "report", "run_benchmark": "run",
    "BenchmarkSession": "run", "machine_info": "machine",
    "SCHEMA_VERSION": "schema", "AccuracyResult": "schema", "BatchResult": "schema",
    "BenchmarkResult": "schema", "ConcurrencyResult": "schema", "MachineInfo": "schema",
    "ModelResult": "schema",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
