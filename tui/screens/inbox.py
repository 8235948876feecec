"""The inbox (F5): messages received by Direct — what was filed, what waits for staff to attach it to a patient
(the to-be-filed list), and what was quarantined, with the reason.

Rows load in a thread worker and an answer for a filter the user has since changed is dropped. The first load
opens on the to-be-filed list when anything waits there (that is the work to do), else on every message.
The screen only presents: the model (models.inbox) says what each message is and whether it may be attached.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.errors import StyleSyntaxError
from rich.style import Style
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Label, Select, Static
from textual.worker import Worker, WorkerState, get_current_worker

from models import clock
from models.inbox import DEFAULT_LIMIT, InboxError, InboxRow, attach_refusal, list_inbox
from models.referral_history import local_today
from tui.screens.base import ReferdeskScreen
from tui.widgets.referrals_pane import fit, fit_person

ALL = "all"
STATE_LABELS = {"unfiled": "To be filed", "rejected": "Quarantined", "filed": "Filed", "failed": "Failed",
                "new": "Being processed"}
#: Theme variable per state: the words carry the meaning, the colour only helps the eye (as on Referrals).
STATE_COLOURS = {"unfiled": "warning", "rejected": "error", "filed": "success", "failed": "error",
                 "new": "text-muted"}
FILTER_OPTIONS = [("To be filed", "unfiled"), ("Quarantined", "rejected"), ("Filed", "filed"), ("Failed", "failed"),
                  ("All", ALL)]
SHOWN_FIRST = "unfiled"  # what the filter says while the first load finds out whether anything waits
EMPTY = {"unfiled": "Nothing waits to be filed.", "rejected": "Nothing is quarantined.",
         "filed": "No message has been filed yet.", "failed": "No message failed to be filed.",
         ALL: "No messages received yet."}


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def one_line(text: str) -> str:
    """A header as one line: a sender's subject may carry line breaks or runs of spaces."""
    return " ".join(text.split())


def state_label(row: InboxRow) -> str:
    """The state in a word or two: "Filed", "Notification", "To be filed", "Quarantined"…"""
    if row.state == "filed" and row.kind == "notification" and row.mrn is None:
        return "Notification"
    return STATE_LABELS.get(row.state, row.state)


def state_words(row: InboxRow) -> str:
    """The state as staff read it: where a filed message went, why one was quarantined or failed."""
    label = state_label(row)
    if row.state == "filed":
        if row.referral_id is not None:
            return f"{label} → referral #{row.referral_id}"
        return f"{label} applied" if label == "Notification" else f"{label} to chart"
    if row.state in ("rejected", "failed") and row.error:
        return f"{label}: {row.error}"
    return label


def state_text(row: InboxRow, colours: dict[str, str], width: int | None = None) -> Text:
    """`state_words`, shortened to `width` with "…", coloured by state; the label bold where it needs a hand."""
    words = state_words(row)
    if width is not None:
        words = fit(words, width)
    text = Text(words, no_wrap=width is not None)
    colour = colours.get(STATE_COLOURS.get(row.state, ""), "")
    try:
        style = Style.parse(colour) if colour else Style(dim=True)
    except StyleSyntaxError:  # "$text-muted" is "auto 60%", not a colour Rich can paint
        style = Style(dim=True)
    label = len(state_label(row))
    if row.state in ("rejected", "failed", "unfiled"):
        text.stylize(style + Style(bold=True), 0, min(label, len(words)))
        text.stylize(style, min(label, len(words)))
    else:
        text.stylize(style)
    return text


@dataclass(frozen=True)
class Filters:
    state: str | None = None  # None: not chosen yet (the first load picks), else a FILTER_OPTIONS value


class InboxScreen(ReferdeskScreen):
    """Inbox: received messages; attach one waiting to be filed to a patient."""

    AUDIT_VIEW = "inbound.list"

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="inbox.back"),
        Binding("s", "focus_filter", "Filter", id="inbox.filter"),
        Binding("a", "attach", "Attach to patient", id="inbox.attach"),
        Binding("l", "focus_list", "List", show=False, id="inbox.list"),
    ]
    CSS = """
    InboxScreen #inbox-filters { height: 1; padding: 0 1; }
    InboxScreen #inbox-filters Label { padding: 0 1 0 0; }
    InboxScreen #inbox-state { width: 17; }
    InboxScreen #inbox-message { height: 1; padding: 0 1; color: $text-muted; }
    InboxScreen #inbox-message.-error { color: $error; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.filters = Filters()
        self.rows: list[InboxRow] = []
        self.loaded = False
        self._loaded_size = (0, 0)
        self._away = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Inbox — received messages", classes="screen-title")
        with Horizontal(id="inbox-filters"):
            yield Label("Show")
            yield Select(FILTER_OPTIONS, value=SHOWN_FIRST, allow_blank=False, compact=True, id="inbox-state")
        yield Static("Loading messages…", id="inbox-message", markup=False)
        table = DataTable(id="inbox-table", cursor_type="row")
        # Inline, because app-wide `DataTable { … }` rules outrank screen CSS and would misalign the table.
        table.styles.height = "1fr"
        table.styles.margin = (0, 1)
        yield table
        yield Footer(compact=True)

    def on_mount(self) -> None:
        super().on_mount()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._fill())
        self.query_one("#inbox-table", DataTable).focus()
        self.reload()

    def on_screen_suspend(self) -> None:
        self._away = True

    def on_screen_resume(self) -> None:
        """Back from a message or the attach dialog: what was attached has moved on, so read the list again."""
        if self._away:
            self._away = False
            self.reload()

    # --- loading --------------------------------------------------------------------------------------------

    def reload(self) -> None:
        self._load(self.filters)

    @work(thread=True, exclusive=True, group="inbox-load", exit_on_error=False)
    def _load(self, filters: Filters) -> None:
        from models.db import database

        worker = get_current_worker()
        try:
            with database.connection_context():
                state = filters.state
                if state is None:  # first load: the to-be-filed list when anything waits there
                    rows = list_inbox("unfiled", DEFAULT_LIMIT)
                    state = "unfiled" if rows else ALL
                    if not rows:
                        rows = list_inbox(None, DEFAULT_LIMIT)
                else:
                    rows = list_inbox(None if state == ALL else state, DEFAULT_LIMIT)
        except InboxError as exc:
            if not worker.is_cancelled:
                self.app.call_from_thread(self._say, sentence(str(exc)), True)
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show, filters, state, rows)

    @on(Worker.StateChanged)
    def _load_failed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "inbox-load" and event.state == WorkerState.ERROR:
            self._say(f"Could not load the inbox ({type(event.worker.error).__name__}); change the filter to try "
                      "again.", True)

    def _show(self, filters: Filters, state: str, rows: list[InboxRow]) -> None:
        """Show `rows` unless the filter changed while they loaded: an old answer never hides a newer one."""
        if filters != self.filters:
            return
        if filters.state is None:  # the first load chose the list: say so in the filter
            self.filters = Filters(state)
            select = self.query_one("#inbox-state", Select)
            if select.value != state:
                with self.prevent(Select.Changed):
                    select.value = state
        self.rows = rows
        self.loaded = True
        self._fill()
        if not rows:
            self._say(EMPTY.get(state, EMPTY[ALL]))
            return
        count = f"{len(rows)} message{'s' if len(rows) != 1 else ''}"
        if len(rows) >= DEFAULT_LIMIT:
            count += f" (the newest {DEFAULT_LIMIT})"
        if state == "unfiled":
            self._say(f"{count} to be filed — Enter opens one, a attaches it to a patient")
        else:
            self._say(f"{count} — Enter opens one")

    def _say(self, text: str, error: bool = False) -> None:
        message = self.query_one("#inbox-message", Static)
        message.update(text)
        message.set_class(error, "-error")

    # --- the table --------------------------------------------------------------------------------------------

    @staticmethod
    def _columns(width: int, rows: list[InboxRow], scrollbar: bool = True) -> list[tuple[str, str, int]]:
        """(key, label, width) per column for a table `width` cells wide. The received time is fixed; each other
        column gets a floor, then what is left goes to the patient, subject and sender as far as their longest
        value needs, and the rest to the state (a quarantine reason is long; the detail shows it whole)."""
        wide = width >= 100
        received = 16 if wide else 8
        room = width - 2 * 5 - (2 if scrollbar else 0) - received  # 2 cells of padding per column
        floors = ({"from": 16, "subject": 12, "patient": 14, "state": 24} if wide
                  else {"from": 12, "subject": 10, "patient": 13, "state": 20})
        needs = {"from": max((len(one_line(r.from_address)) for r in rows), default=0),
                 "subject": max((len(one_line(r.subject)) for r in rows), default=0),
                 "patient": max((len(r.patient_name or "") for r in rows), default=0)}
        sizes = dict(floors)
        left = room - sum(sizes.values())
        if left < 0:  # narrower than 80 columns: everything shrinks alike
            sizes = {key: max(4, size * room // sum(floors.values())) for key, size in floors.items()}
            left = room - sum(sizes.values())
        for key in ("patient", "subject", "from"):
            more = max(0, min(needs[key] - sizes[key], left))
            sizes[key] += more
            left -= more
        sizes["state"] += max(left, 0)
        labels = {"received": "Received", "from": "From", "subject": "Subject", "patient": "Patient",
                  "state": "State"}
        widths = {"received": received} | sizes
        return [(key, labels[key], widths[key]) for key in labels]

    @staticmethod
    def received_words(row: InboxRow, width: int) -> str:
        """When it came: date and time when there is room, else the time for today's and the date for older."""
        at = clock.local(row.received_at)
        if width >= 16:
            return f"{at:%m/%d/%Y %H:%M}"
        return f"{at:%H:%M}" if at.date() == local_today() else f"{at:%m/%d/%y}"

    def _fill(self) -> None:
        table = self.query_one("#inbox-table", DataTable)
        selected = self.selected_row
        cursor = table.cursor_row
        # A scrollbar takes 2 cells, only when the rows do not fit (or before the table has its size).
        scrollbar = not table.size.height or len(self.rows) > table.size.height - 1
        columns = self._columns(table.size.width or self.size.width or 80, self.rows, scrollbar)
        self._loaded_size = tuple(table.size)
        table.clear(columns=True)
        for key, label, width in columns:
            table.add_column(label, width=width, key=key)
        widths = {key: width for key, _, width in columns}
        colours = self.app.theme_variables
        for row in self.rows:
            cells = {
                "received": self.received_words(row, widths["received"]),
                "from": Text(fit(one_line(row.from_address) or "—", widths["from"])),
                "subject": Text(fit(one_line(row.subject) or "—", widths["subject"])),
                "patient": Text(fit_person(row.patient_name, widths["patient"], last_first=True)
                                if row.patient_name else "—"),
                "state": state_text(row, colours, widths["state"]),
            }
            table.add_row(*(cells[key] for key, _, _ in columns), key=str(row.id))
        if not self.rows:
            return
        keys = [r.id for r in self.rows]
        table.move_cursor(row=keys.index(selected.id) if selected and selected.id in keys
                          else min(cursor, len(keys) - 1))

    def on_resize(self, event: events.Resize) -> None:
        table = self.query_one("#inbox-table", DataTable)
        if self.rows and tuple(table.size) != self._loaded_size:
            self._fill()

    @property
    def selected_row(self) -> InboxRow | None:
        table = self.query_one("#inbox-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((row for row in self.rows if str(row.id) == key), None)

    # --- filter and actions -----------------------------------------------------------------------------------

    @on(Select.Changed, "#inbox-state")
    def _state_changed(self, event: Select.Changed) -> None:
        state = ALL if event.value == Select.NULL else str(event.value)
        if self.filters.state is None and state == SHOWN_FIRST:
            return  # the Select announcing the value it starts with: the first load chooses the list
        if Filters(state) != self.filters:
            self.filters = Filters(state)
            self._say("Loading messages…")
            self.reload()
        if event.select.has_focus_within:
            # The user picked a list: it is what they want to look at next (Shift+Tab returns to the filter).
            self.call_after_refresh(self.action_focus_list)

    def action_focus_filter(self) -> None:
        self.query_one("#inbox-state", Select).focus()

    def action_focus_list(self) -> None:
        self.query_one("#inbox-table", DataTable).focus()

    @on(DataTable.RowSelected, "#inbox-table")
    def _open(self, event: DataTable.RowSelected) -> None:
        from tui.screens.inbox_detail import InboxDetailScreen

        self.app.push_screen(InboxDetailScreen(int(event.row_key.value)))

    def action_attach(self) -> None:
        """Attach the highlighted message to a patient (only one waiting in the to-be-filed list)."""
        row = self.selected_row
        if row is None:
            self.notify("No message is selected.", severity="warning")
            return
        refusal = attach_refusal(row)
        if refusal:
            self.notify(sentence(refusal), title="Cannot attach", severity="warning", markup=False)
            return
        from tui.dialogs.attach_patient import AttachPatientDialog

        self.app.push_screen(AttachPatientDialog(row))
