"""The message window: recipient (verified before Send is possible), subject, message, the attachments as they
will go out, and Send. The same window serves Direct, eFax (with the cover-sheet name) and Download/Print."""

from __future__ import annotations

import dataclasses

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.markup import escape
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, LoadingIndicator, Static, TextArea
from textual.worker import Worker, WorkerState

from models.documents import Attachment
from models.patients import Patient
from models.referring import ReferralDraft, default_message, default_subject
from models.safe_text import one_line
from tui.screens.base import ReferdeskScreen
from tui.widgets.recipient_field import RecipientField

TITLES = {"direct": "Direct Message", "efax": "eFax", "print": "Download / Print"}


def human_size(size: int) -> str:
    return f"{size} B" if size < 1024 else f"{size / 1024:.1f} KB" if size < 1_048_576 else f"{size / 1_048_576:.1f} MB"


class ComposeScreen(ReferdeskScreen):
    """Address, subject, message and attachments of one referral; Send queues it."""

    CSS_PATH = "compose.tcss"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="compose.cancel"),
        Binding("ctrl+s", "send", "Send", id="compose.send"),
        Binding("f6,ctrl+g", "directory", "Find in Directory", id="compose.directory"),
    ]

    def __init__(self, draft: ReferralDraft, default_folder: str = "", printer: str = "") -> None:
        super().__init__()
        self.draft = draft
        self.printer = printer.strip()  # [print] printer: offered (ticked) when the channel is print
        self.patient = Patient.get_by_id(draft.patient_id)
        self.default_folder = default_folder
        self.attachments: list[Attachment] | None = None
        self.recipient_ok = False
        self.sending = False

    def compose(self) -> ComposeResult:
        channel = self.draft.channel
        yield Header()
        yield Static(f"[b]{TITLES[channel]}[/b] — {self.draft.direction} referral for "
                     f"{escape(one_line(f'{self.patient.last_name}, {self.patient.first_name}'))} "
                     f"(MRN {escape(one_line(self.patient.mrn))})", id="title")
        with VerticalScroll(id="form"):
            yield RecipientField(channel, self.default_folder if channel == "print" else "", id="recipient")
            if channel == "efax":
                with Horizontal(classes="field"):
                    yield Label("Attn:", classes="field-label")
                    yield Input(placeholder="recipient name for the cover sheet", id="attn", compact=True)
            if channel != "print":
                with Horizontal(classes="field"):
                    yield Label("Subject:", classes="field-label")
                    yield Input(default_subject(self.patient, self.draft.direction), id="subject", compact=True)
                yield Label("Message:")
                yield TextArea(default_message(self.patient, self.draft.direction, self.draft.reason, channel),
                               id="message", compact=True, soft_wrap=True, tab_behavior="focus")
            if channel == "print":
                yield Checkbox("Also save the C-CDA (XML)", id="save-ccda", compact=True)
                yield Checkbox("Also save the XDM package (zip)", id="save-xdm", compact=True)
                if self.printer:
                    yield Checkbox(f"Print on {self.printer}", True, id="print-on", compact=True)
            yield Label("Attachments:" if channel != "print" else "Files:")
            yield LoadingIndicator(id="building")
            yield Static("", id="attachments")
        yield Static("", id="outcome")
        with Horizontal(id="buttons"):
            yield Button("Send", id="send", variant="primary", compact=True, disabled=True)
            yield Button("Cancel", id="cancel", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#recipient #to").focus()
        if self.draft.channel == "print":
            self._print_options()
        self.build_attachments()

    def _print_options(self) -> dict:
        extra = {"ccda": self.query_one("#save-ccda", Checkbox).value,
                 "xdm": self.query_one("#save-xdm", Checkbox).value,
                 "printer": self.printer if self.printer and self.query_one("#print-on", Checkbox).value else ""}
        self.draft = dataclasses.replace(self.draft, extra=extra)
        return extra

    @on(Checkbox.Changed, "#save-ccda, #save-xdm")
    def files_chosen(self) -> None:
        """Other files to save: built again, so the list shows exactly what will be written."""
        self._print_options()
        self.attachments = None
        self.query_one("#building").display = True
        self._update_send()
        self.build_attachments()

    @on(Checkbox.Changed, "#print-on")
    def printer_chosen(self) -> None:
        self._print_options()

    # --- attachments ----------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="build-attachments", exit_on_error=False)
    def build_attachments(self) -> None:
        """Built once, now: exactly these bytes are shown, stored and sent."""
        from documents.packet import build_attachments
        from models.db import database

        with database.connection_context():
            attachments = build_attachments(self.draft)
        self.app.call_from_thread(self._built, attachments)

    def _built(self, attachments: list[Attachment]) -> None:
        self.attachments = attachments
        self.query_one("#building").display = False
        lines = [f"  {a.filename}  ({a.media_type.split(';')[0]}, {human_size(a.size)})" for a in attachments]
        self.query_one("#attachments", Static).update("\n".join(lines) or "  (none: only the message is sent)")
        self._update_send()

    # --- recipient ------------------------------------------------------------------------------------

    @on(RecipientField.Checked)
    def recipient_checked(self, event: RecipientField.Checked) -> None:
        self.recipient_ok = bool(event.verdict and event.verdict.ok)
        if event.name and self.draft.channel == "efax":
            attn = self.query_one("#attn", Input)
            if not attn.value:
                attn.value = event.name
        self._update_send()

    def _update_send(self) -> None:
        ready = self.recipient_ok and self.attachments is not None and not self.sending
        self.query_one("#send", Button).disabled = not ready
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "send":
            return True if not self.query_one("#send", Button).disabled else None
        if action == "directory":
            return self.draft.channel == "direct"
        return True

    def action_directory(self) -> None:
        from tui.dialogs.directory_search import DirectorySearchDialog

        def picked(pick) -> None:
            if pick is not None:
                self.query_one("#recipient", RecipientField).fill(pick.address, name=pick.name)

        self.app.push_screen(DirectorySearchDialog(), picked)

    @on(Button.Pressed, "#find")
    def find_pressed(self) -> None:
        self.action_directory()

    # --- send / cancel --------------------------------------------------------------------------------

    @on(Button.Pressed, "#send")
    def action_send(self) -> None:
        field = self.query_one("#recipient", RecipientField)
        if not (self.recipient_ok and field.verdict) or self.attachments is None or self.sending:
            return
        if self.draft.channel == "efax" and not self.query_one("#attn", Input).value.strip():
            self._outcome("Give the recipient's name for the fax cover sheet.", "-bad")
            self.query_one("#attn").focus()
            return
        if self.draft.channel == "efax":
            self._confirm_number(field.verdict.recipient)
            return
        self._send_now()

    def _confirm_number(self, number: str) -> None:
        """Before the first fax to a number, the user reads it back: a wrong digit sends the packet to a stranger."""
        from models.addresses import format_fax
        from models.referring import faxed_before
        from tui.dialogs.confirm import ConfirmDialog

        if faxed_before(number):
            self._send_now()
            return
        name = self.query_one("#attn", Input).value.strip()

        def answered(yes: bool | None) -> None:
            if yes:
                self._send_now()
            else:
                self.query_one("#recipient #to").focus()

        self.app.push_screen(ConfirmDialog(
            f"Nothing has been faxed to {format_fax(number)} before.\n\nCheck it against the recipient's "
            f"letterhead: is {format_fax(number)} the fax number of {name}?", yes="Fax it", no="Check again"),
            answered)

    def _send_now(self) -> None:
        field = self.query_one("#recipient", RecipientField)
        draft = dataclasses.replace(
            self.draft,
            recipient=field.verdict.recipient,
            recipient_name=(self.query_one("#attn", Input).value if self.draft.channel == "efax"
                            else field.contact_name),
            contact_id=field.contact_id,
            subject=self.query_one("#subject", Input).value if self.draft.channel != "print" else "",
            message=self.query_one("#message", TextArea).text if self.draft.channel != "print" else "",
        )
        self.sending = True
        self._update_send()
        self._outcome("Sending…", "-busy")
        self.submit(draft, self.attachments)

    @work(thread=True, exclusive=True, group="submit-referral", exit_on_error=False)
    def submit(self, draft: ReferralDraft, attachments: list[Attachment]) -> int | None:
        """Store (and, for print, save) the referral; its id when done. The window closes when this worker has
        finished (submitted), not from inside it: closing cancels the screen's workers."""
        from models.db import database
        from models.documents import DocumentError
        from models.referring import ReferralError
        from transports.submit import submit_referral

        try:
            with database.connection_context():
                referral = submit_referral(draft, attachments)
                if draft.channel == "print":  # saved (and printed) now: the user is waiting for the file
                    from transports.print_job import print_now

                    print_now(referral.id)
        except (ReferralError, DocumentError) as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return None
        return referral.id

    @on(Worker.StateChanged)
    def submitted(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "submit-referral" and event.state == WorkerState.SUCCESS:
            if event.worker.result is not None:
                self.dismiss(event.worker.result)

    def _failed(self, reason: str) -> None:
        self.sending = False
        self._outcome(f"Not sent: {reason}", "-bad")
        self._update_send()

    def _outcome(self, text: str, style: str) -> None:
        outcome = self.query_one("#outcome", Static)
        outcome.update(text)
        outcome.set_classes(style)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        if not self.sending:
            self.dismiss(None)
