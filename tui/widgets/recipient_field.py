"""The To: field: address-book suggestions as you type, and a verdict on the recipient when you leave it.

"Verifying Address…" shows while the check runs in a worker; then a ✓/✗/? line in words (readable without
colour). A verdict for text the user has since changed is dropped, never shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from models.address_book import Suggestion, suggest_contacts
from transports.verify import Verdict, direct_settings, verify_recipient

PLACEHOLDERS = {
    "direct": "name or Direct address, e.g. cardiology@direct.example.org",
    "efax": "name or fax number, e.g. (217) 555-0142",
    "print": "folder, e.g. ~/referrals — or printer:QUEUE",
}


INVALID_LABELS = {"direct": "Invalid Direct Address", "efax": "Invalid fax number", "print": "Cannot save there"}


def describe(verdict: Verdict, channel: str) -> tuple[str, str]:
    """The verdict line and its style class."""
    when = f", checked {verdict.checked_at:%m/%d/%Y}" if verdict.checked_at else ""
    source = " (address book" + when + ")" if verdict.source == "address-book" else ""
    if verdict.ok:
        detail = f" — {verdict.reason}" if verdict.reason else ""
        return f"✓ verified{source}{detail}", "-ok"
    if verdict.state == "invalid":
        return f"✗ {INVALID_LABELS[channel]}: {verdict.reason}{source}", "-bad"
    return f"? Not verified: {verdict.reason}", "-unknown"


class RecipientField(Vertical):
    DEFAULT_CSS = """
    RecipientField { height: auto; }
    RecipientField > Horizontal { height: 1; }
    RecipientField .field-label { width: 10; }
    RecipientField #to { width: 1fr; }
    RecipientField #find { margin-left: 1; }
    RecipientField #suggestions { height: auto; max-height: 6; display: none; margin-left: 10;
                                  border: none; background: $boost; }
    RecipientField #suggestions.-shown { display: block; }
    RecipientField #verdict { height: auto; margin-left: 10; }
    RecipientField #verdict.-ok { color: $success; }
    RecipientField #verdict.-bad { color: $error; }
    RecipientField #verdict.-unknown { color: $warning; }
    RecipientField #verdict.-busy { color: $text-muted; }
    """
    BINDINGS = [Binding("down", "suggestions", "Suggestions", show=False, id="to.suggestions")]

    @dataclass
    class Checked(Message):
        """The verdict on what the To: field now holds (None: not checked yet)."""

        verdict: Verdict | None
        contact_id: int | None
        name: str

    def __init__(self, channel: str, value: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.channel = channel
        self.initial = value
        self.contact_id: int | None = None
        self.contact_name = ""
        self.verdict: Verdict | None = None
        self._suggestions: list[Suggestion] = []
        self._filling = False

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label("To:" if self.channel != "print" else "Print to:", classes="field-label")
            yield Input(self.initial, placeholder=PLACEHOLDERS[self.channel], id="to", compact=True)
            if self.channel == "direct":
                find = Button("Find in Directory (F6)", id="find", compact=True)
                find.can_focus = False  # F6 reaches it; Tab goes straight on to the subject
                yield find
        yield OptionList(id="suggestions", compact=True)
        yield Static("", id="verdict")

    @property
    def value(self) -> str:
        return self.query_one("#to", Input).value

    def fill(self, address: str, *, contact_id: int | None = None, name: str = "") -> None:
        """Put a chosen recipient in the field and check it at once."""
        self._filling = True
        self.query_one("#to", Input).value = address
        self.contact_id, self.contact_name = contact_id, name
        self._hide_suggestions()
        self.check()

    @on(Input.Changed, "#to")
    def typed(self, event: Input.Changed) -> None:
        if self._filling:
            self._filling = False
            return
        self.contact_id, self.contact_name = None, ""
        self._set_verdict(None, "", "")
        if self.channel == "print":
            return
        self._suggestions = suggest_contacts(event.value, self.channel) if event.value.strip() else []
        options = self.query_one("#suggestions", OptionList)
        options.clear_options()
        options.add_options(
            Option(f"{s.name} — {s.organization} — {s.address}", id=str(i)) for i, s in enumerate(self._suggestions)
        )
        options.set_class(bool(self._suggestions), "-shown")

    def action_suggestions(self) -> None:
        options = self.query_one("#suggestions", OptionList)
        if options.has_class("-shown") and self.query_one("#to", Input).has_focus:
            options.highlighted = 0
            options.focus()

    @on(OptionList.OptionSelected, "#suggestions")
    def picked(self, event: OptionList.OptionSelected) -> None:
        chosen = self._suggestions[int(event.option.id)]
        self.fill(chosen.address, contact_id=chosen.contact_id, name=chosen.name)
        self.screen.focus_next()

    @on(Input.Submitted, "#to")
    def submitted(self) -> None:
        self._hide_suggestions()
        self.screen.focus_next()

    @on(Input.Blurred, "#to")
    def left(self) -> None:
        """Leaving the field checks it — unless the user is only moving into the suggestions."""
        if self.screen.focused is self.query_one("#suggestions"):
            return
        self._hide_suggestions()
        if self.verdict is None and self.value.strip():
            self.check()

    def _hide_suggestions(self) -> None:
        self.query_one("#suggestions", OptionList).remove_class("-shown")

    def check(self) -> None:
        if not self.value.strip():
            return
        self._set_verdict(None, "Verifying Address…" if self.channel == "direct" else "Checking…", "-busy")
        self.run_check(self.value)

    @work(thread=True, exclusive=True, group="verify-recipient", exit_on_error=False)
    def run_check(self, text: str) -> None:
        from models.db import database

        with database.connection_context():
            try:
                settings = direct_settings(getattr(self.app, "config", None)) if self.channel == "direct" else None
            except ValueError as exc:  # a bad [dns]/[direct] setting: say so instead of spinning forever
                verdict = Verdict(text.strip(), "unverified", f"cannot check the certificate: {exc}", "local")
            else:
                verdict = verify_recipient(self.channel, text, settings, username=getattr(self.app, "username", ""))
        self.app.call_from_thread(self._checked, text, verdict)

    def _checked(self, text: str, verdict: Verdict) -> None:
        if text != self.value:
            return
        line, style = describe(verdict, self.channel)
        self._set_verdict(verdict, line, style)
        self.post_message(self.Checked(verdict, self.contact_id, self.contact_name))

    def _set_verdict(self, verdict: Verdict | None, line: str, style: str) -> None:
        self.verdict = verdict
        widget = self.query_one("#verdict", Static)
        widget.update(line)
        widget.set_classes(style)
        if verdict is None and not line:
            self.post_message(self.Checked(None, None, ""))
