"""Patient search, the start screen: type 2–3 letters, pick a patient with the arrow keys and Enter."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Input, Static

from models.search import PatientHit, search_patients
from models.text import normalize
from tui.screens.base import ReferdeskScreen

MIN_LETTERS = 2


class PatientSearchScreen(ReferdeskScreen):
    """Find a patient: 2–3 letters of a name, 'last, first', an MRN or a date of birth."""

    BINDINGS = [
        Binding("down", "focus_results", "Results", show=False, id="search.results"),
        Binding("escape", "clear", "Clear", id="search.clear"),
        Binding("f3", "app.referrals", "Referrals", id="search.referrals"),
        Binding("f4", "app.practice_documents", "Documents", id="search.documents"),
        Binding("ctrl+q", "app.quit", "Quit", id="search.quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="Name, 'last, first', MRN or date of birth", id="query")
        yield Static("Type at least 2 letters of a name, an MRN or a date of birth.", id="status")
        table = DataTable(id="results", cursor_type="row", zebra_stripes=False)
        table.add_column("Name", key="name")
        table.add_column("Born", key="born")
        table.add_column("Sex", key="sex")
        table.add_column("MRN", key="mrn")
        yield table
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#query", Input).focus()

    @on(Input.Changed, "#query")
    def query_changed(self, event: Input.Changed) -> None:
        if len(normalize(event.value)) < MIN_LETTERS:
            self.show_results(event.value, [])
            return
        self.search(event.value)

    @on(Input.Submitted, "#query")
    def query_submitted(self) -> None:
        self.action_focus_results()

    @work(thread=True, exclusive=True, group="patient-search", exit_on_error=False)
    def search(self, text: str) -> None:
        from models.db import database

        with database.connection_context():
            hits = search_patients(text)
        self.app.call_from_thread(self.show_results, text, hits)

    def show_results(self, text: str, hits: list[PatientHit]) -> None:
        """Show `hits` unless the user has typed on since: a slow answer never overwrites a newer one."""
        query = self.query_one("#query", Input)
        if text != query.value:
            return
        table = self.query_one("#results", DataTable)
        table.clear()
        for hit in hits:
            table.add_row(f"{hit.last_name}, {hit.first_name}", hit.birth_date.strftime("%m/%d/%Y"), hit.sex,
                          hit.mrn, key=hit.mrn)
        status = self.query_one("#status", Static)
        status.remove_class("-error")
        if len(normalize(text)) < MIN_LETTERS:
            status.update("Type at least 2 letters of a name, an MRN or a date of birth.")
        elif not hits:
            status.update(f"No patient matches “{text}”.")
            status.add_class("-error")
        else:
            more = " (first 50: type more to narrow)" if len(hits) >= 50 else ""
            status.update(f"{len(hits)} patients{more} — ↓ to choose, Enter to open")

    def action_focus_results(self) -> None:
        table = self.query_one("#results", DataTable)
        if table.row_count:
            table.focus()

    def action_clear(self) -> None:
        query = self.query_one("#query", Input)
        query.value = ""
        query.focus()

    @on(DataTable.RowSelected, "#results")
    def open_patient(self, event: DataTable.RowSelected) -> None:
        self.app.open_patient(str(event.row_key.value))
