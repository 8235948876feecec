"""The message window: recipient (verified before Send is possible), subject, message, the attachments as they
will go out, and Send. The same window serves Direct, eFax (with the cover-sheet name) and Download/Print."""

from __future__ import annotations

import dataclasses

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Header, Input, Label, LoadingIndicator, Static, TextArea

from models.documents import Attachment
from models.patients import Patient
from models.referring import ReferralDraft, default_message, default_subject
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

    def __init__(self, draft: ReferralDraft, default_folder: str = "") -> None:
        super().__init__()
        self.draft = draft
        self.patient = Patient.get_by_id(draft.patient_id)
        self.default_folder = default_folder
        self.attachments: list[Attachment] | None = None
        self.recipient_ok = False
        self.sending = False

    def compose(self) -> ComposeResult:
        channel = self.draft.channel
        yield Header()
        yield Static(f"[b]{TITLES[channel]}[/b] — {self.draft.direction} referral for "
                     f"{self.patient.last_name}, {self.patient.first_name} (MRN {self.patient.mrn})", id="title")
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
                yield TextArea(default_message(self.patient, self.draft.direction, self.draft.reason),
                               id="message", compact=True, soft_wrap=True, tab_behavior="focus")
            yield Label("Attachments:")
            yield LoadingIndicator(id="building")
            yield Static("", id="attachments")
        yield Static("", id="outcome")
        with Horizontal(id="buttons"):
            yield Button("Send", id="send", variant="primary", compact=True, disabled=True)
            yield Button("Cancel", id="cancel", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#recipient #to").focus()
        self.build_attachments()

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
    def submit(self, draft: ReferralDraft, attachments: list[Attachment]) -> None:
        from models.db import database
        from models.documents import DocumentError
        from models.referring import ReferralError
        from transports.submit import submit_referral

        try:
            with database.connection_context():
                referral = submit_referral(draft, attachments)
        except (ReferralError, DocumentError) as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self.dismiss, referral.id)

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
