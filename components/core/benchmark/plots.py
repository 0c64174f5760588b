"""The report's figures, drawn with matplotlib and returned as PNG bytes.

Every model keeps one color across all figures: the baseline gray, candidates from a
qualitative palette. Figures that have nothing to show (no concurrency sweep, no
accuracy) are None.
"""

from __future__ import annotations

import io
import warnings

import matplotlib

matplotlib.use("Agg")  # no display: render to PNG

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.core.benchmark.schema import BenchmarkResult  # noqa: E402

BASELINE_COLOR = "#7f8c8d"
PALETTE = ["#2e86de", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#d35400",
           "#2c3e50"]
PERCENTILES = ("p50_ms", "p90_ms", "p95_ms", "p99_ms")

plt.rcParams.update({
    "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "axes.axisbelow": True, "figure.dpi": 110,
})


def model_colors(result: BenchmarkResult) -> dict[str, str]:
    colors, index = {}, 0
    for name in result.models:
        if name == result.baseline:
            colors[name] = BASELINE_COLOR
        else:
            colors[name] = PALETTE[index % len(PALETTE)]
            index += 1
    return colors


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # many rows: bbox_inches="tight" below still fits them
        warnings.simplefilter("ignore", UserWarning)
        figure.tight_layout()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def latency_figure(result: BenchmarkResult) -> bytes | None:
    """p50/p90/p95/p99 per model, one panel per batch size."""
    sizes = result.settings.batch_sizes
    measured = {n: m for n, m in result.models.items() if m.batches}
    if not measured:
        return None
    colors = model_colors(result)
    figure, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes) + 0.6, 3.4),
                                squeeze=False)
    width = 0.8 / len(measured)
    for ax, size in zip(axes[0], sizes, strict=True):
        for index, (name, model) in enumerate(measured.items()):
            batch = model.batches.get(size)
            if batch is None:
                continue
            values = [getattr(batch, key) for key in PERCENTILES]
            x = np.arange(len(PERCENTILES)) + (index - (len(measured) - 1) / 2) * width
            ax.bar(x, values, width, label=name, color=colors[name],
                   hatch=None if batch.stable else "//", edgecolor="white", linewidth=0.5)
        ax.set_xticks(np.arange(len(PERCENTILES)), [k[:-3] for k in PERCENTILES])
        ax.set_title(f"batch size {size}")
        ax.set_ylabel("latency (ms)")
    axes[0][0].legend(frameon=False, fontsize=8)
    figure.suptitle("Latency percentiles (hatched: not stable)", fontsize=10)
    return _png(figure)


def throughput_figure(result: BenchmarkResult) -> bytes | None:
    """Throughput against p99 in the concurrency sweep, one panel per batch size."""
    sizes = [s for s in result.settings.batch_sizes
             if any(p.batch_size == s for m in result.models.values() for p in m.concurrency)]
    if not sizes:
        return None
    colors = model_colors(result)
    figure, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes) + 0.6, 3.4),
                                squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for name, model in result.models.items():
            points = sorted((p for p in model.concurrency if p.batch_size == size),
                            key=lambda p: p.concurrency)
            if not points:
                continue
            ax.plot([p.p99_ms for p in points], [p.throughput for p in points], "o-",
                    color=colors[name], label=name)
            for p in points:
                ax.annotate(f"{p.concurrency}", (p.p99_ms, p.throughput), fontsize=7,
                            textcoords="offset points", xytext=(4, 4))
        ax.set_title(f"batch size {size}")
        ax.set_xlabel("p99 latency (ms)")
        ax.set_ylabel("throughput (examples/s)")
    axes[0][0].legend(frameon=False, fontsize=8)
    figure.suptitle("Throughput vs p99 latency (labels: concurrent clients)", fontsize=10)
    return _png(figure)


def size_figure(result: BenchmarkResult) -> bytes | None:
    models = {n: m for n, m in result.models.items() if m.size_bytes is not None}
    if not models:
        return None
    colors = model_colors(result)
    names = list(models)
    figure, ax = plt.subplots(figsize=(6.0, 0.45 * len(names) + 1.2))
    sizes = [models[n].size_bytes / 1e6 for n in names]
    bars = ax.barh(names, sizes, color=[colors[n] for n in names])
    ax.bar_label(bars, [f"{s:.2f} MB" for s in sizes], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("size on disk (MB)")
    ax.set_xlim(0, max(sizes) * 1.25 or 1)
    ax.set_title("Model size", fontsize=10)
    return _png(figure)


def accuracy_figure(result: BenchmarkResult) -> bytes | None:
    """Accuracy against the labels, and the candidates' top-1 agreement with the baseline."""
    rows = {n: m.accuracy for n, m in result.models.items() if m.accuracy is not None}
    series = {"accuracy": {n: a.accuracy for n, a in rows.items() if a.accuracy is not None},
              "top-1 agreement with baseline": {n: a.top1_agreement for n, a in rows.items()
                                               if a.top1_agreement is not None}}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    colors = model_colors(result)
    height = 0.45 * len(rows) + 1.2
    figure, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series) + 0.4, height),
                                squeeze=False)
    for ax, (title, values) in zip(axes[0], series.items(), strict=True):
        names = list(values)
        bars = ax.barh(names, [values[n] for n in names], color=[colors[n] for n in names])
        ax.bar_label(bars, [f"{values[n]:.2%}" for n in names], padding=3, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.3)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "25%", "50%", "75%", "100%"])
        ax.set_title(title, fontsize=10)
    return _png(figure)


def search_figure(result: BenchmarkResult) -> bytes | None:
    """The configuration search: p99 against throughput at its batch size, one point per
    (version, runtime, configuration), each version in its color, its best ringed."""
    from components.core.benchmark.search_table import search_rows

    rows = search_rows(result)
    if not rows:
        return None
    colors = model_colors(result)
    figure, ax = plt.subplots(figsize=(7.2, 4.2))
    for version in dict.fromkeys(row.version for row in rows):
        mine = [row for row in rows if row.version == version]
        color = colors.get(version) or colors.get(mine[0].row, PALETTE[0])
        ax.scatter([r.throughput for r in mine], [r.p99_ms for r in mine], color=color,
                   label=version, s=36, zorder=3)
        for row in mine:
            if row.best:
                ax.scatter([row.throughput], [row.p99_ms], s=160, facecolors="none",
                           edgecolors=color, linewidths=1.5, zorder=4)
            ax.annotate(f"{row.runtime}: {row.label}", (row.throughput, row.p99_ms),
                        textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.set_xlabel(f"throughput (examples/s) at batch {result.search.batch_size}")
    ax.set_ylabel("p99 latency (ms)")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("Configuration search: lower right is better (ringed: best of its version)",
                 fontsize=10)
    return _png(figure)
