"""Find in Directory: search the provider directory by name, NPI, organization or city; Enter picks."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from models.directory import search_directory


@dataclass(frozen=True)
class DirectoryPick:
    """The chosen entry: just what the To: field needs."""

    address: str
    name: str
    organization: str


class DirectorySearchDialog(ModalScreen[DirectoryPick | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="directory.cancel"),
        Binding("down", "results", "Results", show=False, id="directory.results"),
    ]
    DEFAULT_CSS = """
    DirectorySearchDialog { align: center middle; }
    DirectorySearchDialog > Vertical { width: 100; max-width: 100%; height: 20; max-height: 100%;
                                       border: round $primary; background: $surface; padding: 0 1; }
    DirectorySearchDialog #dir-status { height: 1; color: $text-muted; }
    DirectorySearchDialog DataTable { height: 1fr; }
    """

    _rows: list[tuple[str, str, str, str]] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("[b]Find in Directory[/b] — name, NPI, organization or city")
            yield Input(placeholder="e.g. cardiology springfield", id="dir-query", compact=True)
            yield Static("Type to search; ↓ to the results, Enter to choose.", id="dir-status")
            table = DataTable(id="dir-results", cursor_type="row")
            table.add_columns("Name", "Direct address", "City", "Organization")
            yield table

    def on_mount(self) -> None:
        self.query_one("#dir-query", Input).cursor_blink = getattr(self.app, "cursor_blink", False)
        self.query_one("#dir-query").focus()

    @on(Input.Changed, "#dir-query")
    def typed(self, event: Input.Changed) -> None:
        self.search(event.value)

    @on(Input.Submitted, "#dir-query")
    def action_results(self) -> None:
        table = self.query_one("#dir-results", DataTable)
        if table.row_count:
            table.focus()

    @work(thread=True, exclusive=True, group="directory-search", exit_on_error=False)
    def search(self, text: str) -> None:
        from models.db import database

        with database.connection_context():
            entries = [e for e in search_directory(text, limit=100) if e.endpoint_type.upper() == "DIRECT"]
            rows = [(e.name, e.endpoint, f"{e.city}, {e.state}".strip(", "), e.organization) for e in entries]
        self.app.call_from_thread(self.show, text, rows)

    def show(self, text: str, rows: list[tuple[str, str, str, str]]) -> None:
        """Rows are (name, address, city, organization); results for text since changed are dropped."""
        if text != self.query_one("#dir-query", Input).value:
            return
        table = self.query_one("#dir-results", DataTable)
        table.clear()
        for i, row in enumerate(rows):
            table.add_row(*row, key=str(i))
        self._rows = rows
        self.query_one("#dir-status", Static).update(
            f"{len(rows)} Direct addresses — ↓ to the results, Enter to choose" if rows
            else "No Direct address matches." if text.strip() else "Type to search."
        )

    @on(DataTable.RowSelected, "#dir-results")
    def chosen(self, event: DataTable.RowSelected) -> None:
        name, address, _, organization = self._rows[int(event.row_key.value)]
        self.dismiss(DirectoryPick(address=address, name=name, organization=organization))

    def action_cancel(self) -> None:
        self.dismiss(None)
