"""Face sheet: demographics, active problems, medications, allergies, care team and recent encounters.

Read-only, so the lists are Rich tables in Static widgets: they wrap to any width without scrollbars.
"""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from models.charts import face_sheet
from models.safe_text import display_text
from tui.widgets.pane import Pane


def _table(columns: tuple[str, ...], rows: list[tuple], empty: str) -> Static:
    if not rows:
        return Static(empty, classes="pane-empty")
    table = Table(*columns, box=box.SIMPLE_HEAD, expand=True, pad_edge=False, show_edge=False,
                  header_style="bold")
    for row in rows:  # Text, not str: a Rich table reads str cells as markup
        table.add_row(*(Text(display_text(str(cell))) for cell in row))
    return Static(table)


class FaceSheetPane(Pane):
    DEFAULT_CSS = """
    FaceSheetPane { padding: 0 1; }
    """

    def __init__(self, mrn: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mrn = mrn

    def compose(self) -> ComposeResult:
        sheet = face_sheet(self.mrn)
        p = sheet.patient
        sex = {"F": "Female", "M": "Male"}.get(p.sex, "Unknown")
        address = ", ".join(part for part in (p.address_line, p.city, f"{p.state} {p.postal_code}".strip()) if part)
        yield Static("Demographics", classes="pane-title")
        yield Static(f"Age {sheet.age} · {sex} · language {p.language}\n{address}\n"
                     f"{p.phone}{'  ·  ' + p.email if p.email else ''}", markup=False)
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
