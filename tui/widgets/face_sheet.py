"""Face sheet: demographics, active problems, medications, allergies, care team and recent encounters."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from models.charts import face_sheet
from tui.widgets.pane import Pane


def _table(columns: tuple[str, ...], rows: list[tuple], empty: str) -> DataTable | Static:
    if not rows:
        return Static(empty, classes="pane-empty")
    table = DataTable(cursor_type="none", show_cursor=False, zebra_stripes=False)
    table.add_columns(*columns)
    table.add_rows(rows)
    return table


class FaceSheetPane(Pane):
    DEFAULT_CSS = """
    FaceSheetPane { padding: 0 1; }
    FaceSheetPane DataTable { height: auto; }
    """

    def __init__(self, mrn: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mrn = mrn

    def compose(self) -> ComposeResult:
        sheet = face_sheet(self.mrn)
        p = sheet.patient
        address = ", ".join(part for part in (p.address_line, p.city, f"{p.state} {p.postal_code}".strip()) if part)
        yield Static("Demographics", classes="pane-title")
        yield Static(
            f"Age {sheet.age} · {'Female' if p.sex == 'F' else 'Male' if p.sex == 'M' else 'Unknown'} · "
            f"language {p.language}\n{address}\n{p.phone}{'  ·  ' + p.email if p.email else ''}"
        )
        yield Static("Active problems", classes="pane-title")
        yield _table(("Problem", "ICD-10", "Onset"), sheet.problems, "No active problems recorded.")
        yield Static("Medications", classes="pane-title")
        yield _table(("Medication", "Sig"), sheet.medications, "No active medications.")
        yield Static("Allergies", classes="pane-title")
        yield _table(("Substance", "Reaction", "Severity"), sheet.allergies, "No known allergies.")
        yield Static("Care team", classes="pane-title")
        yield _table(("Name", "Role", "Phone"), sheet.care_team, "No care team recorded.")
        yield Static("Recent encounters", classes="pane-title")
        yield _table(("Date", "Type", "Provider", "Reason"), sheet.encounters, "No encounters.")
