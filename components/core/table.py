"""The tables and text every `servopt` command prints, readable at any width and in logs.

A `Table` holds plain cells (never rich markup: model names and reasons are data) and
chooses its layout when rich prints it, from the width and whether the output is a
terminal:
- a terminal where the whole table fits: a boxed rich table;
- anything where the table fits without boxes (a log, a redirected or piped output, a
  narrower terminal): aligned plain columns, a dashed line under the headers;
- otherwise one block per row: the row's name, then one `column  value` line per cell.
Nothing is cut: a number is never split or shortened; a long text (a reason, a path)
wraps onto indented lines within the width. The width is rich's: $COLUMNS when set,
else the terminal's, else 80 (a CI log). `--json` stays the format for machines.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions
    from rich.text import Text

GAP = "  "  # between aligned columns
INDENT = "  "  # a block's lines under its heading; a paragraph's continuation lines


@dataclass(frozen=True)
class Cell:
    """A cell's text and its style on a terminal (e.g. "green"); logs get the text only."""

    text: str
    style: str = ""


@dataclass(frozen=True)
class Column:
    header: str
    numeric: bool = False  # right-aligned


@dataclass
class Table:
    """Rows of cells under column headers. The first `key_columns` cells name a row: a
    block's heading when the table does not fit the width."""

    title: str
    columns: tuple[Column, ...]
    caption: str = ""
    key_columns: int = 1
    show_header: bool = True
    rows: list[tuple[Cell, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.columns = tuple(c if isinstance(c, Column) else Column(c) for c in self.columns)

    def add_row(self, *cells: str | Cell) -> None:
        if len(cells) > len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        padded = [*cells, *[""] * (len(self.columns) - len(cells))]
        self.rows.append(tuple(c if isinstance(c, Cell) else Cell(str(c)) for c in padded))

    # layouts ------------------------------------------------------------------------
    def aligned_width(self) -> int:
        """The width of the aligned layout's widest line."""
        return sum(self._widths()) + len(GAP) * (len(self.columns) - 1)

    def lines(self, width: int) -> list[Text]:
        """The layout without boxes: aligned columns when they fit `width`, else blocks."""
        body = self._aligned() if self.aligned_width() <= width else self._blocks(width)
        return [*_wrap(self.title, width, style="bold"), *body,
                *(_wrap(self.caption, width) if self.caption else [])]

    def plain(self, width: int) -> str:
        """What a log receives at `width` (for tests and callers without rich)."""
        return "\n".join(line.plain for line in self.lines(width))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator:
        from rich.measure import Measurement

        width = options.max_width
        if options.is_terminal:
            boxed = self._rich_table()
            natural = Measurement.get(console, options.update_width(10**6), boxed).maximum
            if natural <= width:
                yield from _wrap(self.title, width, style="bold")
                yield boxed
                yield from (_wrap(self.caption, width) if self.caption else [])
                return
        yield from self.lines(width)

    def _widths(self) -> list[int]:
        return [max([len(c.header) if self.show_header else 0,
                     *(len(row[i].text) for row in self.rows)])
                for i, c in enumerate(self.columns)]

    def _aligned(self) -> list[Text]:
        from rich.text import Text

        widths = self._widths()
        lines = []
        if self.show_header:
            lines.append(_joined([Cell(c.header) for c in self.columns], widths,
                                 self.columns))
            lines.append(Text(GAP.join("-" * w for w in widths)))
        lines += [_joined(row, widths, self.columns) for row in self.rows]
        return lines

    def _blocks(self, width: int) -> list[Text]:
        from rich.text import Text

        keys = self.columns[:self.key_columns]
        label_width = max((len(c.header) for c in self.columns[self.key_columns:]),
                          default=0)
        value_width = max(width - len(INDENT) - label_width - len(GAP), 20)
        lines = []
        for row in self.rows:
            named = [row[0].text.strip(), *(f"{c.header} {cell.text}" for c, cell
                                             in zip(keys[1:], row[1:], strict=False)
                                             if cell.text)]
            lines += _wrap(", ".join(part for part in named if part), width, style="bold")
            for column, cell in zip(self.columns[self.key_columns:],
                                    row[self.key_columns:], strict=True):
                if not cell.text:
                    continue
                label = f"{INDENT}{column.header:<{label_width}}{GAP}"
                for index, part in enumerate(_split(cell.text, value_width)):
                    line = Text(label if index == 0 else " " * len(label))
                    line.append(part, style=cell.style)
                    lines.append(line)
        return lines

    def _rich_table(self):
        from rich.table import Table as RichTable
        from rich.text import Text

        table = RichTable(show_header=self.show_header)
        for column in self.columns:
            table.add_column(column.header, justify="right" if column.numeric else "left",
                             no_wrap=True)
        for row in self.rows:
            table.add_row(*(Text(cell.text, style=cell.style) for cell in row))
        return table


@dataclass(frozen=True)
class Paragraph:
    """A line of text that wraps within the width onto indented lines (never cut)."""

    text: str
    style: str = ""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator:
        yield from _wrap(self.text, options.max_width, style=self.style)

    def plain(self, width: int) -> str:
        return "\n".join(line.plain for line in _wrap(self.text, width))


def _joined(cells, widths: list[int], columns: tuple[Column, ...]) -> Text:
    from rich.text import Text

    line = Text()
    for index, (cell, w, column) in enumerate(zip(cells, widths, columns, strict=True)):
        if index:
            line.append(GAP)
        pad = " " * (w - len(cell.text))
        if column.numeric:
            line.append(pad)
        line.append(cell.text, style=cell.style)
        if not column.numeric:
            line.append(pad)
    line.rstrip()
    return line


def _split(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width`, broken at spaces, continued one INDENT deeper
    than it starts; only a word longer than the whole width (a long path) is broken
    inside, so numbers always stay whole."""
    lead = " " * (len(text) - len(text.lstrip(" ")))
    return textwrap.wrap(text, max(width, len(lead + INDENT) + 20), break_long_words=True,
                         break_on_hyphens=False, subsequent_indent=lead + INDENT) or [""]


def _wrap(text: str, width: int, style: str = "") -> list[Text]:
    from rich.text import Text

    return [Text(line, style=style) for line in _split(text, width)]
