"""The patient's notes: date, type, author, signed; Enter or `v` views one."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from models.charts import list_notes
from tui.widgets.pane import Pane


class NotesPane(Pane):
    BINDINGS = [Binding("v", "view", "View note", id="notes.view")]
    DEFAULT_CSS = """
    NotesPane { padding: 0 1; }
    NotesPane DataTable { height: auto; max-height: 100%; }
    """

    def __init__(self, mrn: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mrn = mrn

    def compose(self) -> ComposeResult:
        notes = list_notes(self.mrn)
        yield Static(f"Notes ({len(notes)}) — Enter or v to view", classes="pane-title")
        table = DataTable(id="notes-table", cursor_type="row")
        table.add_columns("Date", "Type", "Author", "Signed")
        for note in notes:
            table.add_row(f"{note.date:%m/%d/%Y}", note.type, note.author, "signed" if note.signed else "UNSIGNED",
                          key=str(note.id))
        yield table

    def action_view(self) -> None:
        table = self.query_one("#notes-table", DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
            self.app.open_note(int(key.value))

    @on(DataTable.RowSelected, "#notes-table")
    def row_chosen(self, event: DataTable.RowSelected) -> None:
        self.app.open_note(int(event.row_key.value))
