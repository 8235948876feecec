"""Send a Referral for ‹patient›: include the encounter note?, which Summary of Care items, why, how urgent.

Every Summary of Care item starts ticked; unticking one leaves it out of the document (or sends it marked
"no information" where the standard requires the section). Returns a ReferralDraft, or None on Cancel/Escape.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, SelectionList, Static

from models.charts import NoteView
from models.patients import Patient
from models.referring import SUMMARY_OF_CARE, URGENCIES, ReferralDraft, suggested_reason
from models.safe_text import one_line


class SendReferralDialog(ModalScreen[ReferralDraft | None]):
    CSS_PATH = "send_referral.tcss"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="send.cancel"),
        Binding("ctrl+s", "confirm", "Send Message", id="send.confirm"),
    ]

    def __init__(self, note: NoteView, patient: Patient, channel: str, direction: str) -> None:
        super().__init__()
        self.note = note
        self.patient = patient
        self.channel = channel
        self.direction = direction

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            name = escape(one_line(f"{self.patient.last_name}, {self.patient.first_name}"))
            yield Static(f"Send a Referral for [b]{name}[/b]",
                         id="dialog-title")
            yield Checkbox(f"Encounter Note ({self.note.type}, {self.note.written:%m/%d/%Y})", True,
                           id="include-note", compact=True)
            yield Label("Summary of Care — untick what not to send (space toggles):")
            yield SelectionList[str](*((label, key, True) for key, label in SUMMARY_OF_CARE), id="sections",
                                     compact=True)
            with Horizontal(classes="field"):
                yield Label("Reason:", classes="field-label")
                yield Input(suggested_reason(self.patient.id), placeholder="reason for referral", id="reason",
                            compact=True)
            with Horizontal(classes="field"):
                yield Label("Urgency:", classes="field-label")
                yield Select([(u.title(), u) for u in URGENCIES], value="routine", allow_blank=False,
                             id="urgency", compact=True)
            yield Static("", id="problem")
            with Horizontal(id="buttons"):
                yield Button("Send Message", id="confirm", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#sections").focus()

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        excluded = tuple(key for key, _ in SUMMARY_OF_CARE
                         if key not in self.query_one("#sections", SelectionList).selected)
        reason = self.query_one("#reason", Input).value.strip()
        if self.direction == "transferring" and not reason and "reason_for_referral" not in excluded:
            self.query_one("#problem", Static).update("Give a reason for referral, or untick it above.")
            self.query_one("#reason", Input).focus()
            return
        self.dismiss(ReferralDraft(
            patient_id=self.patient.id,
            note_id=self.note.id,
            channel=self.channel,
            direction=self.direction,
            include_note=self.query_one("#include-note", Checkbox).value,
            excluded_sections=excluded,
            reason=reason,
            urgency=str(self.query_one("#urgency", Select).value),
            username=getattr(self.app, "username", ""),
        ))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
