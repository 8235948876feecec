"""A list of documents — a patient's, the practice's, or everyone's — newest first; Enter opens one.

The list is read in a thread so a chart with many large documents opens at once; content is never loaded here.
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from documents.viewing import DocumentRow, document_rows
from tui.widgets.pane import Pane

_OWNER_COLUMN = 22


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


class DocumentsPane(Pane):
    """Documents: Enter or v opens the highlighted one."""

    BINDINGS = [Binding("v", "view", "View", id="documents.view")]
    DEFAULT_CSS = """
    DocumentsPane { padding: 0 1; }
    DocumentsPane #documents-table { height: auto; max-height: 100%; margin: 0; }
    DocumentsPane .pane-title { text-style: bold; color: $accent; margin-top: 1; }
    DocumentsPane #documents-status { color: $text-muted; }
    DocumentsPane #documents-status.-error { color: $error; }
    """

    def __init__(self, patient_id: int | None = None, owner: str | None = None, *, heading: str = "Documents",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.patient_id = patient_id
        self.owner = owner
        self.heading = heading
        self.rows: list[DocumentRow] | None = None
        self.filled_width = 0  # the width the titles were clipped for

    def compose(self) -> ComposeResult:
        yield Static(self.heading, classes="pane-title", id="documents-title")
        yield Static("Loading documents…", id="documents-status")
        table = DataTable(id="documents-table", cursor_type="row", zebra_stripes=False)
        table.display = False
        yield table

    def on_mount(self) -> None:
        self.load()

    def reload(self, *, owner: str | None, heading: str | None = None) -> None:
        """Show another owner's documents (None: everyone's)."""
        self.owner = owner
        if heading is not None:
            self.heading = heading
            self.query_one("#documents-title", Static).update(heading)
        self.load()

    @property
    def shows_owner(self) -> bool:
        """Whether rows come from more than one owner, so each needs saying whose it is."""
        return self.patient_id is None and self.owner != "practice"

    @work(thread=True, exclusive=True, group="documents-list", exit_on_error=False)
    def load(self) -> None:
        from models.db import database

        owner = self.owner
        try:
            with database.connection_context():
                rows = document_rows(patient_id=self.patient_id, owner=owner)
        except Exception as error:  # noqa: BLE001 — any database failure is shown, not raised into the UI
            self.app.call_from_thread(self.show_error, f"Could not load the documents: {error}")
            return
        self.app.call_from_thread(self.show_documents, owner, rows)

    def show_error(self, message: str) -> None:
        status = self.query_one("#documents-status", Static)
        status.update(Text(message))
        status.add_class("-error")

    def show_documents(self, owner: str | None, rows: list[DocumentRow]) -> None:
        if owner != self.owner:
            return  # the user switched lists while this one was loading
        self.rows = rows
        self.filled_width = 0
        if self.content_size.width:
            self._fill()  # else a hidden or not yet laid-out pane fills when it gets its size (on_resize)

    def on_resize(self) -> None:
        if self.rows is not None and self.content_size.width != self.filled_width:
            self._fill()

    def _empty_text(self) -> str:
        if self.patient_id is not None:
            return ("No documents in this chart yet. Referrals sent and consultants' reports received are "
                    "filed here.")
        if self.owner == "practice":
            return "The practice has no documents yet."
        return "No documents yet."

    def _fill(self) -> None:
        rows = self.rows or []
        self.filled_width = self.content_size.width
        status = self.query_one("#documents-status", Static)
        table = self.query_one("#documents-table", DataTable)
        status.remove_class("-error")
        title = self.query_one("#documents-title", Static)
        title.update(f"{self.heading} ({len(rows)})" if rows else self.heading)
        status.update(self._empty_text() if not rows else "Enter or v opens the highlighted document.")
        table.display = bool(rows)
        cursor = table.cursor_row
        table.clear(columns=True)
        if not rows:
            return
        owners = [_clip(row.owner, _OWNER_COLUMN) for row in rows] if self.shows_owner else None
        others = [10] + [max([len(label)] + [len(getattr(row, key)) for row in rows])
                         for label, key in (("Kind", "kind"), ("Type", "type"), ("Size", "size"))]
        if owners:
            others.append(max(len("Patient"), *(len(o) for o in owners)))
        # Cell padding is 2 per column; a vertical scrollbar, should the list be long, takes 2 more.
        title_width = max(12, self.filled_width - sum(others) - 2 * (len(others) + 1) - 2)
        if owners:
            table.add_column("Patient", key="owner")
        for label, key in (("Date", "date"), ("Title", "title"), ("Kind", "kind"), ("Type", "type"),
                           ("Size", "size")):
            table.add_column(label, key=key)
        for row in rows:
            cells = [f"{row.filed:%m/%d/%Y}", Text(_clip(row.title, title_width)), row.kind, row.type,
                     Text(row.size, justify="right")]
            if owners:
                cells.insert(0, Text(_clip(row.owner, _OWNER_COLUMN)))
            table.add_row(*cells, key=str(row.id))
        table.move_cursor(row=min(cursor, len(rows) - 1))
        if self.has_focus or self.screen.focused is None:
            table.focus()

    def _open(self, document_id: int) -> None:
        from tui.screens.document_view import DocumentViewScreen

        self.app.push_screen(DocumentViewScreen(document_id))

    def action_view(self) -> None:
        table = self.query_one("#documents-table", DataTable)
        if table.display and table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
            self._open(int(key.value))

    @on(DataTable.RowSelected, "#documents-table")
    def row_chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self._open(int(event.row_key.value))
