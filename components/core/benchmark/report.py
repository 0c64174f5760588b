"""The benchmark as one self-contained HTML page: no scripts, fonts or images to fetch.

Machine and settings first (results mean little without them), then one figure per
question (which pair is fastest, latency against throughput per runtime, accuracy against
speed; see plots), embedded as base64 PNG, then one summary row per model, one table per
batch size (latency, throughput, stability, speedup and accuracy against the baseline)
and the configuration search with its figure.
"""

from __future__ import annotations

import base64
import html
import os
from datetime import UTC, datetime
from pathlib import Path

from components.core.benchmark import plots
from components.core.benchmark.schema import BenchmarkResult, ModelResult
from components.core.benchmark.stats import interval_text
from components.core.errors import ServoptError

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --card:#fff;
  --good:#1e7e34; --bad:#c0392b; --warn:#b7791f; --accent:#2e86de; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 24px 48px; }
h1 { font-size:24px; margin:0 0 4px; }
h2 { font-size:17px; margin:32px 0 10px; }
.sub { color:var(--muted); margin:0 0 18px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px;
  padding:16px 18px; margin:12px 0; box-shadow:0 1px 2px rgba(0,0,0,.04);
  overflow-x:auto; }
.facts { display:grid; grid-template-columns:repeat(auto-fill, minmax(210px, 1fr));
  gap:10px 22px; }
.fact .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.fact .v { font-weight:600; word-break:break-word; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { padding:7px 10px; border-bottom:1px solid var(--line); text-align:right;
  white-space:nowrap; }
th { font-size:12px; color:var(--muted); font-weight:600; background:#fafbfc; }
th:first-child, td:first-child { text-align:left; }
tbody tr:hover { background:#f8fafc; }
td.name { font-weight:600; }
.role { display:block; font-size:11px; font-weight:600; color:var(--muted); }
.badge { display:inline-block; padding:1px 8px; border-radius:999px; font-size:12px;
  font-weight:600; }
.ok { background:#e3f5e8; color:var(--good); }
.unstable { background:#fdf3e1; color:var(--warn); }
.failed { background:#fde8e6; color:var(--bad); }
.up { color:var(--good); font-weight:600; }
.down { color:var(--bad); font-weight:600; }
.err { color:var(--bad); white-space:normal; text-align:left; }
.muted { color:var(--muted); }
td.flags { text-align:left; white-space:normal; min-width:280px; font-size:12px; }
figure { margin:0; }
figure img { max-width:100%; height:auto; display:block; margin:0 auto; }
footer { color:var(--muted); font-size:12px; margin-top:28px; }
"""


def _e(value) -> str:
    return html.escape(str(value))


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}" if value < 10 else f"{value:.1f}"


def _mb(value: int | None) -> str:
    return "–" if value is None else f"{value / 1e6:.2f} MB"


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.3g} {unit}".strip()


def _ratio(value: float | None, interval: list | None = None) -> str:
    """A speedup, with its confidence interval beneath where the benchmark has one."""
    if value is None:
        return '<span class="muted">–</span>'
    css = "up" if value >= 1.05 else "down" if value <= 0.95 else ""
    bounds = interval_text(interval)
    bounds = f'<br><span class="muted">{bounds}</span>' if bounds else ""
    return f'<span class="{css}">{value:.2f}×</span>{bounds}'


def _load(share: float | None) -> str:
    """Other processes' share of the CPU while the windows ran (see benchmark.load)."""
    return "" if share is None else f", others {share:.0%} CPU"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _delta(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return '<span class="muted">–</span>'
    points = (value - base) * 100
    css = "down" if points < -0.5 else "up" if points > 0.5 else ""
    return f'<span class="{css}">{points:+.2f} pt</span>'


def _name(name: str, model: ModelResult) -> str:
    role = model.role + (f", {model.runtime.runtime}" if model.runtime else "")
    return f'<td class="name">{_e(name)}<span class="role">{_e(role)}</span></td>'


def _facts(pairs: list[tuple[str, str]]) -> str:
    items = "".join(f'<div class="fact"><div class="k">{_e(k)}</div>'
                    f'<div class="v">{_e(v)}</div></div>' for k, v in pairs)
    return f'<div class="card facts">{items}</div>'


def _machine(result: BenchmarkResult) -> str:
    m, s = result.machine, result.settings
    window = (f"{s.window_seconds:g} s" if s.window_seconds
              else f"{s.window_requests} requests")
    return _facts([
        ("CPU", m.cpu_model), ("cores", str(m.cores)),
        ("TensorFlow", m.tensorflow_version), ("Python", m.python_version),
        ("platform", m.platform), ("backend", s.backend),
        ("threads (intra / inter op)", f"{s.intra_op_threads} / {s.inter_op_threads}"),
        ("signature", s.signature),
        ("batch sizes", ", ".join(map(str, s.batch_sizes))),
        ("concurrency", ", ".join(map(str, s.concurrency))),
        ("warm-up / window", f"{s.warmup_requests} requests / {window}"),
        ("stability", f"last 3 windows' p50 within {s.stability_percent:g}%, "
                      f"at most {s.max_windows} windows"),
    ])


def _summary(result: BenchmarkResult) -> str:
    rows = []
    for name, m in result.models.items():
        status = ('<span class="badge failed">failed</span>' if m.error
                  else '<span class="badge ok">measured</span>')
        rows.append(
            f"<tr>{_name(name, m)}<td>{status}</td><td>{_mb(m.size_bytes)}</td>"
            f"<td>{'–' if m.load_time_s is None else f'{m.load_time_s:.2f} s'}</td>"
            f"<td>{_ms(m.first_request_ms)}{'' if m.first_request_ms is None else ' ms'}</td>"
            f"<td>{_mb(m.peak_memory_bytes)}</td>"
            f"<td>{_num(m.flops_per_example, 'FLOP')}</td>"
            f"<td>{_pct(m.accuracy.accuracy if m.accuracy else None)}</td></tr>")
        if m.error:
            rows.append(f'<tr><td></td><td class="err" colspan="7">{_e(m.error)}</td></tr>')
        for note in m.runtime.notes if m.runtime else []:  # e.g. possibly optimistic
            rows.append(f'<tr><td></td><td class="muted" colspan="7">{_e(note)}</td></tr>')
    head = ("<tr><th>model</th><th>status</th><th>size</th><th>load time</th>"
            "<th>first request</th><th>peak memory</th><th>FLOPs / example</th>"
            "<th>accuracy</th></tr>")
    return f'<div class="card"><table><thead>{head}</thead><tbody>{"".join(rows)}' \
           '</tbody></table></div>'


def _batch_table(result: BenchmarkResult, size: int) -> str:
    base = result.models[result.baseline]
    base_accuracy = base.accuracy.accuracy if base.accuracy else None
    rows = []
    for name, m in result.models.items():
        b = m.batches.get(size)
        if b is None:
            rows.append(f'{_name(name, m)}<td colspan="11" class="muted">not measured</td>')
            continue
        stable = ('<span class="badge ok">stable</span>' if b.stable
                  else '<span class="badge unstable">unstable</span>')
        candidate = m.role != "baseline"
        accuracy = m.accuracy
        value = accuracy.accuracy if accuracy else None
        delta = _delta(value, base_accuracy) if candidate else ""
        agreement = _pct(accuracy.top1_agreement) if candidate and accuracy else ""
        rows.append(
            f"{_name(name, m)}<td>{_ms(b.p50_ms)}</td><td>{_ms(b.p90_ms)}</td>"
            f"<td>{_ms(b.p99_ms)}</td><td>{_num(b.throughput)}/s</td>"
            f"<td>{stable} <span class=\"muted\">{b.windows}×{_load(b.other_cpu)}</span></td>"
            f"<td>{_ratio(b.speedup_p50, b.speedup_p50_interval) if candidate else ''}</td>"
            f"<td>{_ratio(b.speedup_p99, b.speedup_p99_interval) if candidate else ''}</td>"
            f"<td>{_num(b.achieved_flops_per_s)}</td>"
            f"<td>{_pct(value)}</td><td>{delta}</td><td>{agreement}</td>")
    head = ("<tr><th>model</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th>"
            "<th>throughput</th><th>stable</th><th>speedup p50</th><th>speedup p99</th>"
            "<th>achieved FLOP/s</th><th>accuracy</th><th>Δ accuracy</th><th>top-1 agreement</th>"
            "</tr>")
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    return (f"<h2>Batch size {size}</h2><div class=\"card\"><table><thead>{head}</thead>"
            f"<tbody>{body}</tbody></table></div>")


def _search_section(result: BenchmarkResult) -> str:
    """The configuration search: its table (best first), the steps it took and its plot."""
    from components.core.benchmark.search_table import search_rows

    search, rows = result.search, search_rows(result)
    if search is None:
        return ""
    body = "".join(
        f"<tr><td class=\"name\">{'★ ' if r.best else ''}{_e(r.version)}</td>"
        f"<td>{_e(r.runtime)}</td><td>{_e(r.label)}</td><td>{_ms(r.p50_ms)}</td>"
        f"<td>{_ms(r.p99_ms)}</td><td>{_num(r.throughput)}/s</td>"
        f"<td>{_ratio(r.speedup_p99, r.speedup_p99_interval)}</td>"
        f"<td class=\"muted flags\">{_e(' '.join(r.flags))}</td></tr>"
        for r in rows)
    head = ("<tr><th>model</th><th>runtime</th><th>configuration</th><th>p50 ms</th>"
            "<th>p99 ms</th><th>throughput</th><th>speedup p99</th>"
            "<th style=\"text-align:left\">tensorflow_model_server flags</th></tr>")
    steps = "".join(f"<li><b>{_e(step.knob)}</b>: " + "; ".join(
        f"{_e(c)}: {_e(o)}" for c, o in step.outcomes.items()) + "</li>"
        for step in search.steps)
    return (f"<h2>Configuration search</h2><p class=\"sub\">{_e(search.objective)} at batch "
            f"{search.batch_size}, best first; ★ the best settings found for each contender. "
            f"{search.elapsed_s:.0f} s of a {search.budget_s:g} s budget; "
            f"{_e(search.stopped)}.</p>"
            f"<div class=\"card\"><table><thead>{head}</thead><tbody>{body}</tbody></table>"
            f"<ul>{steps}</ul></div>"
            + _plot(lambda: plots.search_figure(result), result,
                    "configuration search: p99 against throughput"))


def _figure(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<figure class="card"><img alt="{_e(alt)}" src="data:image/png;base64,{data}">' \
           '</figure>'


def _plot(draw, result: BenchmarkResult, alt: str) -> str:
    """One figure; a figure that cannot be drawn is noted on the page and recorded in
    the result's `step_errors['plots']`, and the page goes on without it."""
    try:
        return _figure(draw(), alt)
    except Exception as err:  # noqa: BLE001 - one figure must not cost the report
        text = f"{alt}: {type(err).__name__}: {err}"
        previous = result.step_errors.get("plots")
        result.step_errors["plots"] = f"{previous}; {text}" if previous else text
        return f'<div class="card err">figure not drawn: {_e(text)}</div>'


def _plot_section(title: str, draw, result: BenchmarkResult, alt: str,
                  caption: str = "") -> str:
    """A titled figure (see _plot); nothing where there is nothing to draw."""
    figure = _plot(draw, result, alt)
    caption = f'<p class="sub">{caption}</p>' if caption else ""
    return f"<h2>{_e(title)}</h2>{caption}{figure}" if figure else ""


def _run_notes(result: BenchmarkResult) -> str:
    """What the time budget left unmeasured and the steps that failed."""
    notes = []
    budget = result.budget
    if budget and budget.stopped:
        notes.append(f"time budget: {budget.stopped} ({budget.elapsed_s:.0f} s of "
                     f"{budget.budget_s:g} s)")
    if budget and budget.memory_groups:
        groups = "; ".join(", ".join(group) for group in budget.memory_groups)
        notes.append(f"memory budget ({(budget.memory_budget_bytes or 0) / (1 << 20):.0f} "
                     f"MiB for the workers): the candidates were measured in "
                     f"{len(budget.memory_groups)} groups, each with the baseline: {groups}")
    notes += [f"{step} failed: {error}" for step, error in result.step_errors.items()]
    notes += [f"{name}: {step} failed: {error}" for name, model in result.models.items()
              for step, error in model.step_errors.items()]
    return "".join(f'<div class="card err">{_e(note)}</div>' for note in notes)


def render_report(result: BenchmarkResult, chosen: str | None = None,
                  weighted: dict[str, float] | None = None) -> str:
    """The whole page as a string. `chosen`: the row the gate chose (its decision's `row`),
    highlighted in the figures (default: the best the search found, see
    plots.chosen_row); `weighted`: row -> a traffic-weighted ratio to the baseline, shown
    first in the speed figure and ranking its rows (see plots.build_speed_figure)."""
    sizes = result.settings.batch_sizes
    candidates = result.candidates
    subtitle = (f"baseline <b>{_e(result.baseline)}</b>"
                + (f" against {', '.join(f'<b>{_e(c)}</b>' for c in candidates)}"
                   if candidates else ""))
    failed = result.failed()
    warning = "".join(f'<div class="card err"><b>{_e(n)}</b> could not be measured: '
                      f"{_e(e)}</div>" for n, e in failed.items())
    figures = "".join([
        _plot_section("Which pair is fastest",
                      lambda: plots.speed_figure(result, chosen, weighted), result,
                      "speedup over the baseline per pair and batch size",
                      _star(result, chosen)),
        _plot_section("Latency against throughput", lambda: plots.throughput_figure(result),
                      result, "throughput against p99 latency per runtime"),
        _plot_section("Accuracy against speed",
                      lambda: plots.accuracy_figure(result, chosen), result,
                      "accuracy against speedup per pair"),
    ])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Serving benchmark: {_e(result.baseline)}</title>
<style>{CSS}</style></head>
<body><main>
<h1>Serving benchmark</h1>
<p class="sub">{subtitle}</p>
{_machine(result)}
{warning}
{figures}
{_run_notes(result)}
<h2>Models</h2>
{_summary(result)}
{"".join(_batch_table(result, size) for size in sizes)}
{_search_section(result)}
<footer>Speedups are medians of per-round ratios to the baseline (rounds interleave
the models, so machine drift cancels). Unstable: the p50 of the last 3 windows spread
more than {result.settings.stability_percent:g}%. Written by servopt benchmark,
{stamp}.</footer>
</main></body></html>
"""


def _star(result: BenchmarkResult, chosen: str | None) -> str:
    """What the figures' ★ marks (plots.chosen_row), in words."""
    row = plots.chosen_row(result, chosen)
    if row is None:
        return ""
    name = f"<b>{_e(plots.row_label(result, row))}</b>"
    if chosen is not None:
        return f"★ the pair the gate chose: {name}"
    if result.search is not None:
        return (f"★ the best pair the configuration search found ({_e(result.search.objective)}"
                f" at batch {result.search.batch_size}): {name}")
    return (f"★ the fastest candidate at batch {plots.ranking_batch_size(result)}: {name}; "
            "the gate decides which is pushed")


def write_report(result: BenchmarkResult, path: str | os.PathLike, chosen: str | None = None,
                 weighted: dict[str, float] | None = None) -> Path:
    target = Path(path)
    try:
        target.write_text(render_report(result, chosen, weighted), encoding="utf-8")
    except OSError as err:
        raise ServoptError(f"{target}: cannot write the report ({err.strerror}); choose a "
                           "writable path") from None
    return target
