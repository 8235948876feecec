"""Referral history as a table with filters: every referral (the Referrals screen) or one patient's (the chart).

Rows load in a thread worker, so a slow database never freezes typing; a result for filters the user has since
changed is dropped. Columns are sized to the width available, so at 80 columns the status stays readable and
the long parts (recipient, failure reason) are shortened with "…" rather than cut mid-word without warning;
the detail screen shows them whole.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from rich.errors import StyleSyntaxError
from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Label, Select, Static
from textual.worker import Worker, WorkerState, get_current_worker

from models import clock
from models.safe_text import one_line
from models.overdue import (
    DEFAULT_OVERDUE_DAYS,
    OverdueSettingError,
    days_overdue,
    overdue_days_setting,
    overdue_referrals,
)
from models.referral_history import (
    HistoryError,
    ReferralRow,
    change_stamp,
    list_referrals,
    local_today,
    parse_mdy,
)
from tui.widgets.pane import Pane

STATUS_LABELS = {
    "queued": "Queued",
    "sending": "Sending",
    "sent": "Sent",
    "delivered": "Delivered",
    "report-received": "Report received",
    "failed": "Failed",
    "cancelled": "Cancelled",
}
LIVE_SECONDS = 2  # how often an open list checks whether a worker moved a referral on
#: Theme variable per status: the word carries the meaning, the colour only helps the eye.
STATUS_COLOURS = {
    "queued": "warning", "sending": "warning", "sent": "warning",
    "delivered": "success", "report-received": "success",
    "failed": "error", "cancelled": "text-muted",
}
ALL = "all"
OVERDUE = "overdue"
OVERDUE_COLOUR = "error"  # a loop left open too long needs a hand, as a failure does
STATUS_OPTIONS = [("All", ALL), ("Open", "open"), ("Overdue", OVERDUE),
                  *((label, key) for key, label in STATUS_LABELS.items())]


def fit(text: str, width: int) -> str:
    """`text` in at most `width` cells, ending in "…" when shortened."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def fit_person(name: str, width: int, *, last_first: bool) -> str:
    """A name shortened the way people shorten names before it is cut: credentials dropped, then the first
    name reduced to its initial ("Jackson, D" rather than "Jackson, De…"; "K Running Water" for a recipient)."""
    if len(name) <= width:
        return name
    if last_first:
        last, _, first = name.partition(", ")
        candidates = [f"{last}, {first[:1]}"] if first else []
    else:
        bare = name.split(", ")[0]
        first, _, rest = bare.partition(" ")
        candidates = [bare] + ([f"{first[:1]} {rest}"] if rest else [])
    for candidate in candidates:
        if len(candidate) <= width:
            return candidate
    return fit(candidates[-1] if candidates else name, width)


def status_words(row: ReferralRow, width: int = 80, overdue: int | None = None) -> str:
    """The status as words: a failure with its reason, a received report with its date, a referral waiting
    too long for its report with the days it has waited ("Overdue 45 d", and its status when there is room)."""
    label = STATUS_LABELS.get(row.status, row.status)
    if overdue is not None:
        short = f"Overdue {overdue} d"
        full = f"{short} · {label}"
        return full if len(full) <= width else short
    if row.status == "failed" and row.status_reason:
        return f"{label}: {row.status_reason}"
    if row.status == "report-received" and row.report_received_on:
        short = "Report" if width < 26 else label
        return f"{short} {row.report_received_on:%m/%d/%Y}"
    return label


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None


class ReferralsPane(Pane):
    """Referrals newest first; Enter opens one. Filter by status (or "Overdue": no report after
    `[referrals] overdue_days`) and by the day it was sent (made). Overdue rows say so in the status column."""

    BINDINGS = [
        Binding("s", "focus_filter", "Filter", id="referrals.filter"),
        Binding("l", "focus_list", "List", show=False, id="referrals.list"),
    ]
    DEFAULT_CSS = """
    ReferralsPane { padding: 0 1; overflow-y: hidden; }
    ReferralsPane #referral-filters { height: 1; }
    ReferralsPane #referral-filters Label { padding: 0 1 0 0; }
    ReferralsPane #referral-filters .gap { margin-left: 1; }
    ReferralsPane #referral-status { width: 17; }
    ReferralsPane #referral-filters Input { width: 11; }
    ReferralsPane #referral-message { height: 1; color: $text-muted; }
    ReferralsPane #referral-message.-error { color: $error; }
    """

    def __init__(self, patient_id: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.patient_id = patient_id
        self.rows: list[ReferralRow] = []
        self.filters = Filters()
        self.loaded = False
        self._loaded_width = 0
        self.overdue_days = DEFAULT_OVERDUE_DAYS

    def compose(self) -> ComposeResult:
        if self.patient_id is not None:
            yield Static("Referrals", classes="pane-title")
        with Horizontal(id="referral-filters"):
            yield Label("Status")
            yield Select(STATUS_OPTIONS, value=ALL, allow_blank=False, compact=True, id="referral-status")
            yield Label("From", classes="gap")
            yield Input(placeholder="MM/DD/YYYY", max_length=10, compact=True, id="referral-from")
            yield Label("To", classes="gap")
            yield Input(placeholder="MM/DD/YYYY", max_length=10, compact=True, id="referral-to")
        yield Static("Loading referrals…", id="referral-message", markup=False)
        table = DataTable(id="referrals-table", cursor_type="row")
        # Inline, because app-wide `DataTable { … }` rules outrank DEFAULT_CSS and would misalign the table.
        table.styles.height = "1fr"
        table.styles.margin = 0
        yield table

    def on_mount(self) -> None:
        try:
            self.overdue_days = overdue_days_setting(getattr(self.app, "config", None))
        except OverdueSettingError as exc:
            self.app.notify(f"{exc}; using {DEFAULT_OVERDUE_DAYS}.", title="Configuration", severity="warning",
                            markup=False)
        blink = getattr(self.app, "cursor_blink", False)
        for box in self.query(Input):
            box.cursor_blink = blink
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._fill())
        self.reload()
        if getattr(self.app, "outbox", None) is not None:  # a worker moves statuses on: follow it
            self._stamp = change_stamp()
            self.set_interval(LIVE_SECONDS, self._follow_changes)

    def _follow_changes(self) -> None:
        stamp = change_stamp()  # one indexed MAX(): cheap enough for the UI thread
        if stamp != self._stamp:
            self._stamp = stamp
            self.reload()

    def focus_first(self) -> None:
        """The table when it has rows (Enter opens one at once), else the status filter."""
        table = self.query_one("#referrals-table", DataTable)
        if table.row_count:
            table.focus()
        else:
            super().focus_first()

    # --- loading --------------------------------------------------------------------------------------------

    def reload(self) -> None:
        self._load(self.filters)

    @work(thread=True, exclusive=True, group="referrals-load", exit_on_error=False)
    def _load(self, filters: Filters) -> None:
        from models.db import database

        worker = get_current_worker()
        try:
            with database.connection_context():
                if filters.status == OVERDUE:
                    rows = overdue_referrals(self.overdue_days, local_today(), since=filters.since,
                                             until=filters.until, patient_id=self.patient_id)
                else:
                    rows = list_referrals(status=filters.status, since=filters.since, until=filters.until,
                                          patient_id=self.patient_id)
        except HistoryError as exc:
            if not worker.is_cancelled:
                self.app.call_from_thread(self._say, str(exc)[:1].upper() + str(exc)[1:] + ".", True)
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show, filters, rows)

    @on(Worker.StateChanged)
    def _load_failed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "referrals-load" and event.state == WorkerState.ERROR:
            self._say(f"Could not load referrals ({type(event.worker.error).__name__}); change a filter to try "
                      "again.", True)

    def _show(self, filters: Filters, rows: list[ReferralRow]) -> None:
        """Show `rows` unless the filters changed while they loaded: an old answer never hides a newer one."""
        if filters != self.filters:
            return
        self.rows = rows
        self.loaded = True
        self._fill()
        if not rows and filters.status == OVERDUE:
            self._say(f"No referral has waited more than {self.overdue_days} days for its report"
                      + (" in these dates." if filters.since or filters.until else "."))
        elif not rows:
            self._say("No referrals match these filters." if filters != Filters() else "No referrals yet.")
        else:
            more = " (the newest: narrow the dates to see older)" if len(rows) >= 500 else ""
            self._say(f"{len(rows)} referral{'s' if len(rows) != 1 else ''}{more} — Enter opens one")

    def _say(self, text: str, error: bool = False) -> None:
        message = self.query_one("#referral-message", Static)
        message.update(text)
        message.set_class(error, "-error")

    # --- the table --------------------------------------------------------------------------------------------

    def _columns(self, width: int) -> list[tuple[str, str, int]]:
        """(key, label, width) per column for a table `width` cells wide: fixed columns first, then the
        flexible ones share the rest, the status getting the largest share."""
        wide = width >= 100
        fixed = [("sent", "Sent", 10), ("direction", "Direction" if wide else "Dir", 12 if wide else 3),
                 ("channel", "Channel" if wide else "Via", 7 if wide else 6)]
        flexible = [("patient", "Patient", 3), ("recipient", "Recipient", 3), ("status", "Status", 4)]
        if self.patient_id is not None:
            flexible = flexible[1:]
        count = len(fixed) + len(flexible)
        room = max(width - 2 * count - 2 - sum(w for _, _, w in fixed), 8 * len(flexible))
        shares = sum(s for _, _, s in flexible)
        sizes = {key: room * share // shares for key, _, share in flexible}
        if not wide:
            # Narrow: the status needs "Report 07/05/2026" (17) and no more; names get the rest.
            sizes["status"] = min(17, room - 10 * (len(sizes) - 1))
            names = [key for key in sizes if key != "status"]
            for key in names:
                sizes[key] = (room - sizes["status"]) // len(names)
        sizes["status"] += room - sum(sizes.values())
        widths = {key: w for key, _, w in fixed} | sizes
        order = ["sent", "patient", "direction", "recipient", "channel", "status"]
        labels = {key: label for key, label, _ in fixed + flexible}
        return [(key, labels[key], widths[key]) for key in order if key in widths]

    def _fill(self) -> None:
        table = self.query_one("#referrals-table", DataTable)
        selected = None
        if table.row_count:
            selected = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        columns = self._columns(table.size.width or self.size.width or 80)
        self._loaded_width = table.size.width
        table.clear(columns=True)
        for key, label, width in columns:
            table.add_column(label, width=width, key=key)
        widths = {key: width for key, _, width in columns}
        colours = self.app.theme_variables
        today = local_today()
        for row in self.rows:
            cells = {
                "sent": f"{clock.local(row.created_at):%m/%d/%Y}",
                # Text, not str: DataTable reads str cells as markup ("[/]" in a name would crash it)
                "patient": Text(fit_person(one_line(row.patient_name), widths.get("patient", 0), last_first=True),
                                no_wrap=True, end=""),
                "direction": (row.direction if widths["direction"] > 3
                              else {"transferring": "out", "receiving": "in"}.get(row.direction, row.direction)),
                "recipient": Text(fit_person(one_line(row.recipient_name), widths["recipient"], last_first=False)
                                  if row.recipient_name else fit(one_line(row.recipient), widths["recipient"]),
                                  no_wrap=True, end=""),
                "channel": row.channel,
                "status": self._status_cell(row, widths["status"], colours,
                                            days_overdue(row, self.overdue_days, today)),
            }
            table.add_row(*(cells[key] for key, _, _ in columns), key=str(row.id))
        if selected is not None and str(selected) in {str(r.id) for r in self.rows}:
            table.move_cursor(row=table.get_row_index(str(selected)))

    @staticmethod
    def _status_cell(row: ReferralRow, width: int, colours: dict[str, str], overdue: int | None = None) -> Text:
        words = fit(status_words(row, width, overdue), width)
        text = Text(words, no_wrap=True)
        colour = colours.get(OVERDUE_COLOUR if overdue is not None else STATUS_COLOURS.get(row.status, ""), "")
        try:
            style = Style.parse(colour) if colour else Style(dim=True)
        except StyleSyntaxError:  # "$text-muted" is "auto 60%", not a colour Rich can paint
            style = Style(dim=True)
        if overdue is not None:
            text.stylize(style + Style(bold=True), 0, min(len("Overdue"), len(words)))
            text.stylize(style, min(len("Overdue"), len(words)))
        elif row.status == "failed":
            text.stylize(style + Style(bold=True), 0, min(len("Failed"), len(words)))
        else:
            text.stylize(style)
        return text

    def on_resize(self) -> None:
        table = self.query_one("#referrals-table", DataTable)
        if self.rows and table.size.width != self._loaded_width:
            self._fill()

    # --- filters ----------------------------------------------------------------------------------------------

    @on(Select.Changed, "#referral-status")
    def _status_changed(self, event: Select.Changed) -> None:
        chosen = None if event.value in (ALL, Select.NULL) else str(event.value)
        self._apply(status=chosen)
        if event.select.has_focus_within:
            # The user picked a status: the list is what they want to look at next (Shift+Tab returns).
            self.call_after_refresh(self.action_focus_list)

    @on(Input.Changed, "#referral-from, #referral-to")
    def _date_typed(self, event: Input.Changed) -> None:
        self._date_entered(event.input, final=False)

    @on(Input.Submitted, "#referral-from, #referral-to")
    def _date_submitted(self, event: Input.Submitted) -> None:
        if self._date_entered(event.input, final=True):
            self.action_focus_list()

    @on(Input.Blurred, "#referral-from, #referral-to")
    def _date_left(self, event: Input.Blurred) -> None:
        self._date_entered(event.input, final=True)

    def _date_entered(self, box: Input, *, final: bool) -> bool:
        """Apply a date once it is complete. While it is being typed, only say the format; an impossible date
        (or a half-typed one the user leaves) gets a message naming the field, and the filter is not applied."""
        which = "From" if box.id == "referral-from" else "To"
        field = "since" if box.id == "referral-from" else "until"
        text = box.value.strip()
        if not text:
            self._apply(**{field: None})
            return True
        try:
            day = parse_mdy(text)
        except HistoryError as exc:
            complete = len(text) >= 10 or text.count("/") == 2 and len(text.rsplit("/", 1)[1]) >= 4
            if final or complete:
                self._say(f"{which}: {exc}.", True)
            else:
                self._say(f"{which}: type the date as MM/DD/YYYY")
            return False
        self._apply(**{field: day})
        return True

    def _apply(self, **changes) -> None:
        current = self.filters
        filters = replace(current, **changes)
        if filters == current:
            if self.loaded:
                self._show(current, self.rows)  # replaces a message about a date since corrected
            return
        self.filters = filters
        self._say("Loading referrals…")
        self.reload()

    def action_focus_filter(self) -> None:
        self.query_one("#referral-status", Select).focus()

    def action_focus_list(self) -> None:
        self.query_one("#referrals-table", DataTable).focus()

    @on(DataTable.RowSelected, "#referrals-table")
    def _open(self, event: DataTable.RowSelected) -> None:
        from tui.screens.referral_detail import ReferralDetailScreen

        self.app.push_screen(ReferralDetailScreen(int(event.row_key.value)), callback=lambda _: self.reload())
