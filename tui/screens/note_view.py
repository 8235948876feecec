"""A note, read in full, with the Transition of Care task bar: Receiving / Transferring, and Send Referral By
Direct Message, eFax or Download/Print. Only signed notes can be sent; the bar says why when it is not."""

from __future__ import annotations

import asyncio

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.widgets import Button, Footer, Header, Label, RadioButton, RadioSet, Static

from models.charts import get_note, get_patient
from models.safe_text import display_text, one_line
from tui.screens.base import ReferdeskScreen
from tui.screens.chart import patient_banner

CHANNEL_LABELS = {"direct": "Direct Message", "efax": "eFax", "print": "Download/Print"}


FOLLOW_SECONDS = 60


class NoteViewScreen(ReferdeskScreen):
    """A signed or unsigned note and its Transition of Care task bar."""

    CSS_PATH = "note_view.tcss"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="note.back"),
        Binding("t", "direction('transferring')", "Transferring", id="note.transferring"),
        Binding("r", "direction('receiving')", "Receiving", id="note.receiving"),
        Binding("d", "send('direct')", "Direct", id="note.send_direct"),
        Binding("f", "send('efax')", "eFax", id="note.send_efax"),
        Binding("p", "send('print')", "Print", id="note.send_print"),
    ]

    def __init__(self, note_id: int) -> None:
        super().__init__()
        self.note = get_note(note_id)
        self.patient = get_patient(self.note.mrn)
        self.direction: str | None = None

    def compose(self) -> ComposeResult:
        note = self.note
        yield Header()
        yield Static(patient_banner(self.patient), id="banner")
        with VerticalScroll(id="note-body"):
            yield Static(f"[b]{escape(one_line(note.title or note.type))}[/b]", id="note-title")
            signed = (f"signed by {escape(one_line(note.signed_by))} {note.signed_at:%m/%d/%Y %H:%M}" if note.signed
                      else "[b]UNSIGNED[/b]")
            yield Static(f"Written {note.written:%m/%d/%Y %H:%M} by {escape(one_line(note.author))} · {signed}",
                         id="note-meta")
            for title, text in note.sections:
                yield Static(one_line(title), classes="note-heading", markup=False)
                yield Static(display_text(text), classes="note-text", markup=False)
        yield Static("", id="outcome")
        with Vertical(id="taskbar"):
            if note.signed:
                with Horizontal(classes="taskbar-row"):
                    yield Label("Transition of Care:")
                    with RadioSet(id="direction"):
                        yield RadioButton("Receiving (r)", id="receiving")
                        yield RadioButton("Transferring (t)", id="transferring")
                with Horizontal(classes="taskbar-row"):
                    yield Label("Send Referral By:")
                    for channel, label in CHANNEL_LABELS.items():
                        yield Button(label, id=f"send-{channel}", compact=True, disabled=True)
            else:
                yield Static(
                    f"This note is unsigned: only signed notes can be sent. Ask {note.author} to sign it.",
                    id="unsigned",
                )
        yield Footer(compact=True)

    def on_mount(self) -> None:
        from models.audit import record

        # Opening a note shows it in full: audited as the chart is (ids only; signed or not, never its text).
        record("note.view", username=getattr(self.app, "username", ""), patient_mrn=self.note.mrn,
               object_type="note", object_id=str(self.note.id),
               detail=f"signed={'yes' if self.note.signed else 'no'}")
        self.query_one("#note-body").focus()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("direction", "send") and not self.note.signed:
            return None  # shown greyed out: the bar says why
        if action == "send" and (self.direction is None or not self.app.can("send-referral")):  # access
            return None
        return True

    @on(RadioSet.Changed, "#direction")
    def direction_chosen(self, event: RadioSet.Changed) -> None:
        self.direction = event.pressed.id
        for button in self.query("#taskbar Button"):
            button.disabled = False
        self.refresh_bindings()

    def action_direction(self, direction: str) -> None:
        self.query_one(f"#{direction}", RadioButton).value = True

    @on(Button.Pressed, "#taskbar Button")
    def send_pressed(self, event: Button.Pressed) -> None:
        self.action_send(event.button.id.removeprefix("send-"))

    def action_send(self, channel: str) -> None:
        if not self.app.allowed("send-referral"):  # access: says who may
            return
        if not self.note.signed or self.direction is None:
            self.notify("Choose Receiving or Transferring first.", severity="warning")
            return
        self.app.start_referral(self.note.id, channel, self.direction)

    def show_outcome(self, referral_id: int) -> None:
        """Say what happened to the referral just made — queued is not sent, and the banner never says so."""
        from models.referring import referral_outcome

        text, state = referral_outcome(referral_id)
        outcome = self.query_one("#outcome", Static)
        outcome.update(text)
        outcome.set_classes(f"-{state}")
        if state == "queued" and getattr(self.app, "kick_outbox", lambda: False)():
            self._follow(referral_id)

    @work(exclusive=True, group="follow-outcome", exit_on_error=False)
    async def _follow(self, referral_id: int) -> None:
        """The in-app worker is sending it: update the banner when it has gone (or failed), for a while."""
        from models.referring import referral_outcome

        for _ in range(FOLLOW_SECONDS * 4):
            await asyncio.sleep(0.25)
            text, state = referral_outcome(referral_id)  # one indexed read: fine on the UI thread
            if state != "queued":
                outcome = self.query_one("#outcome", Static)
                outcome.update(text)
                outcome.set_classes(f"-{state}")
                return
