"""Quality: CMS50, Closing the Referral Loop — a year's figures and the referrals behind the gap.

The screen only presents: `models.cms50.cms50_report` computes the measure (in a thread worker, so a large
practice never freezes the keyboard) and the rows open in the referral's own detail screen, where staff mark a
report received; coming back recomputes the figures.
"""

from __future__ import annotations

from rich.errors import StyleSyntaxError
from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Label, Select, Static
from textual.worker import Worker, WorkerState, get_current_worker

from models.cms50 import (
    GAP_NO_REPORT,
    REFERRAL_CUTOFF,
    TITLE,
    Cms50Error,
    Cms50Gap,
    Cms50Report,
    cms50_report,
    report_years,
)
from models.overdue import DEFAULT_OVERDUE_DAYS, OverdueSettingError, overdue_days_setting
from models.referral_history import local_today
from tui.screens.base import ReferdeskScreen
from tui.widgets.referrals_pane import STATUS_COLOURS, STATUS_LABELS, fit, fit_person


def _style(colours: dict[str, str], variable: str, *, bold: bool = False) -> Style:
    colour = colours.get(variable, "")
    try:
        style = Style.parse(colour) if colour else Style(dim=True)
    except StyleSyntaxError:  # "$text-muted" is "auto 60%", not a colour Rich can paint
        style = Style(dim=True)
    return style + Style(bold=True) if bold else style


def gap_words(gap: Cms50Gap, width: int) -> str:
    """Where the referral stands, as the gap list shows it: its status, or the report that came too late or
    is dated before the referral."""
    if gap.gap == GAP_NO_REPORT or gap.report_received_on is None:
        return STATUS_LABELS.get(gap.status, gap.status)
    when = f"{gap.report_received_on:%m/%d/%Y}"
    late = gap.report_received_on > gap.referred_on
    word = "late" if late else "early"
    for candidate in (f"Report {when}, {'after the year' if late else 'before the referral'}",
                      f"Report {when} {word}", f"{word.capitalize()} {when}"):
        if len(candidate) <= width:
            return candidate
    return f"{word.capitalize()} report"


class Cms50Screen(ReferdeskScreen):
    """Quality (CMS50): patients referred this year and whether each referral's report came back."""

    AUDIT_VIEW = "report.cms50"

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="cms50.back"),
        Binding("y", "focus_year", "Year", id="cms50.year"),
        Binding("left_square_bracket", "shift_year(-1)", "Previous year", show=False, id="cms50.previous_year"),
        Binding("right_square_bracket", "shift_year(1)", "Next year", show=False, id="cms50.next_year"),
        Binding("l", "focus_list", "List", show=False, id="cms50.list"),
    ]
    # CSS, not DEFAULT_CSS: app-wide `DataTable { … }` rules would outrank default CSS.
    CSS = """
    Cms50Screen #cms50-body { height: 1fr; padding: 0 1; }
    Cms50Screen #cms50-bar { height: 1; }
    Cms50Screen #cms50-bar Label { padding: 0 1 0 0; }
    Cms50Screen #cms50-year { width: 10; }
    Cms50Screen #cms50-figures { width: 1fr; margin-left: 2; }
    Cms50Screen #cms50-rule { height: auto; color: $text-muted; }
    Cms50Screen #cms50-message { height: 1; margin-top: 1; }
    Cms50Screen #cms50-message.-error { color: $error; }
    Cms50Screen #cms50-gaps { height: 1fr; margin: 0; }
    """

    def __init__(self, year: int | None = None) -> None:
        super().__init__()
        self.year = year or local_today().year
        self.report: Cms50Report | None = None
        self.overdue_days = DEFAULT_OVERDUE_DAYS
        self._years: list[int] = [self.year]
        self._filled_width = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Quality — CMS50 {TITLE}", id="cms50-title", classes="screen-title", markup=False)
        with Vertical(id="cms50-body"):
            with Horizontal(id="cms50-bar"):
                yield Label("Year")
                yield Select([(str(self.year), self.year)], value=self.year, allow_blank=False, compact=True,
                             id="cms50-year")
                yield Static("Computing…", id="cms50-figures", markup=False)
            yield Static(self._rule_text(self.year), id="cms50-rule", markup=False)
            yield Static("", id="cms50-message", markup=False)
            yield DataTable(id="cms50-gaps", cursor_type="row")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        super().on_mount()
        try:
            self.overdue_days = overdue_days_setting(getattr(self.app, "config", None))
        except OverdueSettingError:
            pass  # the Referrals list has said so already; the default serves here
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._fill())
        self.query_one("#cms50-gaps", DataTable).focus()
        self._load(self.year, True)

    @staticmethod
    def _rule_text(year: int) -> str:
        month, day = REFERRAL_CUTOFF
        return (f"Patients with an office or preventive visit in {year} and a referral made 01/01–"
                f"{month:02d}/{day:02d}/{year} (the first one counts); met when its report came back after "
                f"the referral and by 12/31/{year}.")

    # --- loading ----------------------------------------------------------------------------------------------

    def reload(self) -> None:
        self._load(self.year, False)

    @work(thread=True, exclusive=True, group="cms50-load", exit_on_error=False)
    def _load(self, year: int, with_years: bool) -> None:
        from models.db import database

        worker = get_current_worker()
        try:
            with database.connection_context():
                years = report_years() if with_years else None
                report = cms50_report(year)
        except Cms50Error as exc:
            if not worker.is_cancelled:
                self.app.call_from_thread(self._say, str(exc)[:1].upper() + str(exc)[1:] + ".", True)
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show, report, years)

    @on(Worker.StateChanged)
    def _load_failed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "cms50-load" and event.state == WorkerState.ERROR:
            self._say(f"Could not compute the measure ({type(event.worker.error).__name__}); choose the year "
                      "again to retry.", True)

    def _show(self, report: Cms50Report, years: list[int] | None) -> None:
        if years is not None and years != self._years:
            self._years = sorted(set(years) | {self.year}, reverse=True)
            select = self.query_one("#cms50-year", Select)
            with self.prevent(Select.Changed):
                select.set_options([(str(y), y) for y in self._years])
                select.value = self.year
        if report.year != self.year:  # an answer for a year the user has since left
            return
        self.report = report
        self.query_one("#cms50-figures", Static).update(
            f"Denominator {report.denominator:,} · Numerator {report.numerator:,} · "
            f"Performance rate {report.rate_text}")
        self._fill()
        if report.denominator == 0:
            self._say(f"Nobody qualifies for {report.year}: no patient had both a visit and a referral.")
        elif not report.gaps:
            self._say("No gap: every qualifying referral's report came back in time.")
        else:
            count = len(report.gaps)
            self._say(f"{count} referral{'s' if count != 1 else ''} behind the gap, oldest first — Enter opens one")

    def _say(self, text: str, error: bool = False) -> None:
        message = self.query_one("#cms50-message", Static)
        message.update(text)
        message.set_class(error, "-error")

    # --- the table --------------------------------------------------------------------------------------------

    @staticmethod
    def _columns(width: int) -> list[tuple[str, str, int]]:
        wide = width >= 100
        fixed = [("made", "Made", 10), ("mrn", "MRN", 8 if wide else 7),
                 ("days", "Days open" if wide else "Days", 9 if wide else 4)]
        flexible = [("patient", "Patient", 3), ("recipient", "Recipient", 3), ("status", "Status", 3)]
        count = len(fixed) + len(flexible)
        room = max(width - 2 * count - 2 - sum(w for _, _, w in fixed), 8 * len(flexible))
        shares = sum(s for _, _, s in flexible)
        sizes = {key: room * share // shares for key, _, share in flexible}
        sizes["status"] += room - sum(sizes.values())
        if sizes["status"] < 16 and room >= 40:  # room for "Early 05/01/2026": names give a cell each
            sizes["patient"] -= (16 - sizes["status"]) // 2
            sizes["recipient"] -= 16 - sizes["status"] - (16 - sizes["status"]) // 2
            sizes["status"] = 16
        widths = {key: w for key, _, w in fixed} | sizes
        labels = {key: label for key, label, _ in fixed + flexible}
        order = ["made", "patient", "mrn", "recipient", "status", "days"]
        return [(key, labels[key], widths[key]) for key in order]

    def _fill(self) -> None:
        if self.report is None:
            return
        table = self.query_one("#cms50-gaps", DataTable)
        selected = None
        if table.row_count:
            selected = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        columns = self._columns(table.size.width or self.size.width or 80)
        self._filled_width = table.size.width
        table.clear(columns=True)
        for key, label, width in columns:
            table.add_column(label, width=width, key=key)
        widths = {key: width for key, _, width in columns}
        colours = self.app.theme_variables
        for gap in self.report.gaps:
            status = Text(fit(gap_words(gap, widths["status"]), widths["status"]), no_wrap=True)
            status.stylize(_style(colours, STATUS_COLOURS.get(gap.status, "") if gap.gap == GAP_NO_REPORT
                                  else "warning"))
            overdue = gap.gap == GAP_NO_REPORT and gap.status in ("sent", "delivered") \
                and gap.days_open > self.overdue_days
            days = Text(str(gap.days_open), justify="right",
                        style=_style(colours, "error", bold=True) if overdue else "")
            cells = {
                "made": f"{gap.referred_on:%m/%d/%Y}",
                "patient": fit_person(gap.patient_name, widths["patient"], last_first=True),
                "mrn": fit(gap.mrn, widths["mrn"]),
                "recipient": (fit_person(gap.recipient_name, widths["recipient"], last_first=False)
                              if gap.recipient_name else fit(gap.recipient, widths["recipient"])),
                "status": status,
                "days": days,
            }
            table.add_row(*(cells[key] for key, _, _ in columns), key=str(gap.referral_id))
        if selected is not None and str(selected) in {str(g.referral_id) for g in self.report.gaps}:
            table.move_cursor(row=table.get_row_index(str(selected)))

    def on_resize(self) -> None:
        table = self.query_one("#cms50-gaps", DataTable)
        if self.report is not None and table.size.width != self._filled_width:
            self._fill()

    # --- the year ---------------------------------------------------------------------------------------------

    @on(Select.Changed, "#cms50-year")
    def _year_chosen(self, event: Select.Changed) -> None:
        if event.value is Select.NULL:
            return
        self._choose(int(event.value))
        if event.select.has_focus_within:
            self.call_after_refresh(self.action_focus_list)

    def _choose(self, year: int) -> None:
        if year == self.year:
            return
        self.year = year
        self.report = None
        self.query_one("#cms50-rule", Static).update(self._rule_text(year))
        self.query_one("#cms50-figures", Static).update("Computing…")
        self.query_one("#cms50-gaps", DataTable).clear()
        self._say("")
        self._load(year, False)

    def action_shift_year(self, step: int) -> None:
        year = self.year + step
        if year not in self._years:
            self.notify(f"No report for {year}: choose from {self._years[-1]} to {self._years[0]}.",
                        severity="warning", markup=False)
            return
        self.query_one("#cms50-year", Select).value = year  # posts Select.Changed, which loads it

    def action_focus_year(self) -> None:
        self.query_one("#cms50-year", Select).focus()

    def action_focus_list(self) -> None:
        self.query_one("#cms50-gaps", DataTable).focus()

    @on(DataTable.RowSelected, "#cms50-gaps")
    def _open(self, event: DataTable.RowSelected) -> None:
        from tui.screens.referral_detail import ReferralDetailScreen

        self.app.push_screen(ReferralDetailScreen(int(event.row_key.value)), callback=lambda _: self.reload())
