"""Direct labels that never overlap: each label is tried at offsets around its point, from
near to far, and kept at the first place where it overlaps no label placed before it, no
marked point and stays inside the axes. A label placed away from its point gets a thin
leader line. The report's figures label their series this way instead of with a legend
that covers data.
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.transforms import Bbox

# Directions from the point to the label, nearest first: right, left, above, below, the
# diagonals, then eight between; each tried at growing distances beyond the point's radius.
_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1),
               (1, 0.5), (1, -0.5), (-1, 0.5), (-1, -0.5), (0.5, 1), (-0.5, 1), (0.5, -1),
               (-0.5, -1))
_RINGS = (0, 8, 18, 30, 44, 60, 80, 104, 132)  # points beyond the point's radius
POINT_RADIUS = 5.0  # points: the area around a marker a label must leave free


@dataclass
class Label:
    x: float  # data coordinates of the point it names
    y: float
    text: str
    color: str = "#1f2933"
    bold: bool = False
    radius: float = POINT_RADIUS  # points kept free around it (more for a ringed marker)


def _alignment(dx: float, dy: float) -> tuple[str, str]:
    ha = "left" if dx > 0 else "right" if dx < 0 else "center"
    va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
    return ha, va


def _overlaps(box: Bbox, others: list[Bbox]) -> int:
    return sum(box.overlaps(other) for other in others)


def place_labels(ax: Axes, labels: list[Label], avoid: list[tuple[float, float]] = (),
                 fontsize: float = 7.5) -> list:
    """Annotate `labels` on `ax` so none overlaps another, a point of `labels` or `avoid`
    (data coordinates), a leader line, or leaves the axes; returns the annotations. Call
    it after the figure's layout is final (limits set, tight_layout run): it measures in
    pixels."""
    figure = ax.figure
    renderer = figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    to_px = ax.transData.transform
    px_per_pt = figure.dpi / 72
    marks = [(to_px((label.x, label.y)), label.radius * px_per_pt) for label in labels]
    marks += [(to_px(xy), POINT_RADIUS * px_per_pt * 0.6) for xy in avoid]
    taken = [Bbox.from_extents(px - r, py - r, px + r, py + r) for (px, py), r in marks]
    texts: list[Bbox] = []  # the labels placed so far
    leaders: list[list[tuple[float, float]]] = []  # their leader lines, as pixel points
    placed = []
    for label in labels:
        style = {"fontsize": fontsize, "color": label.color, "annotation_clip": False,
                 "fontweight": "bold" if label.bold else "normal", "zorder": 6,
                 "textcoords": "offset points"}
        probe = ax.annotate(label.text, (label.x, label.y), xytext=(0, 0), **style)
        size = probe.get_window_extent(renderer)
        probe.remove()
        width, height = size.width + 3, size.height + 3
        x, y = to_px((label.x, label.y))
        best = None
        for ring in _RINGS:
            for dx, dy in _DIRECTIONS:
                away = (label.radius + 1 + ring) * px_per_pt
                ax_, ay_ = x + dx * away, y + dy * away  # the anchor in pixels
                left = ax_ if dx > 0 else ax_ - width if dx < 0 else ax_ - width / 2
                bottom = ay_ if dy > 0 else ay_ - height if dy < 0 else ay_ - height / 2
                box = Bbox.from_bounds(left, bottom, width, height)
                outside = not (frame.x0 <= box.x0 and box.x1 <= frame.x1
                               and frame.y0 <= box.y0 and box.y1 <= frame.y1)
                leader = _leader((x, y), dx * away, dy * away) if ring else []
                cost = (100 * outside + 10 * _overlaps(box, texts) + _overlaps(box, taken)
                        + sum(any(box.contains(*xy) for xy in line) for line in leaders)
                        + sum(any(b.contains(*xy) for xy in leader) for b in texts))
                if best is None or cost < best[0]:
                    best = (cost, box, ring, leader, (dx, dy), away)
                if cost == 0:
                    break
            if best[0] == 0:
                break
        cost, box, ring, leader, (dx, dy), away = best
        ha, va = _alignment(dx, dy)
        arrow = {} if not ring else {"arrowprops": {
            "arrowstyle": "-", "color": "#9aa5b1", "lw": 0.6, "shrinkA": 0,
            "shrinkB": label.radius}}
        text = ax.annotate(label.text, (label.x, label.y), ha=ha, va=va,
                           xytext=(dx * away / px_per_pt, dy * away / px_per_pt), **style,
                           **arrow)
        leaders.append(leader)
        texts.append(box)
        placed.append(text)
    return placed


def _leader(start, dx: float, dy: float, steps: int = 12) -> list[tuple[float, float]]:
    """Pixel points along the line from a point to its label's anchor."""
    x, y = start
    return [(x + dx * k / steps, y + dy * k / steps) for k in range(2, steps + 1)]


def along(xs: list[float], ys: list[float], steps: int = 16) -> list[tuple[float, float]]:
    """Points along a polyline (data coordinates), for labels to keep off the line."""
    samples = []
    for i in range(len(xs) - 1):
        x0, y0, x1, y1 = xs[i], ys[i], xs[i + 1], ys[i + 1]
        samples += [(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps)
                    for k in range(steps)]
    return samples + [(xs[-1], ys[-1])] if xs else samples
