"""A patient's notes: date, type, author and whether each is signed (only signed notes can be sent)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from models.charts import get_patient, list_notes
from tui.screens.base import ReferdeskScreen


class PatientNotesScreen(ReferdeskScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="notes.back")]

    def __init__(self, mrn: str) -> None:
        super().__init__()
        self.mrn = mrn

    def compose(self) -> ComposeResult:
        patient = get_patient(self.mrn)
        yield Header()
        yield Static(
            f"{patient.last_name}, {patient.first_name}  ·  born {patient.birth_date:%m/%d/%Y}  ·  "
            f"{patient.sex}  ·  MRN {patient.mrn}",
            classes="screen-title",
        )
        table = DataTable(id="notes", cursor_type="row")
        table.add_columns("Date", "Type", "Author", "Signed")
        for note in list_notes(self.mrn):
            table.add_row(f"{note.date:%m/%d/%Y}", note.type, note.author, "yes" if note.signed else "NO",
                          key=str(note.id))
        yield table
        yield Footer()
