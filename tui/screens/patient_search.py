"""Patient search, the start screen: type 2–3 letters, pick a patient with the arrow keys and Enter.

Built for thin SSH links: the box is one line, and results are one pre-formatted line each in a ResultList,
so a keystroke repaints a few lines with one colour change per line (about 2 KB at 80×24), not a grid of cells.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Input, Label, Static

from models.safe_text import one_line
from models.search import DEFAULT_LIMIT, PatientHit, search_patients
from models.text import normalize
from tui.screens.base import ReferdeskScreen
from tui.widgets.result_list import ResultList

MIN_LETTERS = 2
SEARCH_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patient-search")
HINT = "Type at least 2 letters of a name, an MRN or a date of birth."
# Fixed columns after the name: born, sex, MRN (widths include the gap before them).
TAIL = (("Born", 12), ("Sex", 5), ("MRN", 10))


def result_line(hit: PatientHit, name_width: int) -> str:
    """One result, padded to the full line: a line of one style is one colour change on the wire."""
    name = one_line(f"{hit.last_name}, {hit.first_name}")  # drawn as raw segments: controls made visible
    name = name if len(name) <= name_width else name[: name_width - 1] + "…"
    line = f"{name:<{name_width}}{hit.birth_date:%m/%d/%Y}  {one_line(hit.sex):<5}{one_line(hit.mrn)}"
    return line.ljust(name_width + sum(width for _, width in TAIL))


class PatientSearchScreen(ReferdeskScreen):
    """Find a patient: 2–3 letters of a name, 'last, first', an MRN or a date of birth."""

    CSS_PATH = "patient_search.tcss"
    BINDINGS = [
        Binding("down", "focus_results", "Results", show=False, id="search.results"),
        Binding("escape", "clear", "Clear", id="search.clear"),
        Binding("f3", "app.referrals", "Referrals", id="search.referrals"),
        Binding("f4", "app.practice_documents", "Documents", id="search.documents"),
        Binding("ctrl+q", "app.quit", "Quit", id="search.quit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[PatientHit] = []
        self.shown_for = ""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="search-row"):
            yield Label("Find patient:", id="search-label")
            yield Input(placeholder="name, 'last, first', MRN or date of birth", id="query", compact=True)
        yield Static(HINT, id="status")
        yield Static("", id="columns")
        yield ResultList(id="results")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#query", Input).focus()

    def on_resize(self, event: events.Resize) -> None:
        self._render_results()

    @property
    def name_width(self) -> int:
        return max(self.size.width - 2 - sum(width for _, width in TAIL), 16)

    @on(Input.Changed, "#query")
    def query_changed(self, event: Input.Changed) -> None:
        if len(normalize(event.value)) < MIN_LETTERS:
            self.show_results(event.value, [])
            return
        self.search(event.value)

    @on(Input.Submitted, "#query")
    def query_submitted(self) -> None:
        self.action_focus_results()

    @work(exclusive=True, group="patient-search", exit_on_error=False)
    async def search(self, text: str) -> None:
        """Query on the one search thread, which keeps its database connection: no thread or connection is
        started per keystroke."""
        hits = await asyncio.get_running_loop().run_in_executor(SEARCH_THREAD, search_patients, text)
        self.show_results(text, hits)

    def show_results(self, text: str, hits: list[PatientHit]) -> None:
        """Show `hits` unless the user has typed on since: a slow answer never overwrites a newer one."""
        if text != self.query_one("#query", Input).value:
            return
        changed = [h.id for h in hits] != [h.id for h in self.hits]
        self.hits, self.shown_for = hits, text
        if changed:
            self._render_results()
        self._set_status(text, hits)

    def _render_results(self) -> None:
        columns = self.query_one("#columns", Static)
        width = self.name_width
        header = f"{'Name':<{width}}" + "".join(f"{label:<{w}}" for label, w in TAIL) if self.hits else ""
        if str(columns.content) != header:
            columns.update(header)
        self.query_one("#results", ResultList).set_results(
            [result_line(hit, width) for hit in self.hits], [hit.mrn for hit in self.hits]
        )

    def _set_status(self, text: str, hits: list[PatientHit]) -> None:
        status = self.query_one("#status", Static)
        if len(normalize(text)) < MIN_LETTERS:
            message, error = HINT, False
        elif not hits:
            message, error = f"No patient matches “{text}”.", True
        else:
            more = f" (first {DEFAULT_LIMIT}: type more to narrow)" if len(hits) >= DEFAULT_LIMIT else ""
            message, error = f"{len(hits)} patients{more} — ↓ to choose, Enter to open", False
        if str(status.content) != message:
            status.update(message)
        status.set_class(error, "-error")

    def action_focus_results(self) -> None:
        if self.hits:
            self.query_one("#results", ResultList).focus()

    def action_clear(self) -> None:
        query = self.query_one("#query", Input)
        query.value = ""
        query.focus()

    @on(ResultList.Selected, "#results")
    def open_patient(self, event: ResultList.Selected) -> None:
        self.app.open_patient(event.key)
