"""The report's figures read at a glance with a dozen rows: measured on the drawn figure
(matplotlib's Agg canvas, pixel boxes of every text), not on the code that drew it."""

from __future__ import annotations

import dataclasses
import itertools

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.text import Text

from components.core.benchmark import plots
from components.core.benchmark.labels import Label, place_labels
from components.core.benchmark.report import render_report
from tests.report_rows import CHOSEN, ROWS, dozen_rows

BUILDERS = {
    "speed": plots.build_speed_figure,
    "throughput": plots.build_throughput_figure,
    "accuracy": plots.build_accuracy_figure,
    "search": plots.build_search_figure,
}


@pytest.fixture
def result():
    return dozen_rows()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _drawn_ticks(ax) -> list[Text]:
    """The tick labels the axes draws: those within its view (matplotlib keeps others)."""
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    return ([t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]
            + [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1])


def _texts(figure: Figure) -> list[tuple[str, object]]:
    """Every text drawn, with its box in pixels (a label's own box, not its leader line)."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    texts = list(figure.texts)  # the suptitle among them
    for ax in figure.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label,
                  ax.yaxis.label, *ax.texts, *_drawn_ticks(ax)]
    return [(t.get_text(), Text.get_window_extent(t, renderer)) for t in texts
            if t.get_visible() and t.get_text().strip()]


def _overlapping(figure: Figure) -> list[tuple[str, str]]:
    boxes = _texts(figure)
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
            if box_a.shrunk(0.98, 0.9).overlaps(box_b.shrunk(0.98, 0.9))]


@pytest.mark.parametrize("name", BUILDERS)
def test_no_two_texts_of_a_figure_overlap(result, name):
    figure = BUILDERS[name](result)
    assert figure is not None
    assert len(_texts(figure)) > 10
    assert _overlapping(figure) == []


@pytest.mark.parametrize("name", BUILDERS)
def test_no_legend_covers_the_data(result, name):
    figure = BUILDERS[name](result)
    assert figure.legends == []
    assert all(ax.get_legend() is None for ax in figure.axes)


@pytest.mark.parametrize("name", ["throughput", "accuracy", "search"])
def test_every_point_is_named_by_a_label_inside_its_panel(result, name):
    figure = BUILDERS[name](result)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for ax in figure.axes:
        frame = ax.get_window_extent(renderer)
        labels = [t for t in ax.texts if t.get_text()]
        assert labels, ax.get_title()
        for label in labels:
            box = label.get_window_extent(renderer)
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1, label.get_text()
            assert frame.y0 <= box.y0 and box.y1 <= frame.y1, label.get_text()


def test_the_overlap_check_can_fail():
    """Labels drawn at one point without placing them do overlap, and the check says so."""
    figure, ax = plt.subplots()
    for index in range(3):
        ax.annotate(f"label {index}", (0.5, 0.5))
    assert len(_overlapping(figure)) == 3


def test_labels_of_a_dozen_points_on_one_spot_are_placed_apart():
    figure, ax = plt.subplots(figsize=(5, 4))
    ax.plot([0.5] * 12, [0.5] * 12, "o")
    place_labels(ax, [Label(0.5, 0.5, f"version {i} · tflite") for i in range(12)])
    assert _overlapping(figure) == []


def test_each_line_of_a_panel_has_its_own_color(result):
    figure = plots.build_throughput_figure(result)
    for ax in figure.axes:
        colors = [to_hex(line.get_color()) for line in ax.get_lines()]
        assert len(colors) >= 3
        assert len(set(colors)) == len(colors), ax.get_title()


def test_a_dozen_versions_get_a_dozen_colors(result):
    for index in range(12):
        result.models[f"v{index}"] = dataclasses.replace(result.models["optimized"],
                                                         runtime=None)
    colors = plots.version_colors(result)
    assert len(colors) == 1 + 5 + 12
    candidates = [c for v, c in colors.items() if v != "base"]
    assert len(set(candidates[:len(plots.PALETTE)])) == len(plots.PALETTE) == 13
    assert plots.BASELINE_COLOR not in candidates


def test_the_search_plot_gives_each_version_its_color(result):
    """Two versions once shared a color there (their rows fell back to one palette slot)."""
    figure = plots.build_search_figure(result)
    ax = figure.axes[0]
    colors = {}
    for label in ax.texts:
        colors.setdefault(to_hex(label.get_color()), set()).add(
            label.get_text().split(" · ")[0])
    assert len(colors) == 2 and all(len(names) == 1 for names in colors.values())


def _ticks(figure: Figure) -> list[Text]:
    figure.canvas.draw()
    return figure.axes[0].get_yticklabels()


def test_the_speed_figure_ranks_pairs_best_first_and_highlights_the_best(result):
    figure = plots.build_speed_figure(result)
    ticks = _ticks(figure)
    assert len(ticks) == len(ROWS) == 12
    bold = [t.get_text() for t in ticks if t.get_fontweight() == "bold"]
    assert bold == ["★ " + plots.row_label(result, CHOSEN)]
    assert ticks[0].get_text() == bold[0]  # the search's best is also the fastest here
    speedups = [result.models[r].at(32).speedup_p50 for r in ROWS]
    assert ticks[-1].get_text() == plots.row_label(
        result, list(ROWS)[speedups.index(min(speedups))])
    assert [ax.get_title() for ax in figure.axes] == ["batch size 1", "batch size 32"]
    for ax in figure.axes:  # the band behind the chosen row, in every panel
        assert [p.get_y() for p in ax.patches if to_hex(p.get_facecolor()) ==
                plots.HIGHLIGHT] == [-0.45]


def test_the_gate_s_choice_is_highlighted_where_given(result):
    figure = plots.build_speed_figure(result, chosen="optimized")
    bold = [t.get_text() for t in _ticks(figure) if t.get_fontweight() == "bold"]
    assert bold == ["★ optimized · tensorflow"]
    assert "★ chosen: optimized · tensorflow" in {t.get_text().split(".")[0]
                                                  for t in figure.texts}


def test_a_weighted_figure_adds_a_panel_and_ranks_the_pairs(result):
    weighted = {row: 1.0 + index / 10 for index, row in enumerate(ROWS)}
    figure = plots.build_speed_figure(result, weighted=weighted)
    assert figure.axes[0].get_title() == "weighted by the traffic"
    order = [t.get_text().removeprefix("★ ") for t in _ticks(figure)]
    assert order == [plots.row_label(result, row) for row in reversed(ROWS)]


def test_unstable_speedups_are_drawn_hollow(result):
    result.models["optimized"].batches[32].stable = False
    figure = plots.build_speed_figure(result)
    ax = figure.axes[1]
    hollow = [line for line in ax.get_lines() if line.get_markerfacecolor() == "white"]
    assert len(hollow) == 1
    assert hollow[0].get_ydata()[0] == [t.get_text() for t in _ticks(figure)].index(
        "optimized · tensorflow")


def test_the_accuracy_figure_rings_the_chosen_pair(result):
    figure = plots.build_accuracy_figure(result)
    assert [ax.get_title() for ax in figure.axes] == [
        "accuracy against the labels", "top-1 agreement with the baseline"]
    chosen = result.models[CHOSEN]
    for ax, value in zip(figure.axes, (chosen.accuracy.accuracy,
                                       chosen.accuracy.top1_agreement), strict=True):
        rings = [line for line in ax.get_lines() if line.get_markersize() == 15]
        assert len(rings) == 1
        assert rings[0].get_xydata()[0].tolist() == [chosen.at(32).speedup_p50, value]


def test_figures_with_nothing_to_show_are_left_out(result):
    for model in result.models.values():
        model.concurrency, model.accuracy = [], None
    result.search = None
    assert plots.throughput_figure(result) is None
    assert plots.accuracy_figure(result) is None
    assert plots.search_figure(result) is None
    page = render_report(result)
    assert page.count("data:image/png;base64,") == 1
    assert "Which pair is fastest" in page and "Accuracy against speed" not in page


def test_ratio_ticks_stay_apart_however_wide_the_intervals(result):
    """Rows measured once for two runtimes on a busy machine: intervals from 0.05× to 24×."""
    for row in ("int8@tensorflow", "f32@tensorflow"):
        for batch in result.models[row].batches.values():
            batch.speedup_p50_interval = [0.05, 24.0]
    figure = plots.build_speed_figure(result)
    assert _overlapping(figure) == []
    ticks = [t.get_text() for t in _drawn_ticks(figure.axes[0]) if t.get_text()][:6]
    assert "1×" in ticks and len(ticks) >= 3


def test_rows_without_a_weighted_figure_rank_after_those_with_one(result):
    weighted = {"fp16@tensorflow": 1.5, "int8@tensorflow": 1.2}
    figure = plots.build_speed_figure(result, weighted=weighted)
    order = [t.get_text().removeprefix("★ ") for t in _ticks(figure)]
    assert order[:3] == ["fp16 · tensorflow", "int8 · tensorflow",
                         plots.row_label(result, CHOSEN)]
    assert len(order) == 12
    assert figure._suptitle.get_text().endswith("best first weighted by the traffic")
