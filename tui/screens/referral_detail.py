"""One referral: where it stands, every step of its delivery, what was sent with it, and the actions staff may
take on it (mark the report received, resend a failed one, cancel one still queued).

The screen asks the model whether an action is allowed and shows its answer as is, so the rules live in one
place; the work itself runs in a thread worker and the screen reloads from the database afterwards.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from typing import Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.markup import escape
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import Worker, WorkerState

from models import clock
from models.safe_text import one_line
from models.referral_history import (
    HistoryError,
    ReferralDetail,
    cancel_referral,
    cancel_refusal,
    mark_received_refusal,
    mark_report_received,
    referral_detail,
    resend_referral,
    resend_refusal,
)
from tui.screens.base import ReferdeskScreen
from tui.widgets.referrals_pane import STATUS_COLOURS, STATUS_LABELS

SUMMARY_FIELDS = ("Patient", "Status", "Recipient", "Via", "Made", "Message-ID", "Reason")
DIRECTION_WORDS = {"transferring": "transferring (we referred the patient out)",
                   "receiving": "receiving (our report on a patient referred to us)"}


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def when(value: dt.datetime | None) -> str:
    return f"{clock.local(value):%m/%d/%Y %H:%M}" if value else "—"


def human_size(size: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if size < 1024 or unit == "MB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)  # pragma: no cover


class ReferralDetailScreen(ReferdeskScreen):
    """A referral: its status, delivery steps and attachments."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="referrals.detail_back"),
        Binding("m", "mark_received", "Mark received", id="referrals.mark_received"),
        Binding("r", "resend", "Resend", id="referrals.resend"),
        Binding("c", "cancel_referral", "Cancel referral", id="referrals.cancel"),
    ]
    # CSS, not DEFAULT_CSS: app-wide `DataTable { … }` rules (height: 1fr) would outrank default CSS.
    CSS = """
    ReferralDetailScreen #detail-body { height: 1fr; padding: 0 1; }
    ReferralDetailScreen #summary { height: auto; grid-size: 2; grid-columns: 12 1fr; grid-rows: auto;
                                    margin-bottom: 1; }
    ReferralDetailScreen #summary .key { text-style: bold; }
    ReferralDetailScreen .section { text-style: bold; color: $accent; }
    ReferralDetailScreen #detail-body DataTable { height: auto; margin: 0 0 1 0; }
    ReferralDetailScreen #no-attachments { color: $text-muted; }
    """

    def __init__(self, referral_id: int) -> None:
        super().__init__()
        self.referral_id = referral_id
        self.detail: ReferralDetail | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Referral {self.referral_id}", id="detail-title", classes="screen-title")
        with VerticalScroll(id="detail-body"):
            with Grid(id="summary"):
                for key in SUMMARY_FIELDS:
                    yield Static(key, classes="key")
                    yield Static("…" if key != "Patient" else "Loading…", id=f"f-{key.lower().replace('-', '')}")
            yield Static("Delivery steps", classes="section")
            yield DataTable(id="events", cursor_type="row", zebra_stripes=True)
            yield Static("Attachments", classes="section")
            yield DataTable(id="attachments", cursor_type="row")
            yield Static("None stored with this referral.", id="no-attachments")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#attachments").display = False
        self.query_one("#no-attachments").display = False
        self.query_one("#events", DataTable).focus()
        self.reload()

    # --- loading ----------------------------------------------------------------------------------------------

    def reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="referral-detail", exit_on_error=False)
    def _load(self) -> None:
        from models.db import database

        try:
            with database.connection_context():
                detail = referral_detail(self.referral_id)
                if self.detail is None:  # the first load of this opening, not a reload
                    from models.audit import record_referral

                    record_referral("referral.view", self.referral_id, username=getattr(self.app, "username", ""),
                                    detail="via=tui")
        except HistoryError as exc:
            self.app.call_from_thread(self._not_found, sentence(str(exc)))
            return
        self.app.call_from_thread(self._show, detail)

    def _not_found(self, text: str) -> None:
        self.query_one("#f-patient", Static).update(escape(text))

    def _show(self, detail: ReferralDetail) -> None:
        self.detail = detail
        row = detail.row
        label = STATUS_LABELS.get(row.status, row.status)
        self.query_one("#detail-title", Static).update(f"Referral {row.id} — {label}")
        for key, value in self._summary(detail).items():
            self.query_one(f"#f-{key.lower().replace('-', '')}", Static).update(value)
        self._fill_events(detail)
        self._fill_attachments(detail)

    def _summary(self, detail: ReferralDetail) -> dict[str, str]:
        row = detail.row
        colour = STATUS_COLOURS.get(row.status, "foreground")
        status = f"[b ${colour}]{escape(STATUS_LABELS.get(row.status, row.status))}[/]"
        if row.status_reason:
            status += f" — {escape(row.status_reason)}"
        if row.report_received_on:
            status += f" on {row.report_received_on:%m/%d/%Y}"
        recipient = escape(row.recipient)
        if row.recipient_name:
            recipient = f"{escape(row.recipient_name)}\n{recipient}"
        return {
            "Patient": f"{escape(row.patient_name)} · MRN {escape(row.mrn)}",
            "Status": status,
            "Recipient": recipient,
            "Via": (f"{escape(row.channel)} · {escape(DIRECTION_WORDS.get(row.direction, row.direction))} · "
                    f"{escape(detail.urgency)}"),
            "Made": (f"{when(row.created_at)} · sent {when(row.sent_at)}"
                     + (f" · delivered {when(detail.delivered_at)}" if detail.delivered_at else "")),
            "Message-ID": escape(row.message_id or "—"),
            "Reason": escape(detail.reason or "—"),
        }

    def _fill_events(self, detail: ReferralDetail) -> None:
        table = self.query_one("#events", DataTable)
        width = max((table.size.width or self.size.width or 80) - 2 - 6, 40)
        at_w, kind_w = 16, max(len("Step"), *(len(e.kind) for e in detail.events)) if detail.events else 15
        table.clear(columns=True)
        table.add_column("When", width=at_w, key="at")
        table.add_column("Step", width=kind_w, key="kind")
        detail_w = max(width - at_w - kind_w, 20)
        table.add_column("Detail", width=detail_w, key="detail")
        for i, event in enumerate(detail.events):
            # A long failure reason wraps onto more lines instead of running off the edge. Wrapped here with an
            # exact row height: DataTable's own height=None measuring leaves blank lines under a height-auto table.
            lines = textwrap.wrap(event.detail, detail_w) or ["—"]
            table.add_row(when(event.at), event.kind, Text("\n".join(lines)), key=str(i), height=len(lines))
        if detail.events:
            table.move_cursor(row=len(detail.events) - 1)

    def _fill_attachments(self, detail: ReferralDetail) -> None:
        table = self.query_one("#attachments", DataTable)
        table.clear(columns=True)
        table.add_columns("File", "Kind", "Type", "Size")
        for item in detail.attachments:
            # Text, not str: DataTable reads str cells as markup, and these come from received messages
            table.add_row(Text(one_line(item.filename), no_wrap=True, end=""), item.kind,
                          Text(one_line(item.media_type), no_wrap=True, end=""), human_size(item.size),
                          key=str(item.id))
        table.display = bool(detail.attachments)
        self.query_one("#no-attachments").display = not detail.attachments

    # --- actions ----------------------------------------------------------------------------------------------

    @property
    def username(self) -> str:
        return getattr(self.app, "username", "") or ""

    def _refused(self, refusal: str | None, title: str) -> bool:
        if self.detail is None:
            self.notify("The referral is still loading.", severity="warning")
            return True
        if refusal:
            self.notify(sentence(refusal), title=title, severity="warning", markup=False)
            return True
        return False

    def action_mark_received(self) -> None:
        if not self.app.allowed("mark-received"):  # access: says who may
            return
        if self._refused(self.detail and mark_received_refusal(self.detail.row), "Cannot mark the report received"):
            return
        from tui.dialogs.mark_received import MarkReceivedDialog

        row = self.detail.row
        about = f"Referral {row.id} · {row.patient_name} → {row.recipient_name or row.recipient}"
        self.app.push_screen(MarkReceivedDialog(earliest=clock.local(row.created_at).date(), about=about),
                             callback=self._mark_chosen)

    def _mark_chosen(self, day: dt.date | None) -> None:
        if day is None:
            return
        self._act(lambda: mark_report_received(self.referral_id, day, username=self.username),
                  f"Report received on {day:%m/%d/%Y} recorded for referral {self.referral_id}.")

    def action_resend(self) -> None:
        if self._refused(self.detail and resend_refusal(self.detail.row), "Cannot resend"):
            return
        self._act(lambda: resend_referral(self.referral_id, username=self.username),
                  f"Referral {self.referral_id} queued again as a new {self.detail.row.channel} message.")

    def action_cancel_referral(self) -> None:
        if self._refused(self.detail and cancel_refusal(self.detail.row), "Cannot cancel"):
            return
        from tui.dialogs.confirm import ConfirmDialog

        row = self.detail.row
        question = (f"Cancel referral {row.id} to {row.recipient_name or row.recipient}? "
                    "It will not be sent, and this cannot be undone.")

        def answered(yes: bool | None) -> None:
            if yes:
                self._act(lambda: cancel_referral(self.referral_id, username=self.username),
                          f"Referral {self.referral_id} cancelled: it will not be sent.")

        self.app.push_screen(ConfirmDialog(question, yes="Cancel referral", no="Keep it"), callback=answered)

    @work(thread=True, exclusive=True, group="referral-action", exit_on_error=False)
    def _act(self, action: Callable[[], object], done: str) -> None:
        from models.db import database

        try:
            with database.connection_context():
                action()
        except HistoryError as exc:
            self.app.call_from_thread(self.notify, sentence(str(exc)), title="Nothing changed", severity="error",
                                      markup=False)
        else:
            self.app.call_from_thread(self.notify, done, title="Done", markup=False)
        self.app.call_from_thread(self.reload)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.group in ("referral-detail", "referral-action"):
            self.notify(f"The database did not answer ({type(event.worker.error).__name__}); nothing was "
                        "changed. Try again.", title="Error", severity="error")

    def action_back(self) -> None:
        self.dismiss(None)
