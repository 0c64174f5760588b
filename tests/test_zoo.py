"""The model zoo runner: per-stage time and memory read from /proc, the record written
after every model (a model whose builder is missing is recorded as skipped, with the
reason), and the tables rendered from the record only.

The monitor is tested on real processes (a launcher, a kfp-like task and its worker
holding 60 MB); the whole pipeline on the zoo's models is `servopt zoo run` (minutes
to an hour), which the lead runs; here no pipeline runs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from components.core.errors import ServoptError
from pipelines.zoo import ZOO, ZooModel, find, run_zoo, summarize
from pipelines.zoo_monitor import (
    ORCHESTRATOR,
    ProcessTreeMonitor,
    kfp_task_name,
    memory_kib,
)
from pipelines.zoo_table import read_record, render

WORKER = "import time; block = bytearray(60_000_000); time.sleep(2.0)"
TASK = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
        f"{WORKER!r}])")
LAUNCHER = ("import subprocess, sys, time; time.sleep(0.6); subprocess.run([sys.executable, "
            f"'-c', {TASK!r}, '--function_to_execute', 'benchmark'])")


def test_a_task_is_named_by_kfp_locals_function_to_execute_argument():
    assert kfp_task_name(["python", "-m", "kfp.dsl.executor_main", "--executor_input",
                          "{}", "--function_to_execute", "quantize"]) == "quantize"
    assert kfp_task_name(["sh", "-c", "python3 -m kfp.dsl.executor_main "
                          "--function_to_execute 'gate'"]) == "gate"
    assert kfp_task_name(["python", "-m", "pipelines.zoo"]) is None


def test_the_monitor_gives_each_stage_its_time_and_memory_workers_included():
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER])
    monitor = ProcessTreeMonitor(launcher.pid, interval_s=0.2).start()
    launcher.wait(timeout=60)
    monitor.stop()
    benchmark = monitor.stages["benchmark"]
    assert benchmark.processes == 2  # the task and its worker, which names no stage
    assert benchmark.peak_memory_bytes > 60e6  # the worker's block, counted for the task
    assert benchmark.peak_process_bytes > 60e6
    assert 1.2 < benchmark.wall_s < 10
    assert ORCHESTRATOR in monitor.stages  # the launcher itself
    assert monitor.stages[ORCHESTRATOR].first_seen_s < benchmark.first_seen_s
    assert monitor.peak_memory_bytes >= benchmark.peak_memory_bytes


def test_a_processs_memory_is_its_share_of_shared_pages_else_its_resident_set(tmp_path):
    """Pss (its share of pages shared with other processes, e.g. TensorFlow's libraries),
    not VmRSS, which counts a shared page in full for every process."""
    status = "Name:\tpython\nVmHWM:\t 900000 kB\nVmRSS:\t  877000 kB\n"
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "status").write_text(status)
    (tmp_path / "7" / "smaps_rollup").write_text(
        "00400000-7ffd [rollup]\nRss:              877000 kB\nPss:              479000 kB\n")
    assert memory_kib(7, tmp_path) == (479000, 900000)
    (tmp_path / "8").mkdir()  # a kernel without smaps_rollup
    (tmp_path / "8" / "status").write_text(status)
    assert memory_kib(8, tmp_path) == (877000, 900000)
    assert memory_kib(9, tmp_path) == (0, 0)  # gone


def test_unknown_zoo_models_are_refused_naming_the_choices():
    with pytest.raises(ServoptError, match="unknown zoo model 'vgg'; choose from demo-cnn"):
        find(["vgg"])
    assert [m.name for m in find(["resnet50", "demo-cnn"])] == ["demo-cnn", "resnet50"]
    assert {m.name for m in ZOO} >= {"demo-cnn", "mobilenet_v2", "resnet50", "bert-encoder",
                                     "text-tokenizing"}


def test_a_model_whose_builder_is_missing_is_recorded_as_skipped_with_the_reason(tmp_path):
    models = [ZooModel("missing", "pipelines.zoo_models:export_nothing", (1,)),
              ZooModel("gone", "no_such_module:build", (1, 8))]
    lines: list[str] = []
    record_path = tmp_path / "zoo.json"
    record = run_zoo(models, tmp_path / "work", record_path, say=lines.append)
    assert json.loads(record_path.read_text()) == record
    missing, gone = record["models"]
    assert missing["status"] == "skipped"
    assert "pipelines.zoo_models:export_nothing is not available" in missing["reason"]
    assert "No module named 'no_such_module'" in gone["reason"]
    assert missing["build"]["wall_s"] > 0 and missing["build"]["peak_memory_bytes"] > 0
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu_model"]
    assert any("missing: skipped" in line for line in lines)


def _record() -> dict:
    stage = {"wall_s": 61.0, "start_s": 3.0, "peak_memory_bytes": 2_500_000_000,
             "peak_process_bytes": 900_000_000, "processes": 9}
    return {"date": "2026-12-06 18:00 UTC",
            "machine": {"cpu_model": "AMD EPYC 9R14", "cores": 2,
                        "cpu_features": ["avx2", "avx512_bf16"]},
            "models": [
                {"name": "mobilenet_v2", "note": "", "batch_sizes": [1, 16],
                 "status": "done", "build": {"wall_s": 20.0, "peak_memory_bytes": 1e9},
                 "pipeline": {"wall_s": 430.0, "peak_memory_bytes": 3_100_000_000,
                              "stages": {"orchestrator": stage, "benchmark": stage,
                                         "freeze": stage}},
                 "variants": {"frozen_model": {"produced": True},
                              "bfloat16_model": {"produced": False,
                                                 "reason": "no bf16 units | here"}},
                 "blessed": True, "chosen": "Quantizer-tflite-float32@tflite",
                 "pushed": {"row": "x", "speedup_p50": {"1": 4.26, "16": 2.26},
                            "accuracy": 0.98, "top1_agreement": 0.97},
                 "benchmark": {"rows": 12, "failed": 1, "step_errors": {
                     "resnet: flops": "OOM"}, "budget": {
                         "budget_s": 420.0, "elapsed_s": 400.0,
                         "stopped": "the budget ran short at batch size 16"}}},
                {"name": "bert-encoder", "status": "skipped",
                 "reason": "tests.model_zoo:export_bert_like_encoder is not available",
                 "batch_sizes": [1, 16]}]}


def test_the_tables_come_from_the_record_and_name_the_cpu_and_date(tmp_path):
    text = render(_record())
    assert text.startswith("Measured on AMD EPYC 9R14 (2 cores; avx2, avx512_bf16), "
                           "2026-12-06 18:00 UTC")
    assert ("| mobilenet_v2 | 1, 16 | done | 7:10 | 3.10 GB | "
            "Quantizer-tflite-float32@tflite | 4.26x | 2.26x | 98.0% | 97.0% |") in text
    assert "| mobilenet_v2 | freeze | 1:01 | 2.50 GB | 0.90 GB |" in text
    assert text.index("| mobilenet_v2 | freeze |") < text.index("| mobilenet_v2 | benchmark")
    assert "| mobilenet_v2 | bfloat16_model | no | no bf16 units \\| here |" in text
    assert "skipped: tests.model_zoo:export_bert_like_encoder is not available" in text
    assert "the budget ran short at batch size 16" in text and "resnet: flops failed: OOM" \
        in text
    path = tmp_path / "zoo.json"
    path.write_text(json.dumps(_record()))
    assert render(read_record(path)) == text


def test_a_file_that_is_not_a_record_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ServoptError, match="bad.json: not a zoo record"):
        read_record(bad)
    with pytest.raises(ServoptError, match="no such zoo record"):
        read_record(tmp_path / "none.json")


def test_a_run_is_summarized_from_its_decision_metadata_and_metrics(tmp_path):
    from components.core.benchmark.config import BenchmarkConfig
    from components.core.benchmark.schema import (
        AccuracyResult,
        BatchResult,
        BenchmarkResult,
        BudgetRecord,
        MachineInfo,
        ModelResult,
    )

    def batch(speedup):
        return BatchResult(p50_ms=1, p90_ms=1, p95_ms=1, p99_ms=1, mean_ms=1, std_ms=0,
                           min_ms=1, max_ms=1, throughput=1, stable=True, windows=6,
                           requests=6, speedup_p50=speedup)

    result = BenchmarkResult(
        MachineInfo("cpu", 2, "2.21", "3.11", "linux"), BenchmarkConfig(), "model",
        {"model": ModelResult("/m", "baseline", accuracy=AccuracyResult(0.9, None, None, 64)),
         "fast@tflite": ModelResult("/f", "candidate",
                                    batches={1: batch(3.0), 16: batch(1.5)},
                                    accuracy=AccuracyResult(0.89, 0.95, 0.1, 64),
                                    step_errors={"flops": "boom"})},
        budget=BudgetRecord(420.0, 100.0, ["model", "fast@tflite"]))
    result.write_json(tmp_path / "metrics.json")
    summary = summarize({"results": str(tmp_path), "pushed": {"version": 3},
                         "decision": {"blessed": True, "chosen": "fast",
                                      "chosen_pair": "fast@tflite", "row": "fast@tflite",
                                      "reason": "fastest"},
                         "model_metadata": {"frozen_model": {"produced": 1},
                                            "bfloat16_model": {"produced": 0,
                                                               "skipped_reason": "no bf16"}}},
                        (1, 16))
    assert summary["variants"] == {"frozen_model": {"produced": True},
                                   "bfloat16_model": {"produced": False, "reason": "no bf16"}}
    assert summary["pushed"] == {"row": "fast@tflite", "speedup_p50": {"1": 3.0, "16": 1.5},
                                 "accuracy": 0.89, "top1_agreement": 0.95}
    assert summary["baseline_accuracy"] == 0.9 and summary["pushed_version"] == 3
    assert summary["benchmark"]["step_errors"] == {"fast@tflite: flops": "boom"}
    assert summary["benchmark"]["budget"]["order"] == ["model", "fast@tflite"]
