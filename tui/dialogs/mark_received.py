"""Asks the day the consultant's report arrived. Checks the date here, so a typo is caught while the dialog is
still open; the model checks it again when storing. Esc leaves without storing anything."""

from __future__ import annotations

import datetime as dt

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from models.referral_history import HistoryError, local_today, parse_mdy


class MarkReceivedDialog(ModalScreen[dt.date | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="referrals.mark_cancel")]
    DEFAULT_CSS = """
    MarkReceivedDialog { align: center middle; }
    MarkReceivedDialog > Vertical { width: 60; max-width: 100%; height: auto; border: round $primary;
                                    background: $surface; padding: 0 1; }
    MarkReceivedDialog #title { text-style: bold; }
    MarkReceivedDialog #about { color: $text-muted; margin-bottom: 1; }
    MarkReceivedDialog #received-on { width: 18; }
    MarkReceivedDialog #received-error { color: $error; height: auto; min-height: 1; }
    MarkReceivedDialog Horizontal { height: auto; align-horizontal: right; }
    MarkReceivedDialog Button { margin-left: 2; }
    """

    def __init__(self, *, earliest: dt.date | None = None, today: dt.date | None = None, about: str = "") -> None:
        super().__init__()
        self.earliest = earliest
        self.today = today or local_today()
        self.about = about

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Mark the consultation report received", id="title")
            if self.about:
                yield Static(self.about, id="about", markup=False)
            yield Label("Date it arrived (MM/DD/YYYY):")
            yield Input(f"{self.today:%m/%d/%Y}", max_length=10, id="received-on")
            yield Static("", id="received-error", markup=False)
            with Horizontal():
                yield Button("Mark received", variant="primary", id="mark")
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        box = self.query_one("#received-on", Input)
        box.cursor_blink = getattr(self.app, "cursor_blink", False)
        box.focus()

    def check(self, text: str) -> dt.date:
        """The date typed, or HistoryError saying in words what is wrong with it."""
        day = parse_mdy(text)
        if day > self.today:
            raise HistoryError(f"{day:%m/%d/%Y} is in the future: the report cannot have arrived yet")
        if self.earliest and day < self.earliest:
            raise HistoryError(f"{day:%m/%d/%Y} is before the referral was made ({self.earliest:%m/%d/%Y})")
        return day

    @on(Input.Submitted, "#received-on")
    @on(Button.Pressed, "#mark")
    def confirm(self) -> None:
        error = self.query_one("#received-error", Static)
        try:
            day = self.check(self.query_one("#received-on", Input).value)
        except HistoryError as exc:
            error.update(str(exc)[:1].upper() + str(exc)[1:] + ".")
            self.query_one("#received-on", Input).focus()
            return
        error.update("")
        self.dismiss(day)

    @on(Input.Changed, "#received-on")
    def _typed(self) -> None:
        self.query_one("#received-error", Static).update("")

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
