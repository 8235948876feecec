"""Attach a received message from the to-be-filed list to a patient, by keyboard: find the patient as in patient
search (2–3 letters of a name, "last, first", an MRN or a date of birth), compare with the patient its C-CDA
names, Enter picks, then a yes/no question before anything is filed. Esc at any point changes nothing.

The filing itself is models.inbox.attach_to_patient, run in a thread worker; its refusal (InboxError) is shown
in the dialog and as a notification, and nothing is changed. Dismisses with the MRN filed to, or None.
"""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static
from textual.worker import Worker, WorkerState

from models.inbox import InboxDetail, InboxError, InboxRow, attach_to_patient, inbox_detail
from models.search import DEFAULT_LIMIT, PatientHit, search_patients
from models.text import normalize
from tui.screens.inbox import one_line, sentence
from tui.screens.patient_search import HINT, MIN_LETTERS, SEARCH_THREAD, TAIL, result_line
from tui.screens.referral_detail import when
from tui.widgets.result_list import ResultList


def documents_words(count: int) -> str:
    return f"{count} document{'s' if count != 1 else ''}"


class AttachPatientDialog(ModalScreen[str | None]):
    """Attach a received message to a patient."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="inbox.attach_cancel"),
        Binding("down", "focus_results", "Results", show=False, id="inbox.attach_results"),
    ]
    DEFAULT_CSS = """
    AttachPatientDialog { align: center middle; }
    AttachPatientDialog > Vertical { width: 80; max-width: 100%; height: 90%; max-height: 26;
                                     border: round $primary; background: $surface; padding: 0 1; }
    AttachPatientDialog #attach-title { text-style: bold; }
    AttachPatientDialog #attach-about { color: $text-muted; }
    AttachPatientDialog #attach-ccda { margin-top: 1; }
    AttachPatientDialog #attach-search-row { height: 1; margin-top: 1; }
    AttachPatientDialog #attach-label { width: 14; text-style: bold; }
    AttachPatientDialog #attach-query { width: 1fr; }
    AttachPatientDialog #attach-status { height: auto; margin-top: 1; color: $text-muted; }
    AttachPatientDialog #attach-status.-error { color: $error; }
    AttachPatientDialog #attach-columns { height: 1; text-style: bold; }
    AttachPatientDialog #attach-results { height: 1fr; min-height: 3; }
    AttachPatientDialog #attach-keys { height: 1; color: $text-muted; }
    """

    def __init__(self, row: InboxRow) -> None:
        super().__init__()
        self.row = row
        self.detail: InboxDetail | None = None
        self.hits: list[PatientHit] = []
        self.busy = False

    def compose(self) -> ComposeResult:
        row = self.row
        with Vertical():
            yield Static(f"Attach message {row.id} to a patient", id="attach-title")
            yield Static(Text(f"From {one_line(row.from_address) or '—'}, received {when(row.received_at)}\n"
                              f"Subject: {one_line(row.subject) or '—'} · {documents_words(row.document_count)}"),
                         id="attach-about")
            yield Static("Reading what the message says about its patient…", id="attach-ccda")
            with Horizontal(id="attach-search-row"):
                yield Label("Find patient:", id="attach-label")
                yield Input(placeholder="name, 'last, first', MRN or date of birth", id="attach-query",
                            compact=True)
            yield Static(HINT, id="attach-status", markup=False)
            yield Static("", id="attach-columns", markup=False)
            yield ResultList(id="attach-results")
            yield Static("Enter picks; you confirm before anything is filed · Esc cancels", id="attach-keys",
                         markup=False)

    def on_mount(self) -> None:
        query = self.query_one("#attach-query", Input)
        query.cursor_blink = getattr(self.app, "cursor_blink", False)
        query.focus()
        self._load()

    # --- what the message says ------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="attach-detail", exit_on_error=False)
    def _load(self) -> None:
        from models.db import database

        try:
            with database.connection_context():
                detail = inbox_detail(self.row.id)
        except InboxError as exc:
            self.app.call_from_thread(self._say, sentence(str(exc)), True)
            return
        self.app.call_from_thread(self._show_detail, detail)

    def _show_detail(self, detail: InboxDetail) -> None:
        self.detail = detail
        line = Text()
        if detail.ccda_patient:
            name, _, rest = detail.ccda_patient.partition(" · ")
            line.append("Its C-CDA names: ")
            line.append(name, style="bold")
            line.append(f" · {rest}" if rest else "")
        else:
            line.append("It has no C-CDA naming a patient: compare with its documents (Esc, then Enter on one).")
        if detail.row.error:
            line.append(f"\nNot filed because {detail.row.error}.", style="dim")
        self.query_one("#attach-ccda", Static).update(line)
        query = self.query_one("#attach-query", Input)
        last_name = detail.ccda_patient.split(",", 1)[0].strip() if detail.ccda_patient else ""
        if last_name and not query.value:  # start from the name it gives; typing replaces it
            query.value = last_name
            query.select_all()

    # --- searching, as on the patient search screen -----------------------------------------------------------

    @property
    def name_width(self) -> int:
        width = self.query_one("#attach-results", ResultList).size.width or 74
        return max(width - sum(w for _, w in TAIL), 16)

    @on(Input.Changed, "#attach-query")
    def _typed(self, event: Input.Changed) -> None:
        if len(normalize(event.value)) < MIN_LETTERS:
            self._show_results(event.value, [])
            return
        self._search(event.value)

    @on(Input.Submitted, "#attach-query")
    def _submitted(self) -> None:
        self.action_focus_results()

    @work(exclusive=True, group="attach-search", exit_on_error=False)
    async def _search(self, text: str) -> None:
        hits = await asyncio.get_running_loop().run_in_executor(SEARCH_THREAD, search_patients, text)
        self._show_results(text, hits)

    def _show_results(self, text: str, hits: list[PatientHit]) -> None:
        """Show `hits` unless the user has typed on since: a slow answer never overwrites a newer one."""
        if text != self.query_one("#attach-query", Input).value:
            return
        self.hits = hits
        width = self.name_width
        columns = f"{'Name':<{width}}" + "".join(f"{label:<{w}}" for label, w in TAIL) if hits else ""
        self.query_one("#attach-columns", Static).update(columns)
        self.query_one("#attach-results", ResultList).set_results([result_line(hit, width) for hit in hits],
                                                                  [hit.mrn for hit in hits])
        if len(normalize(text)) < MIN_LETTERS:
            self._say(HINT)
        elif not hits:
            self._say(f"No patient matches “{text}”.", True)
        else:
            more = f" (first {DEFAULT_LIMIT}: type more to narrow)" if len(hits) >= DEFAULT_LIMIT else ""
            self._say(f"{len(hits)} patient{'s' if len(hits) != 1 else ''}{more} — ↓ to choose, Enter to pick")

    def _say(self, text: str, error: bool = False) -> None:
        status = self.query_one("#attach-status", Static)
        status.update(text)
        status.set_class(error, "-error")

    def action_focus_results(self) -> None:
        if self.hits:
            self.query_one("#attach-results", ResultList).focus()

    # --- picking, asking, filing ------------------------------------------------------------------------------

    @on(ResultList.Selected, "#attach-results")
    def _picked(self, event: ResultList.Selected) -> None:
        if self.busy:
            return
        hit = next((h for h in self.hits if h.mrn == event.key), None)
        if hit is None:
            return
        from tui.dialogs.confirm import ConfirmDialog

        self.app.push_screen(ConfirmDialog(self.question(hit), yes="File it", no="Back"),
                             callback=lambda yes: self._file(hit) if yes else None)

    def question(self, hit: PatientHit) -> str:
        """What filing will do, in words, before it is done."""
        row = self.row
        lines = [f"File {documents_words(row.document_count)} from {row.from_address or 'an unknown sender'} to "
                 f"{hit.last_name}, {hit.first_name} (MRN {hit.mrn}, born {hit.birth_date:%m/%d/%Y})?"]
        if row.kind == "report":
            lines.append("If the patient has an open referral to this sender, it is closed as report received.")
        if self.detail is not None and any(m.startswith("dispatched: held") for m in self.detail.mdns):
            lines.append("The sender is told the message reached the chart.")
        return "\n".join(lines)

    def _file(self, hit: PatientHit) -> None:
        self.busy = True
        self._say(f"Filing to {hit.last_name}, {hit.first_name}…")
        self._file_in_worker(hit)

    @work(thread=True, exclusive=True, group="attach-file", exit_on_error=False)
    def _file_in_worker(self, hit: PatientHit) -> None:
        from models.db import database

        try:
            with database.connection_context():
                filed = attach_to_patient(self.row.id, hit.mrn, username=getattr(self.app, "username", "") or "")
        except InboxError as exc:
            self.app.call_from_thread(self._refused, sentence(str(exc)))
            return
        done = (f"Message {filed.id} filed to {hit.last_name}, {hit.first_name} (MRN {hit.mrn}): "
                f"{documents_words(filed.document_count)} in the chart")
        if filed.referral_id is not None:
            done += f"; referral #{filed.referral_id} closed as report received"
        self.app.call_from_thread(self._filed, done + ".", hit.mrn)

    def _filed(self, done: str, mrn: str) -> None:
        self.busy = False
        self.notify(done, title="Filed", markup=False)
        self.dismiss(mrn)

    def _refused(self, reason: str) -> None:
        self.busy = False
        self._say(f"Nothing was changed: {reason}", True)
        self.notify(reason, title="Nothing changed", severity="error", markup=False)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        if event.worker.group == "attach-file":
            self._refused(f"the database did not answer ({type(event.worker.error).__name__}); try again")
        elif event.worker.group in ("attach-detail", "attach-search"):
            self._say(f"The database did not answer ({type(event.worker.error).__name__}); type again to retry.",
                      True)

    def action_cancel(self) -> None:
        if self.busy:
            self.notify("Filing is under way; it finishes in a moment.", severity="warning")
            return
        self.dismiss(None)
