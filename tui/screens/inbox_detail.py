"""One received message: who sent it, when and how, what became of it and why (the quarantine reason in full),
who signed it, who its C-CDA says it is about and what reading it found, the MDNs sent back, and its documents
(Enter opens one). `a` attaches a message waiting in the to-be-filed list to a patient.

The message is read in a thread worker (models.inbox.inbox_detail) and read again after an attach.
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.markup import escape
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import Worker, WorkerState

from models.inbox import InboxDetail, InboxError, attach_refusal, inbox_detail
from tui.screens.base import ReferdeskScreen
from tui.screens.inbox import STATE_COLOURS, sentence, state_label
from tui.screens.referral_detail import human_size, when
from tui.widgets.referrals_pane import fit

SUMMARY_FIELDS = ("From", "Subject", "Received", "State", "Patient", "Message-ID", "Signer", "C-CDA", "MDNs")
CHANNEL_WORDS = {"smtp": "by SMTP (our listener)", "imap": "from the HISP's mailbox (IMAP)",
                 "file": "from a file (referdesk receive)"}
SEVERITY_COLOURS = {"error": "error", "warning": "warning", "info": "text-muted"}


def fingerprint_words(fingerprint: str) -> str:
    """A SHA-256 fingerprint in groups of eight, so it can be read out and compared."""
    return " ".join(fingerprint[i:i + 8] for i in range(0, len(fingerprint), 8))


def mdn_words(mdn: str) -> str:
    """"dispatched: held" says little to staff: a held MDN goes once the message is filed."""
    return mdn.replace(": held", ": held until it is filed")


class InboxDetailScreen(ReferdeskScreen):
    """A received message: its state and reason, signer, C-CDA patient, MDNs and documents."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="inbox.detail_back"),
        Binding("a", "attach", "Attach to patient", id="inbox.detail_attach"),
    ]
    # CSS, not DEFAULT_CSS: app-wide `DataTable { … }` rules (height: 1fr) would outrank default CSS.
    CSS = """
    InboxDetailScreen #message-body { height: 1fr; padding: 0 1; }
    InboxDetailScreen #summary { height: auto; grid-size: 2; grid-columns: 12 1fr; grid-rows: auto;
                                 margin-bottom: 1; }
    InboxDetailScreen #summary .key { text-style: bold; }
    InboxDetailScreen .section { text-style: bold; color: $accent; }
    InboxDetailScreen #findings { margin-bottom: 1; }
    InboxDetailScreen #message-body DataTable { height: auto; margin: 0 0 1 0; }
    InboxDetailScreen #no-documents { color: $text-muted; }
    """

    def __init__(self, inbound_id: int) -> None:
        super().__init__()
        self.inbound_id = inbound_id
        self.detail: InboxDetail | None = None
        self.viewed = False  # the view is audited once, when the message is first read

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Received message {self.inbound_id}", id="message-title", classes="screen-title")
        with VerticalScroll(id="message-body"):
            with Grid(id="summary"):
                for key in SUMMARY_FIELDS:
                    yield Static(key, classes="key")
                    yield Static("Loading…" if key == "From" else "…", id=self._field_id(key))
            yield Static("Findings in the C-CDA", classes="section", id="findings-title")
            yield Static("", id="findings")
            yield Static("Documents", classes="section")
            yield DataTable(id="documents", cursor_type="row")
            yield Static("", id="no-documents")
        yield Footer(compact=True)

    @staticmethod
    def _field_id(key: str) -> str:
        return "f-" + key.lower().replace("-", "")

    def on_mount(self) -> None:
        super().on_mount()
        for name in ("#documents", "#findings-title", "#findings", "#no-documents"):
            self.query_one(name).display = False
        self.query_one("#message-body").focus()
        self.reload()

    # --- loading ----------------------------------------------------------------------------------------------

    def reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="inbox-detail", exit_on_error=False)
    def _load(self) -> None:
        from models.db import database

        try:
            with database.connection_context():
                detail = inbox_detail(self.inbound_id)
                if not self.viewed:  # once per opening: the reload after an attach is audited as the attach
                    self._record_view(detail)
                    self.viewed = True
        except InboxError as exc:
            self.app.call_from_thread(self._not_found, sentence(str(exc)))
            return
        self.app.call_from_thread(self._show, detail)

    def _record_view(self, detail: InboxDetail) -> None:
        """`inbound.view`: a received message's sender, subject and the patient it was filed to are shown, so
        opening it is audited — by inbound id, with the patient's MRN when it reached a chart."""
        from models.audit import record

        row = detail.row
        record("inbound.view", username=getattr(self.app, "username", ""), patient_mrn=row.mrn or "",
               object_type="inbound_message", object_id=str(row.id), detail=f"state={row.state}")

    @on(Worker.StateChanged)
    def _load_failed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "inbox-detail" and event.state == WorkerState.ERROR:
            self._not_found(f"The database did not answer ({type(event.worker.error).__name__}); press Esc and "
                            "open the message again.")

    def _not_found(self, text: str) -> None:
        self.query_one("#f-from", Static).update(Text(text, style="bold"))

    def _show(self, detail: InboxDetail) -> None:
        self.detail = detail
        label = state_label(detail.row)
        self.query_one("#message-title", Static).update(f"Received message {detail.row.id} — {label}")
        for key, value in self._summary(detail).items():
            self.query_one(f"#{self._field_id(key)}", Static).update(value)
        self._fill_findings(detail)
        self._fill_documents(detail)
        self.refresh_bindings()

    def _summary(self, detail: InboxDetail) -> dict[str, str]:
        row = detail.row
        colour = STATE_COLOURS.get(row.state, "foreground")
        state = f"[b ${colour}]{escape(state_label(row))}[/]"
        if row.state == "filed" and row.referral_id is not None:
            state += f" → referral #{row.referral_id}"
        elif row.state == "filed":
            state += " (applied to our referral)" if row.kind == "notification" else " to the patient's chart"
        if row.error:
            state += f" — {escape(sentence(row.error))}"
        if row.state == "unfiled":
            state += "\nPress a to attach it to a patient."
        parts = [f"{escape(row.patient_name or '')} · MRN {escape(row.mrn)}"] if row.mrn else []
        if row.referral_id is not None:
            parts.append(f"referral #{row.referral_id}")
        patient = " · ".join(parts) or ("— (waits to be attached)" if row.state == "unfiled" else "—")
        message_id = escape(detail.message_id or "—")
        if detail.in_reply_to:
            message_id += f"\nin reply to {escape(detail.in_reply_to)}"
        if detail.signer_fingerprint:
            signer = f"SHA-256 {fingerprint_words(detail.signer_fingerprint)}"
        else:
            signer = "— (no trusted signature)" if row.state == "rejected" else "—"
        return {
            "From": escape(row.from_address or "—"),
            "Subject": escape(row.subject or "—"),
            "Received": f"{when(row.received_at)} · {escape(CHANNEL_WORDS.get(row.channel, row.channel))}",
            "State": state,
            "Patient": patient,
            "Message-ID": message_id,
            "Signer": signer,
            "C-CDA": escape(detail.ccda_patient or "—"),
            "MDNs": escape(" · ".join(mdn_words(m) for m in detail.mdns) if detail.mdns else
                           "none (a quarantined message is never acknowledged)" if row.state == "rejected"
                           else "none"),
        }

    def _fill_findings(self, detail: InboxDetail) -> None:
        lines = []
        for finding in detail.findings:
            colour = SEVERITY_COLOURS.get(finding.severity, "foreground")
            where = " · ".join(part for part in (finding.document, finding.location) if part)
            lines.append(f"[b ${colour}]{escape(finding.severity or 'note')}[/] {escape(sentence(finding.message))}"
                         + (f" [$text-muted]({escape(where)})[/]" if where else ""))
        self.query_one("#findings", Static).update("\n".join(lines))
        for name in ("#findings-title", "#findings"):
            self.query_one(name).display = bool(lines)

    def _fill_documents(self, detail: InboxDetail) -> None:
        table = self.query_one("#documents", DataTable)
        cursor = table.cursor_row
        table.clear(columns=True)
        width = max((table.size.width or self.size.width or 80) - 4, 40)
        sizes = [len(human_size(d.size)) for d in detail.documents] or [4]
        kinds = [len(d.kind) for d in detail.documents] or [4]
        files = [len(d.filename) for d in detail.documents] or [4]
        fixed = max(4, *sizes) + max(4, *kinds) + 2 * 4
        file_w = min(max(4, *files), max((width - fixed) // 2, 12))
        titles = [len(d.title or d.filename) for d in detail.documents] or [5]
        title_w = max(min(max(5, *titles), width - fixed - file_w), 10)
        table.add_column("Title", key="title", width=title_w)
        table.add_column("File", key="file", width=file_w)
        table.add_column("Kind", key="kind")
        table.add_column("Size", key="size")
        for document in detail.documents:
            table.add_row(Text(fit(document.title or document.filename, title_w)),
                          Text(fit(document.filename, file_w)), document.kind,
                          Text(human_size(document.size), justify="right"), key=str(document.id))
        table.display = bool(detail.documents)
        empty = self.query_one("#no-documents", Static)
        empty.display = not detail.documents
        if detail.row.state == "rejected":
            empty.update("None opened: a quarantined message is kept as it came, unread.")
        else:
            empty.update("None.")
        if detail.documents:
            table.move_cursor(row=min(cursor, len(detail.documents) - 1))
            if self.focused is None or self.focused.id == "message-body":
                table.focus()

    # --- actions ----------------------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#documents")
    def _open_document(self, event: DataTable.RowSelected) -> None:
        from tui.screens.document_view import DocumentViewScreen

        self.app.push_screen(DocumentViewScreen(int(event.row_key.value)))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`a` is offered only for a message waiting in the to-be-filed list (the State line says why not)."""
        if action == "attach" and self.detail is not None:
            return attach_refusal(self.detail.row) is None
        return True

    def action_attach(self) -> None:
        if self.detail is None:
            self.notify("The message is still loading.", severity="warning")
            return
        refusal = attach_refusal(self.detail.row)
        if refusal:
            self.notify(sentence(refusal), title="Cannot attach", severity="warning", markup=False)
            return
        from tui.dialogs.attach_patient import AttachPatientDialog

        self.app.push_screen(AttachPatientDialog(self.detail.row),
                             callback=lambda _mrn: self.reload())

    def action_back(self) -> None:
        self.dismiss(None)
