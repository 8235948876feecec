"""The patient's notes: date, signed, type, author; Enter or `v` views one."""

from __future__ import annotations

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from models.charts import NoteSummary, list_notes
from models.safe_text import one_line

FIXED = {"date": 10, "signed": 8}


class NotesPane(Vertical):
    BINDINGS = [Binding("v", "view", "View note", id="notes.view")]
    DEFAULT_CSS = """
    NotesPane { padding: 0 1; }
    NotesPane DataTable { height: 1fr; }
    """

    def __init__(self, mrn: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mrn = mrn
        self.notes: list[NoteSummary] = []
        self._width = 0

    def compose(self) -> ComposeResult:
        self.notes = list_notes(self.mrn)
        yield Static(f"Notes ({len(self.notes)}) — Enter or v to view", classes="pane-title")
        yield DataTable(id="notes-table", cursor_type="row")

    def on_resize(self, event: events.Resize) -> None:
        """Fit the columns to the width: type and author share what date and signed leave."""
        if event.size.width == self._width:
            return
        self._width = event.size.width
        table = self.query_one("#notes-table", DataTable)
        row = table.cursor_row
        # pane padding 2, cell padding 2 per column, room for a vertical scrollbar 2
        flexible = max(event.size.width - 2 - sum(FIXED.values()) - 2 * 4 - 2, 20)
        table.clear(columns=True)
        table.add_column("Date", width=FIXED["date"], key="date")
        table.add_column("Signed", width=FIXED["signed"], key="signed")
        table.add_column("Type", width=flexible * 55 // 100, key="type")
        table.add_column("Author", width=flexible - flexible * 55 // 100, key="author")
        for note in self.notes:
            # Text, not str: a DataTable reads str cells as markup, and "[/]" in an author's name would crash it
            table.add_row(f"{note.date:%m/%d/%Y}", "signed" if note.signed else "UNSIGNED",
                          Text(one_line(note.type), no_wrap=True, end=""),
                          Text(one_line(note.author), no_wrap=True, end=""),
                          key=str(note.id))
        table.move_cursor(row=row)

    def focus_first(self) -> None:
        self.query_one("#notes-table").focus()

    def action_view(self) -> None:
        table = self.query_one("#notes-table", DataTable)
        if table.row_count:
            self.app.open_note(int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))

    @on(DataTable.RowSelected, "#notes-table")
    def row_chosen(self, event: DataTable.RowSelected) -> None:
        self.app.open_note(int(event.row_key.value))
