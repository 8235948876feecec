"""A C-CDA read by `documents.ccda_view`, as widgets: a header block, section headings, paragraphs, tables, lists.

Nothing here parses XML; it lays out plain values. Narrative text is never treated as markup: a consultant's
"[see attached]" must show as typed; control characters a document may carry (C1, bidi overrides) are shown, not
obeyed (models.safe_text.display_text).
"""

from __future__ import annotations

import datetime as dt
from typing import Iterator

from rich.table import Table as RichTable
from rich.text import Text
from textual.widget import Widget
from textual.widgets import DataTable, Static

from documents.ccda_view import Block, CcdaView, ItemList, Paragraph, Section, Table
from models.safe_text import display_text

#: Columns never get narrower than this when a wide table is squeezed into the terminal.
MIN_COLUMN = 8


def format_when(value: dt.date | dt.datetime | None) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, dt.datetime):
        zone = f" {value:%z}" if value.tzinfo else ""
        return f"{value:%m/%d/%Y %H:%M}{zone}"
    return f"{value:%m/%d/%Y}"


def label_grid(rows: list[tuple[str, str]]) -> RichTable:
    """Label/value lines whose values wrap under themselves, not under the label."""
    grid = RichTable.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(ratio=1, overflow="fold")
    for label, value in rows:
        grid.add_row(label, Text(display_text(value)))
    return grid


def header_rows(view: CcdaView) -> list[tuple[str, str]]:
    patient = view.patient
    about = [patient.name or "(no name in the document)"]
    if patient.birth_date:
        about.append(f"born {patient.birth_date:%m/%d/%Y}")
    if patient.sex:
        about.append(patient.sex)
    if patient.mrn:
        about.append(f"ID {patient.mrn}")
    kind = view.type_display or "Clinical document"
    rows = [("Type", f"{kind} (LOINC {view.type_code})" if view.type_code else kind),
            ("Date", format_when(view.effective_time)),
            ("Patient", " · ".join(about)),
            ("Author", str(view.author) or "not stated")]
    for recipient in view.recipients:
        rows.append(("Recipient", str(recipient) or "not named"))
    if str(view.custodian):
        rows.append(("Custodian", str(view.custodian)))
    return rows


class SectionHeading(Static):
    """A section's title; the viewer jumps between these."""

    def __init__(self, section: Section, depth: int, index: int) -> None:
        super().__init__(Text(display_text(section.title)), classes=f"section-heading depth-{min(depth, 3)}")
        self.section = section
        self.depth = depth
        self.index = index


def fit_widths(natural: list[int], available: int, floors: list[int] | None = None) -> list[int]:
    """Column widths within `available`: narrow columns keep their width, wide ones share what is left.

    `floors` are the widths below which a column would break its words; they are kept when they fit.
    """
    if sum(natural) <= available:
        return list(natural)
    floors = [min(f, n) for f, n in zip(floors or [MIN_COLUMN] * len(natural), natural)]
    if sum(floors) > available:
        floors = [min(n, MIN_COLUMN) for n in natural]
    widths = list(floors)
    remaining = available - sum(floors)
    order = sorted(range(len(natural)), key=lambda i: natural[i] - floors[i])
    for done, column in enumerate(order):
        extra = min(natural[column] - floors[column], max(0, remaining) // (len(order) - done))
        widths[column] += extra
        remaining -= extra
    return widths


def _longest_word(texts: list[str], cap: int = 16) -> int:
    return min(cap, max((len(word) for text in texts for word in text.split()), default=1))


def _longest_line(text: str) -> int:
    return max((len(line) for line in text.split("\n")), default=0)


class NarrativeTable(DataTable):
    """A narrative <table>: long cells wrap inside their column so the table fits the terminal's width."""

    can_focus = False
    DEFAULT_CSS = """
    NarrativeTable { height: auto; margin: 0 0 1 0; }
    """

    def __init__(self, table: Table, width: int, **kwargs) -> None:
        super().__init__(cursor_type="none", show_cursor=False, zebra_stripes=True,
                         show_header=bool(table.headers), **kwargs)
        self.source = table
        columns = len(table.headers) or max((len(row) for row in table.rows), default=0)
        cells = [list(table.headers[i:i + 1]) + [row[i] for row in table.rows] for i in range(columns)]
        natural = [max([_longest_line(text) for text in column] + [1]) for column in cells]
        # Each column costs two cells of padding besides its content.
        widths = fit_widths(natural, max(columns * MIN_COLUMN, width - 2 * columns),
                            floors=[_longest_word(column) for column in cells])
        for index, column_width in enumerate(widths):
            label = table.headers[index] if table.headers else ""
            self.add_column(Text(display_text(label)), width=column_width, key=str(index))
        self.header_height = max([1] + [_wrapped_height(h, w) for h, w in zip(table.headers, widths)])
        for row in table.rows:
            self.add_row(*(Text(display_text(cell)) for cell in row), height=None)


def _wrapped_height(text: str, width: int) -> int:
    """Lines `text` takes wrapped at `width` (an estimate by words, enough to size a header row)."""
    lines = 0
    for line in text.split("\n") or [""]:
        length, count = 0, 1
        for word in line.split():
            if length and length + 1 + len(word) > width:
                count += 1
                length = len(word)
            else:
                length += len(word) + (1 if length else 0)
        lines += count
    return lines


def _item_list(block: ItemList) -> RichTable:
    grid = RichTable.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(ratio=1, overflow="fold")
    for number, item in enumerate(block.items, 1):
        grid.add_row(f"{number}." if block.ordered else "•", Text(display_text(item)))
    return grid


def block_widgets(block: Block, width: int, depth: int) -> Iterator[Widget]:
    indent = f"depth-{min(depth, 3)}"
    caption = getattr(block, "caption", "")
    if caption:
        yield Static(Text(display_text(caption)), classes=f"narrative-caption {indent}")
    if isinstance(block, Paragraph):
        yield Static(Text(display_text(block.text)), classes=f"narrative-paragraph {indent}")
    elif isinstance(block, Table):
        if block.rows or block.headers:
            yield NarrativeTable(block, width - 2 * min(depth, 3), classes=indent)
    elif isinstance(block, ItemList):
        yield Static(_item_list(block), classes=f"narrative-list {indent}")


def document_widgets(view: CcdaView, width: int) -> Iterator[Widget]:
    """The whole document, top to bottom: header block, then every section with its narrative."""
    yield Static(label_grid(header_rows(view)), classes="ccda-header")
    if not view.sections:
        yield Static("This document has no sections.", classes="narrative-paragraph")
    for index, (depth, section) in enumerate(view.all_sections()):
        yield SectionHeading(section, depth, index)
        for block in section.blocks:
            yield from block_widgets(block, width, depth)
