"""A patient's chart: a banner, a left menu (Face Sheet, Notes, Documents, Referrals) and the chosen pane."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.markup import escape
from textual.widgets import ContentSwitcher, Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from models.audit import record
from models.charts import get_patient
from models.safe_text import one_line
from tui.screens.base import ReferdeskScreen

SECTIONS = [("face", "Face Sheet"), ("notes", "Notes"), ("documents", "Documents"), ("referrals", "Referrals")]


def patient_banner(patient) -> str:
    """Markup: the name is escaped (a "[/]" in it would crash the screen, a "[link=…]" plant a hyperlink) and its
    control characters shown, not obeyed (models.safe_text)."""
    name = escape(one_line(f"{patient.last_name}, {patient.first_name}"))
    return (f"[b]{name}[/b]  ·  born {patient.birth_date:%m/%d/%Y}  ·  "
            f"{escape(one_line(patient.sex))}  ·  MRN {escape(one_line(patient.mrn))}")


class ChartScreen(ReferdeskScreen):
    """The patient's chart."""

    CSS_PATH = "chart.tcss"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="chart.back"),
        Binding("1", "show('face')", "Face sheet", show=False, id="chart.face"),
        Binding("2", "show('notes')", "Notes", show=False, id="chart.notes"),
        Binding("3", "show('documents')", "Documents", show=False, id="chart.documents"),
        Binding("4", "show('referrals')", "Referrals", show=False, id="chart.referrals"),
        Binding("left", "focus_menu", "Menu", show=False, id="chart.menu"),
    ]

    def __init__(self, mrn: str, section: str = "face") -> None:
        super().__init__()
        self.mrn = mrn
        self.patient = get_patient(mrn)
        self.section = section

    def compose(self) -> ComposeResult:
        from tui.widgets.documents_pane import DocumentsPane
        from tui.widgets.face_sheet import FaceSheetPane
        from tui.widgets.notes_pane import NotesPane
        from tui.widgets.referrals_pane import ReferralsPane

        yield Header()
        yield Static(patient_banner(self.patient), id="banner")
        with Horizontal():
            yield OptionList(*(Option(f"{i}  {label}", id=key) for i, (key, label) in enumerate(SECTIONS, 1)),
                             id="menu")
            with ContentSwitcher(initial=self.section, id="panes"):
                yield FaceSheetPane(self.mrn, id="face")
                yield NotesPane(self.mrn, id="notes")
                yield DocumentsPane(patient_id=self.patient.id, owner="patient", id="documents")
                yield ReferralsPane(patient_id=self.patient.id, id="referrals")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        record("chart.view", username=getattr(self.app, "username", ""), patient_mrn=self.patient.mrn,
               object_type="patient", object_id=str(self.patient.id))
        menu = self.query_one("#menu", OptionList)
        menu.highlighted = [key for key, _ in SECTIONS].index(self.section)
        menu.focus()

    def on_screen_resume(self) -> None:
        """Back from a note or a document: a referral may have been sent meanwhile, so re-read the lists."""
        from tui.widgets.documents_pane import DocumentsPane
        from tui.widgets.referrals_pane import ReferralsPane

        for pane in self.query(DocumentsPane):
            pane.load()
        for pane in self.query(ReferralsPane):
            pane.reload()

    @on(OptionList.OptionHighlighted, "#menu")
    def menu_moved(self, event: OptionList.OptionHighlighted) -> None:
        self.query_one("#panes", ContentSwitcher).current = event.option.id

    @on(OptionList.OptionSelected, "#menu")
    def menu_chosen(self, event: OptionList.OptionSelected) -> None:
        self.query_one("#panes", ContentSwitcher).current = event.option.id
        self.query_one(f"#{event.option.id}").focus_first()

    def action_show(self, key: str) -> None:
        self.query_one("#menu", OptionList).highlighted = [k for k, _ in SECTIONS].index(key)
        self.query_one(f"#{key}").focus_first()

    def action_focus_menu(self) -> None:
        self.query_one("#menu", OptionList).focus()
