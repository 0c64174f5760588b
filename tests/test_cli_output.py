"""`servopt`'s tables, read where people read them: a log (output redirected or piped, not
a terminal), an 80-column terminal, a wide one. Real models, real commands: no line wider
than the width, no box drawing in a log, and every number whole (never `1.2…`, never
split)."""

from __future__ import annotations

import io
import json
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from components.cli import main
from components.core.table import Cell, Column, Paragraph, Table
from tests.test_gate_cli import CONFIGS, metrics_json  # noqa: F401  (a fixture)
from tests.test_gate_decision import benchmark

BOX = set("┏┓┗┛┃━┡┩┠┨╇┳┻│─┼└┘┌┐├┤┬┴")


def servopt(*args: str, width: int = 80):
    """The command with its output redirected (CliRunner's stdout is not a terminal)."""
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": str(width)})


def terminal(renderable, width: int) -> str:
    """What a terminal of `width` columns shows (colours off, to read the text)."""
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=True, color_system=None).print(renderable)
    return out.getvalue()


def assert_readable(text: str, width: int, numbers, log: bool) -> None:
    lines = text.splitlines()
    too_wide = [line for line in lines if len(line) > width]
    assert not too_wide, f"lines over {width} columns:\n" + "\n".join(too_wide)
    assert "…" not in text, text
    if log:
        assert not BOX & set(text), f"box drawing in a log:\n{text}"
    for number in numbers:
        whole = rf"(?<![\w.]){re.escape(number)}(?![\w.])"
        assert any(re.search(whole, line) for line in lines), f"{number!r} not whole:\n{text}"


def test_describe_in_a_log_and_an_80_column_terminal(seed_cnn_model):
    from components.cli import _description_table
    from components.core.describe import describe

    data = json.loads(servopt("describe", seed_cnn_model, "--json").stdout)
    numbers = [str(data[k]) for k in ("node_count", "const_count", "variable_count",
                                      "identity_count")]
    numbers += [f"{data['size_bytes'][k] / 1e6:.2f}" for k in ("graph", "variables", "total")]
    top_ops = [f"{op} {n}," for op, n in list(data["op_counts"].items())[:9]]
    for width in (80, 60):
        result = servopt("describe", seed_cnn_model, width=width)
        assert result.exit_code == 0, result.output
        assert_readable(result.stdout, width, numbers, log=True)
        assert all(f"{name}(" in result.stdout for name in data["signatures"])
        assert all(op in " ".join(result.stdout.split()) for op in top_ops)
    table = _description_table(describe(seed_cnn_model))
    assert_readable(terminal(table, 80), 80, numbers[:7], log=False)


def test_optimize_tables_in_a_log_and_in_terminals(two_signature_model, tmp_path):
    from components.cli import _stages_table
    from components.core.steps import OptimizeConfig, optimize_model, parse_steps

    report = optimize_model(two_signature_model, tmp_path / "out",
                            parse_steps("freeze,optimize,quantize=int8"),
                            OptimizeConfig(verify_each_step=True))
    table = _stages_table(report)
    numbers = [str(report.before.node_count)]
    for record in report.steps:
        numbers += [str(record.model.node_count), f"{record.model.size_bytes.total / 1e6:.2f}",
                    f"{record.verification.max_abs_diff:.2e}"]
    for width in (120, 80, 50):
        assert_readable(table.plain(width), width, numbers, log=True)
        assert_readable(terminal(table, width), width, numbers, log=False)
    assert "┃" in terminal(table, 120)  # a wide terminal still gets the boxed table


def test_the_optimize_command_redirected_to_a_log(two_signature_model, tmp_path):
    result = servopt("optimize", two_signature_model, tmp_path / "out", "--steps",
                     "freeze,optimize", width=80)
    assert result.exit_code == 0, result.output
    after = json.loads(servopt("describe", tmp_path / "out", "--json").stdout)
    assert_readable(result.stdout, 80, [str(after["node_count"])], log=True)
    assert "fuse_ops:" in result.stdout and "written to" in result.stdout


def test_gate_in_a_log_at_80_and_40_columns(metrics_json):  # noqa: F811
    for width in (80, 40):
        result = servopt("gate", metrics_json, "--thresholds", CONFIGS / "thresholds.yaml",
                         width=width)
        assert result.exit_code == 0, result.output
        # the objective's figures (p99 at the primary batch, size) of every candidate
        assert_readable(result.stdout, width, ["12", "11.5", "25"], log=True)
        assert "chosen" in result.stdout


def test_benchmark_tables_at_any_width():
    from components.benchmark_cli import _accuracy_table, _models_table, _results_table
    from components.core.benchmark.schema import BenchmarkResult

    metrics = benchmark()
    result = BenchmarkResult.from_dict({**metrics, "machine": {
        "cpu_model": "test", "cores": 2, "tensorflow_version": "2.21.0",
        "python_version": "3.11", "platform": "linux"}})
    numbers = [f"{b['p50_ms']:.2f}" for m in metrics["models"].values()
               for b in m["batches"].values()]
    numbers += [f"{b['speedup_p50']:.2f}x" for m in metrics["models"].values()
                for b in m["batches"].values() if b.get("speedup_p50")]
    for table in (_results_table(result), _models_table(result), _accuracy_table(result)):
        for width in (200, 80, 40):
            assert_readable(table.plain(width), width, [], log=True)
            assert_readable(terminal(table, width), width, [], log=False)
    latency = _results_table(result)
    for width in (200, 80, 40):
        assert_readable(latency.plain(width), width, numbers, log=True)
        assert_readable(terminal(latency, width), width, numbers, log=False)


def test_a_table_too_wide_for_the_width_becomes_one_block_per_row():
    table = Table("latency", (Column("model"), Column("batch", numeric=True),
                              Column("p50", numeric=True), Column("note")), key_columns=2)
    table.add_row("optimized", "100", "12.3456", Cell("a reason " * 12, "red"))
    table.add_row("quantized", "1", "0.98", "")
    wide = table.plain(200).splitlines()
    assert wide[1].split() == ["model", "batch", "p50", "note"]
    assert wide[3].split()[:3] == ["optimized", "100", "12.3456"]
    narrow = table.plain(40)
    assert narrow.splitlines()[1:3] == ["optimized, batch 100", "  p50   12.3456"]
    assert "quantized, batch 1" in narrow and "note" not in narrow.split("quantized")[1]
    assert_readable(narrow, 40, ["12.3456", "0.98"], log=True)


def test_a_word_longer_than_the_width_is_broken_not_cut():
    path = "/very/long/" + "directory/" * 12 + "saved_model.pb"
    text = Paragraph(f"written to {path}").plain(30)
    assert all(len(line) <= 30 for line in text.splitlines())
    assert "".join(line.strip() for line in text.splitlines()) == f"written to {path}"


def test_cells_are_text_not_markup():
    table = Table("t", (Column("model"),))
    table.add_row("[bold]x[/bold]")
    assert "[bold]x[/bold]" in terminal(table, 80)
    with pytest.raises(ValueError, match="2 cells for 1 columns"):
        table.add_row("a", "b")


def test_the_gates_tables_in_terminals_of_any_width(two_signature_model):
    from components.core.gate import candidate_table, decision_table, pairs_table
    from tests.test_gate_decision import gate

    decision = gate({"optimized": two_signature_model, "quantized": two_signature_model},
                    {"value": {"max_p99_ms": 11.8}})
    for table in (candidate_table(decision), decision_table(decision),
                  pairs_table(decision)):
        for width in (200, 80, 40):
            text = terminal(table, width)
            assert_readable(text, width, ["12", "11.8"], log=False)
            assert "FAIL" in text or "blocked" in text
