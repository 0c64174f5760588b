"""The report's figures, one per question, drawn with matplotlib.

- speed_figure: which (version, configuration) pair is fastest: its speedup over the
  baseline with the confidence interval, one panel per batch size (and, when given, one
  for a traffic-weighted figure), rows sorted best first, the chosen pair highlighted.
- throughput_figure: latency against throughput per runtime, from the concurrency sweep.
- accuracy_figure: accuracy (or top-1 agreement with the baseline) against speed.
- search_figure: the configuration search's rows, p99 against throughput.

Each version keeps one color in every figure (the baseline gray; thirteen distinct colors
before one repeats) and every series is named by a direct label placed where it overlaps
nothing (labels.place_labels), so no legend covers the data. `build_*` return the Figure
(the layout tests measure it); `*_figure` return PNG bytes, None when there is nothing
to show.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # no display: render to PNG

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FixedLocator,
    FuncFormatter,
    NullLocator,
    PercentFormatter,
)

from components.core.benchmark.labels import Label, along, place_labels  # noqa: E402
from components.core.benchmark.schema import BenchmarkResult, ModelResult  # noqa: E402

BASELINE_COLOR = "#7b8794"
# Tableau 10 without its gray, then four more that stay apart from them.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
           "#9c755f", "#ff9da7", "#1f3b73", "#8cd17d", "#d37295", "#499894")
HIGHLIGHT = "#fff3c4"  # the band behind the chosen pair
INK, MUTED = "#1f2933", "#616e7c"
MARKERS = {"tensorflow": "o", "tflite": "s"}  # runtime -> marker, in every figure
# The speed metric of each search objective: the candidate/baseline ratio and its interval.
METRICS = {
    "p50_ms": ("speedup_p50", "speedup_p50_interval", "p50 speedup"),
    "p99_ms": ("speedup_p99", "speedup_p99_interval", "p99 speedup"),
    "throughput": ("throughput_ratio", "throughput_ratio_interval", "throughput ratio"),
}
DEFAULT_OBJECTIVE = "p50_ms"
_STYLE = {
    "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "axes.axisbelow": True, "figure.dpi": 110,
    "axes.titlesize": 9.5, "axes.titleweight": "bold", "axes.edgecolor": "#9aa5b1",
    "xtick.color": MUTED, "ytick.color": MUTED, "axes.labelcolor": INK,
}
plt.rcParams.update(_STYLE)


def version_colors(result: BenchmarkResult) -> dict[str, str]:
    """Version -> color: the baseline's gray, the others from PALETTE in benchmark order."""
    colors: dict[str, str] = {}
    base = result.version_of(result.baseline) if result.baseline in result.models else None
    for row in result.models:
        version = result.version_of(row)
        if version in colors:
            continue
        colors[version] = (BASELINE_COLOR if version == base else
                           PALETTE[sum(v != base for v in colors) % len(PALETTE)])
    return colors


def row_color(result: BenchmarkResult, row: str) -> str:
    return version_colors(result)[result.version_of(row)]


def row_label(result: BenchmarkResult, row: str, with_runtime: bool = True) -> str:
    """How a figure names a row: its version, runtime (unless the panel names it) and
    configuration when it is not the default."""
    model = result.models[row]
    runtime = model.runtime
    if runtime is None:
        return row
    text = f"{runtime.version} · {runtime.runtime}" if with_runtime else runtime.version
    return text if runtime.label == "default" else f"{text} · {runtime.label}"


def _marker(model: ModelResult) -> str:
    return MARKERS.get(model.runtime_name() or "", "D")


def objective_of(result: BenchmarkResult) -> str:
    """The objective the figures rank by: the search's when one ran, else p50."""
    objective = result.search.objective if result.search else DEFAULT_OBJECTIVE
    return objective if objective in METRICS else DEFAULT_OBJECTIVE


def ranking_batch_size(result: BenchmarkResult) -> int:
    """The batch size rows are ranked at: the search's, else the largest measured."""
    if result.search is not None:
        return result.search.batch_size
    return max(result.settings.batch_sizes)


def chosen_row(result: BenchmarkResult, chosen: str | None = None) -> str | None:
    """The row to highlight: `chosen` (the gate's decision row) when given and measured;
    else the best row by the search's objective; else the candidate with the highest
    speed figure at the ranking batch size; None without a measured candidate."""
    if chosen is not None:
        return chosen if chosen in result.models else None
    if result.search is not None:
        from components.core.benchmark.search_table import search_rows

        rows = [r for r in search_rows(result) if r.best]
        if rows:
            return rows[0].row
    key = METRICS[objective_of(result)][0]
    size = ranking_batch_size(result)
    values = {row: getattr(m.at(size), key) for row, m in _candidates(result).items()
              if m.at(size) is not None and getattr(m.at(size), key) is not None}
    return max(values, key=values.get) if values else None


def _candidates(result: BenchmarkResult) -> dict[str, ModelResult]:
    return {row: m for row, m in result.models.items()
            if m.role != "baseline" and not m.error and m.batches}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.12)
    plt.close(figure)
    return buffer.getvalue()


def _figure(*args, **kwargs) -> Figure:
    return plt.figure(*args, **kwargs)


# --- which pair is fastest ---------------------------------------------------------------


def _finite(value) -> float | None:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def build_speed_figure(result: BenchmarkResult, chosen: str | None = None,
                       weighted: dict[str, float] | None = None,
                       weighted_title: str = "weighted by the traffic") -> Figure | None:
    """Speedup over the baseline per candidate row with its confidence interval, one panel
    per batch size, rows sorted best first (by `weighted` when given, else at the ranking
    batch size), the chosen row highlighted. `weighted` (row -> ratio to the baseline, e.g.
    a request-weighted figure of a traffic profile) adds a first panel and ranks by it."""
    key, interval_key, name = METRICS[objective_of(result)]
    sizes = sorted(result.settings.batch_sizes)
    rows = {row: m for row, m in _candidates(result).items()
            if any(_finite(getattr(b, key)) is not None for b in m.batches.values())}
    if not rows:
        return None
    rank_at = ranking_batch_size(result)

    def rank(row: str) -> tuple:
        """Weighted rows first, by their weighted figure; then by the ranking batch size."""
        if weighted is not None and _finite(weighted.get(row)) is not None:
            return 0, -weighted[row], row
        batch = rows[row].at(rank_at)
        value = _finite(getattr(batch, key)) if batch else None
        return 1, math.inf if value is None else -value, row
    order = sorted(rows, key=rank)
    highlight = chosen_row(result, chosen)
    # (title, batch size or None for the weighted panel, row -> (value, low, high))
    panels: list[tuple[str, int | None, dict]] = []
    if weighted:
        panels.append((weighted_title, None, {
            row: (weighted[row], None, None) for row in order
            if _finite(weighted.get(row)) is not None}))
    for size in sizes:
        values = {}
        for row in order:
            batch = rows[row].at(size)
            value = _finite(getattr(batch, key)) if batch else None
            if value is None:
                continue
            low, high = (getattr(batch, interval_key) or [None, None])
            values[row] = (value, _finite(low), _finite(high))
        panels.append((f"batch size {size}", size, values))
    height = 0.32 * len(order) + 1.5
    figure = _figure(figsize=(2.2 + 3.2 * len(panels), height))
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    positions = {row: index for index, row in enumerate(order)}
    for ax, (title, size, values) in zip(axes, panels, strict=True):
        # Ratios on a log scale: 0.5× lies as far below the baseline as 2× above it.
        xs = [v for triple in values.values() for v in triple if v and v > 0] + [1.0]
        low, high = min(xs), max(xs)
        pad = (high / low) ** 0.1 if high > low * 1.01 else 1.1
        ax.set_xscale("log")
        ax.set_xlim(low / pad, high * pad ** 3)
        ax.xaxis.set_major_locator(FixedLocator(_ratio_ticks(*ax.get_xlim())))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.axvline(1.0, color=BASELINE_COLOR, lw=1, ls="--", zorder=1)
        if highlight in positions:
            ax.axhspan(positions[highlight] - 0.45, positions[highlight] + 0.45,
                       color=HIGHLIGHT, zorder=0, lw=0)
        for row, (value, lo, hi) in values.items():
            y, color = positions[row], row_color(result, row)
            if lo is not None and hi is not None:
                ax.hlines(y, lo, hi, color=color, lw=2, alpha=0.55, zorder=2)
            batch = rows[row].at(size) if size is not None else None
            steady = batch is None or (batch.stable and batch.speedup_stable is not False)
            ax.plot([value], [y], marker=_marker(rows[row]), ls="none", zorder=3, ms=6,
                    color=color, markerfacecolor=color if steady else "white",
                    markeredgecolor="white" if steady else color,
                    markeredgewidth=0.6 if steady else 1.4)
            ax.annotate(f"{value:.2f}×", (hi if hi is not None else value, y),
                        xytext=(5, 0), textcoords="offset points", va="center",
                        fontsize=7, color=INK, fontweight="bold" if row == highlight
                        else "normal")
        ax.set_title(title)
        ax.set_xlabel(f"{name} vs {result.baseline} (log scale)")
        ax.grid(axis="y", visible=False)
        ax.set_ylim(len(order) - 0.5, -0.5)
    axes[0].set_yticks(range(len(order)),
                       [("★ " if row == highlight else "") + row_label(result, row)
                        for row in order])
    for tick, row in zip(axes[0].get_yticklabels(), order, strict=True):
        tick.set_color(INK)
        if row == highlight:
            tick.set_fontweight("bold")
    ranked = weighted_title if weighted else f"at batch size {rank_at}"
    star = f"★ {'chosen' if chosen else 'best'}: {row_label(result, highlight)}. " \
        if highlight in positions else ""
    figure.suptitle(f"Which pair is fastest: {name} over {result.baseline}, best first "
                    f"{ranked}", fontsize=10, fontweight="bold", x=0.01, ha="left")
    figure.text(0.01, 0.0, f"{star}Bars: {_confidence(result)} interval; dashed: the "
                "baseline (1×); hollow: not stable.", fontsize=7.5, color=MUTED, ha="left",
                va="top")
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    return figure


_NICE_RATIOS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0,
                4.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)


def _ratio_ticks(low: float, high: float, most: int = 5) -> list[float]:
    """At most about `most` round ratios between `low` and `high`, 1 among them, spaced
    evenly enough on the log scale that their labels never meet."""
    gap = math.log(high / low) / most
    ticks = [1.0]
    for side in (sorted(v for v in _NICE_RATIOS if 1 < v <= high),
                 sorted((v for v in _NICE_RATIOS if low <= v < 1), reverse=True)):
        last = 1.0
        for value in side:
            if abs(math.log(value / last)) >= gap:
                ticks.append(value)
                last = value
    return sorted(ticks)


def _confidence(result: BenchmarkResult) -> str:
    for model in result.models.values():
        for batch in model.batches.values():
            if batch.confidence:
                return f"{batch.confidence:.0%} confidence"
    return "confidence"


def speed_figure(result: BenchmarkResult, chosen: str | None = None,
                 weighted: dict[str, float] | None = None) -> bytes | None:
    figure = build_speed_figure(result, chosen, weighted)
    return None if figure is None else _png(figure)


# --- latency against throughput per runtime -----------------------------------------------


def build_throughput_figure(result: BenchmarkResult) -> Figure | None:
    """Throughput against p99 in the concurrency sweep: one row of panels per runtime, one
    panel per batch size; each line a row from 1 to N clients, named at its end. The
    baseline is drawn dashed in every panel as the reference."""
    swept = {row: m for row, m in result.models.items() if m.concurrency and not m.error}
    if not swept:
        return None
    runtimes = list(dict.fromkeys(m.runtime_name() or "server" for m in swept.values()))
    sizes = sorted({p.batch_size for m in swept.values() for p in m.concurrency})
    base = swept.get(result.baseline)
    figure = _figure(figsize=(4.6 * len(sizes) + 0.8, 3.5 * len(runtimes) + 0.5))
    grid = figure.subplots(len(runtimes), len(sizes), squeeze=False)
    pending = []
    for runtime, axes in zip(runtimes, grid, strict=True):
        mine = {row: m for row, m in swept.items() if (m.runtime_name() or "server") == runtime}
        if base is not None:
            mine.setdefault(result.baseline, base)
        for ax, size in zip(axes, sizes, strict=True):
            labels, extents = [], []
            for row, model in mine.items():
                points = sorted((p for p in model.concurrency if p.batch_size == size),
                                key=lambda p: p.concurrency)
                if not points:
                    continue
                is_base = row == result.baseline
                xs, ys = [p.p99_ms for p in points], [p.throughput for p in points]
                extents += along(xs, ys)
                ax.plot(xs, ys, ls="--" if is_base else "-", marker=_marker(model),
                        color=row_color(result, row), lw=1.4, ms=4.5,
                        zorder=2 if is_base else 3)
                name = row_label(result, row, with_runtime=is_base)
                labels.append(Label(xs[-1], ys[-1], name, color=row_color(result, row)
                                    if not is_base else MUTED))
            _pad(ax, extents, right=0.4)
            ax.set_title(f"{runtime} · batch size {size}")
            ax.set_xlabel("p99 latency (ms)")
            ax.set_ylabel("throughput (examples/s)")
            pending.append((ax, labels, extents))
    figure.suptitle("Latency against throughput per runtime: each line from 1 client to "
                    "the most; up and left is better", fontsize=10, fontweight="bold",
                    x=0.01, ha="left")
    figure.tight_layout()
    for ax, labels, extents in pending:
        place_labels(ax, labels, avoid=extents)
    return figure


def _pad(ax, points: list[tuple[float, float]], right: float = 0.3, top: float = 0.15,
         low: float = 0.08) -> None:
    """Room around the data for the direct labels."""
    if not points:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    dx = (max(xs) - min(xs)) or max(abs(max(xs)), 1e-9) * 0.2
    dy = (max(ys) - min(ys)) or max(abs(max(ys)), 1e-9) * 0.2
    # Counts and latencies are never negative: no axis of them starts below 0.
    ax.set_xlim(max(min(xs) - dx * low, 0 if min(xs) >= 0 else -math.inf),
                max(xs) + dx * right)
    ax.set_ylim(max(min(ys) - dy * low, 0 if min(ys) >= 0 else -math.inf),
                max(ys) + dy * top)


def throughput_figure(result: BenchmarkResult) -> bytes | None:
    figure = build_throughput_figure(result)
    return None if figure is None else _png(figure)


# --- accuracy against speed ----------------------------------------------------------------


def build_accuracy_figure(result: BenchmarkResult, chosen: str | None = None
                          ) -> Figure | None:
    """Accuracy against the labels (or, without labels, top-1 agreement with the baseline)
    against the speed figure at the ranking batch size, one point per row, each named."""
    key, _, name = METRICS[objective_of(result)]
    size = ranking_batch_size(result)
    panels = [(metric, title) for metric, title in (
        ("accuracy", "accuracy against the labels"),
        ("top1_agreement", "top-1 agreement with the baseline"))
        if any(m.accuracy_value(metric) is not None for m in result.models.values())]
    if not panels:
        return None
    highlight = chosen_row(result, chosen)
    figure = _figure(figsize=(5.4 * len(panels) + 0.6, 4.3))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    pending = []
    for ax, (metric, title) in zip(axes, panels, strict=True):
        labels, points = [], []
        for row, model in result.models.items():
            value = model.accuracy_value(metric)
            is_base = row == result.baseline
            if is_base and value is None and metric == "top1_agreement":
                value = 1.0  # the baseline agrees with itself
            batch = model.at(size)
            speed = 1.0 if is_base else _finite(getattr(batch, key)) if batch else None
            if value is None or speed is None or model.error:
                continue
            color = row_color(result, row)
            points.append((speed, value))
            if row == highlight:
                ax.plot([speed], [value], marker="o", ms=15, mfc="none", mec=INK, mew=1.4,
                        zorder=4)
            ax.plot([speed], [value], marker=_marker(model), color=color, ms=7, zorder=3,
                    markeredgecolor="white", markeredgewidth=0.6)
            labels.append(Label(speed, value, ("★ " if row == highlight else "")
                                + row_label(result, row), color=INK if row == highlight
                                else color if not is_base else MUTED,
                                bold=row == highlight, radius=8 if row == highlight else 5))
        ax.axvline(1.0, color=BASELINE_COLOR, lw=1, ls="--", zorder=1)
        _pad(ax, points + [(1.0, points[0][1])] if points else [], right=0.45, top=0.3,
             low=0.45)
        points = points + along([1.0, 1.0], list(ax.get_ylim()), steps=40)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
        ax.set_title(title)
        ax.set_xlabel(f"{name} vs {result.baseline} at batch size {size} (×)")
        ax.set_ylabel(metric.replace("top1_", "top-1 "))
        pending.append((ax, labels, points))
    figure.suptitle("Accuracy against speed: right is faster, up is more accurate",
                    fontsize=10, fontweight="bold", x=0.01, ha="left")
    figure.tight_layout()
    for ax, labels, points in pending:
        place_labels(ax, labels, avoid=points)
    return figure


def accuracy_figure(result: BenchmarkResult, chosen: str | None = None) -> bytes | None:
    figure = build_accuracy_figure(result, chosen)
    return None if figure is None else _png(figure)


# --- the configuration search --------------------------------------------------------------


def build_search_figure(result: BenchmarkResult) -> Figure | None:
    """The configuration search: p99 against throughput at its batch size, one point per
    (version, runtime, configuration), each version in its color, each runtime in its
    marker, its best ringed, every point named."""
    from components.core.benchmark.search_table import search_rows

    rows = search_rows(result)
    if not rows:
        return None
    figure = _figure(figsize=(8.0, 4.8))
    ax = figure.subplots()
    points = []
    for row in rows:
        model = result.models[row.row]
        color = row_color(result, row.row)
        if row.best:
            ax.plot([row.throughput], [row.p99_ms], marker="o", ms=14, mfc="none", mec=color,
                    mew=1.4, zorder=4)
        ax.plot([row.throughput], [row.p99_ms], marker=_marker(model), color=color, ms=6.5,
                zorder=3, markeredgecolor="white", markeredgewidth=0.6)
        points.append((row.throughput, row.p99_ms))
    _pad(ax, points, right=0.5, top=0.25, low=0.35)
    ax.set_xlabel(f"throughput (examples/s) at batch size {result.search.batch_size}")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title("Configuration search: lower right is better; ringed: the best of its "
                 "version and runtime", loc="left")
    figure.tight_layout()
    place_labels(ax, [Label(r.throughput, r.p99_ms, row_label(result, r.row),
                            color=row_color(result, r.row), bold=r.best,
                            radius=8 if r.best else 5) for r in rows],
                 avoid=points)
    return figure


def search_figure(result: BenchmarkResult) -> bytes | None:
    figure = build_search_figure(result)
    return None if figure is None else _png(figure)
