"""The audit log, for administrators: who viewed, sent, received, verified, exported, printed, faxed or set up
what, when, about which patient (by MRN), and how it went — newest first, with whether the hash chain is
intact.

Rows load in a thread worker as the filter is typed, and an answer for a filter since changed is dropped; the
chain is checked in a second worker, so a long log never holds the list back. The screen only presents:
models.audit says what the rows are and whether the chain holds; the app's signed-in identity
(models/users.py, models/access.py: the "audit" permission) whether this user may read them.
"""

from __future__ import annotations

from rich.errors import StyleSyntaxError
from rich.style import Style
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Input, Label, Static
from textual.worker import Worker, WorkerState, get_current_worker

from models import clock
from models.audit import DEFAULT_LIMIT, AuditRow, ChainReport, query, verify_chain
from tui.screens.base import ReferdeskScreen
from tui.widgets.referrals_pane import fit

#: Theme variable per outcome: the word carries the meaning, the colour only helps the eye.
GOOD_OUTCOMES = {"ok", "sent", "delivered", "filed", "verified"}
PASSING_OUTCOMES = {"retry", "unfiled", "dns-error"}
#: Shorter words for the object types, so the object column keeps the id at 80 columns.
OBJECT_WORDS = {"inbound_message": "inbound", "direct_address": "address"}
NOT_ALLOWED = "Only administrators may read the audit log."


def object_words(row: AuditRow) -> str:
    return " ".join(part for part in (OBJECT_WORDS.get(row.object_type, row.object_type), row.object_id) if part)


def outcome_colour(outcome: str) -> str:
    if outcome in GOOD_OUTCOMES:
        return "success"
    return "warning" if outcome in PASSING_OUTCOMES else "error"


def _style(colours: dict[str, str], name: str) -> Style:
    colour = colours.get(name, "")
    try:
        return Style.parse(colour) if colour else Style(dim=True)
    except StyleSyntaxError:  # "$text-muted" is "auto 60%", not a colour Rich can paint
        return Style(dim=True)


def chain_words(report: ChainReport) -> str:
    """The chain's state in a line: intact with its length, or where it breaks and why."""
    if report.ok:
        return f"Chain intact: {report.rows:,} row{'s' if report.rows != 1 else ''} checked"
    return f"Chain BROKEN at row {report.first_bad_id}: {report.reason}"


class AuditScreen(ReferdeskScreen):
    """Audit log: every view, send, receipt, check, export, print, fax and set-up change, newest first."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="audit.back"),
        Binding("s", "focus_filter", "Filter", id="audit.filter"),
        Binding("r", "refresh", "Refresh", id="audit.refresh"),
        Binding("l", "focus_list", "List", show=False, id="audit.list"),
    ]
    CSS = """
    AuditScreen #audit-filters { height: 1; padding: 0 1; }
    AuditScreen #audit-filters Label { padding: 0 1 0 0; }
    AuditScreen #audit-filter { width: 1fr; max-width: 40; }
    AuditScreen #audit-chain { height: auto; max-height: 3; padding: 0 1; }
    AuditScreen #audit-chain.-ok { color: $success; }
    AuditScreen #audit-chain.-broken { color: $error; text-style: bold; }
    AuditScreen #audit-message { height: 1; padding: 0 1; color: $text-muted; }
    AuditScreen #audit-message.-error { color: $error; }
    AuditScreen #audit-detail { height: 1; padding: 0 1; color: $text-muted; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.rows: list[AuditRow] = []
        self.chain: ChainReport | None = None
        self.loaded = False
        self.viewed = False  # whether this opening was audited yet (_record_view)
        self._loaded_width = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Audit log — newest first", classes="screen-title")
        with Horizontal(id="audit-filters"):
            yield Label("Filter")
            yield Input(placeholder="user, MRN or action (e.g. chart.view)", compact=True, id="audit-filter")
        yield Static("Checking the chain…", id="audit-chain", markup=False)
        yield Static("Loading the audit log…", id="audit-message", markup=False)
        table = DataTable(id="audit-table", cursor_type="row")
        # Inline, because app-wide `DataTable { … }` rules outrank screen CSS and would misalign the table.
        table.styles.height = "1fr"
        table.styles.margin = (0, 1)
        yield table
        yield Static("", id="audit-detail", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        super().on_mount()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._fill())
        self.query_one("#audit-table", DataTable).focus()
        self.action_refresh()

    @property
    def allowed(self) -> bool:
        """Administrators only, when staff sign in with accounts; anyone on an open (single-user) install."""
        identity = getattr(self.app, "identity", None)
        return identity is None or identity.can("audit")

    # --- loading --------------------------------------------------------------------------------------------

    def action_refresh(self) -> None:
        """Read the rows again and check the chain again (rows may have been appended meanwhile)."""
        if not self.allowed:
            self._say(NOT_ALLOWED, True)
            self._set_chain("", "")
            if not self.viewed:  # the attempt is audited, once per opening
                self.viewed = True
                from models.audit import record

                record("access.denied", username=getattr(self.app, "username", ""), outcome="denied",
                       detail="via=tui; permission=audit")
            return
        self._load(self.filter_text)
        self._check_chain()

    @work(thread=True, exclusive=True, group="audit-load", exit_on_error=False)
    def _load(self, text: str) -> None:
        from models.db import database

        worker = get_current_worker()
        with database.connection_context():
            rows = query(text=text, limit=DEFAULT_LIMIT)
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show, text, rows)

    @work(thread=True, exclusive=True, group="audit-chain", exit_on_error=False)
    def _check_chain(self) -> None:
        from models.db import database

        worker = get_current_worker()
        with database.connection_context():
            report = verify_chain()
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show_chain, report)

    @on(Worker.StateChanged)
    def _load_failed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        name = type(event.worker.error).__name__
        if event.worker.group == "audit-load":
            self._say(f"Could not read the audit log ({name}); press r to try again.", True)
        elif event.worker.group == "audit-chain":
            self._set_chain(f"Could not check the chain ({name}); press r to try again.", "-broken")

    def _show(self, text: str, rows: list[AuditRow]) -> None:
        """Show `rows` unless the filter changed while they loaded: an old answer never hides a newer one."""
        if text != self.filter_text:
            return
        self.rows = rows
        self.loaded = True
        self._fill()
        self._record_view()
        if not rows:
            self._say(f"No audit row matches {text.strip()!r}." if text.strip() else "No audit rows yet.")
            return
        count = f"{len(rows)} row{'s' if len(rows) != 1 else ''}"
        if len(rows) >= DEFAULT_LIMIT:
            count += f" (the newest {DEFAULT_LIMIT}: filter to see older)"
        self._say(count)

    def _show_chain(self, report: ChainReport) -> None:
        self.chain = report
        self._set_chain(chain_words(report), "-ok" if report.ok else "-broken")
        self._record_view()

    def _record_view(self) -> None:
        """Reading the audit log is audited too (`audit.view`), once per opening of the screen: written once the
        first rows and the chain's verdict are both on screen, so neither counts this row."""
        if self.viewed or not self.loaded or self.chain is None:
            return
        self.viewed = True
        from models.audit import record

        record("audit.view", username=getattr(self.app, "username", ""),
               outcome="ok", detail=f"via=tui; rows={len(self.rows)}; chain={'intact' if self.chain.ok else 'broken'}")

    def _set_chain(self, text: str, style: str) -> None:
        line = self.query_one("#audit-chain", Static)
        line.update(text)
        line.set_classes(style)

    def _say(self, text: str, error: bool = False) -> None:
        message = self.query_one("#audit-message", Static)
        message.update(text)
        message.set_class(error, "-error")

    # --- the table --------------------------------------------------------------------------------------------

    @staticmethod
    def _columns(width: int, scrollbar: bool = True) -> list[tuple[str, str, int]]:
        """(key, label, width) per column for a table `width` cells wide. The row number, time, MRN and outcome
        are fixed; the action comes first among the rest (it says what happened), then the user and the object.
        Under 100 columns the object gives way (the line under the table shows it for the highlighted row)."""
        wide = width >= 100
        fixed = {"id": 6, "at": 16 if wide else 11, "mrn": 10 if wide else 8, "outcome": 10 if wide else 9}
        shares = {"user": 2, "action": 3, "object": 3} if wide else {"user": 1, "action": 2}
        count = len(fixed) + len(shares)
        room = width - 2 * count - (2 if scrollbar else 0) - sum(fixed.values())  # 2 cells of padding a column
        sizes = {key: max(4, room * share // sum(shares.values())) for key, share in shares.items()}
        sizes["action"] += max(0, room - sum(sizes.values()))
        widths = fixed | sizes
        labels = {"id": "#", "at": "Time", "user": "User", "action": "Action", "mrn": "MRN", "object": "Object",
                  "outcome": "Outcome"}
        return [(key, labels[key], widths[key]) for key in labels if key in widths]

    def _fill(self) -> None:
        table = self.query_one("#audit-table", DataTable)
        selected = self.selected_row
        scrollbar = not table.size.height or len(self.rows) > table.size.height - 1
        columns = self._columns(table.size.width or self.size.width or 80, scrollbar)
        self._loaded_width = table.size.width
        table.clear(columns=True)
        for key, label, width in columns:
            table.add_column(label, width=width, key=key)
        widths = {key: width for key, _, width in columns}
        colours = self.app.theme_variables
        for row in self.rows:
            at = clock.local(row.at)
            cells = {
                "id": str(row.id),
                "at": f"{at:%m/%d/%Y %H:%M}" if widths["at"] >= 16 else f"{at:%m/%d %H:%M}",
                "user": fit(row.username or "—", widths["user"]),
                "action": fit(row.action, widths["action"]),
                "mrn": fit(row.patient_mrn or "—", widths["mrn"]),
                "object": fit(object_words(row) or "—", widths.get("object", 0)),
                "outcome": Text(fit(row.outcome, widths["outcome"]), no_wrap=True,
                                style=_style(colours, outcome_colour(row.outcome))),
            }
            table.add_row(*(cells[key] for key, _, _ in columns), key=str(row.id))
        if selected is not None and any(r.id == selected.id for r in self.rows):
            table.move_cursor(row=table.get_row_index(str(selected.id)))
        self._show_detail()

    def on_resize(self, event: events.Resize) -> None:
        table = self.query_one("#audit-table", DataTable)
        if self.rows and table.size.width != self._loaded_width:
            self._fill()

    @property
    def selected_row(self) -> AuditRow | None:
        table = self.query_one("#audit-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((row for row in self.rows if str(row.id) == key), None)

    @on(DataTable.RowHighlighted, "#audit-table")
    def _show_detail(self) -> None:
        """Under the table, the highlighted row whole: its full time, action, object, outcome and detail (ids and
        codes only)."""
        row = self.selected_row
        line = ""
        if row is not None:
            parts = [f"#{row.id} {clock.local(row.at):%m/%d/%Y %H:%M:%S}", row.action, object_words(row),
                     row.outcome, row.detail]
            line = " · ".join(part for part in parts if part)
        self.query_one("#audit-detail", Static).update(line)

    # --- filter -----------------------------------------------------------------------------------------------

    @on(Input.Changed, "#audit-filter")
    def _filter_typed(self, event: Input.Changed) -> None:
        text = event.value.strip()
        if text != self.filter_text and self.allowed:
            self.filter_text = text
            self._say("Loading the audit log…")
            self._load(text)

    @on(Input.Submitted, "#audit-filter")
    def _filter_submitted(self) -> None:
        self.action_focus_list()

    def action_focus_filter(self) -> None:
        self.query_one("#audit-filter", Input).focus()

    def action_focus_list(self) -> None:
        self.query_one("#audit-table", DataTable).focus()
