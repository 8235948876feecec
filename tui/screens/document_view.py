"""One document, read in the terminal: a C-CDA by sections, plain text as text, anything else as its details.

The document is loaded and read in a thread (a large C-CDA must not freeze the screen); a document that cannot
be read says why, in words, and offers its raw text. Saving a copy is the only thing that writes.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static, TextArea

from documents.viewing import DocumentDisplay, display_document, save_copy
from models.safe_text import display_text
from tui.screens.base import ReferdeskScreen
from tui.widgets.narrative import SectionHeading, document_widgets, label_grid

_CANNOT_SHOW = "{kind} cannot be displayed in a terminal. Press s to save a copy to a folder and open it there."


class DocumentViewScreen(ReferdeskScreen):
    """View a document: ] and [ move between the sections of a C-CDA."""

    CSS_PATH = "document_view.tcss"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="documents.view.back"),
        Binding("right_square_bracket,n", "next_section", "Next", key_display="]",
                id="documents.view.next_section"),
        Binding("left_square_bracket,p", "previous_section", "Prev", key_display="[",
                id="documents.view.previous_section"),
        Binding("s", "save_copy", "Save copy", id="documents.view.save_copy"),
        Binding("r", "toggle_raw", "Raw text", id="documents.view.raw"),
        Binding("f", "toggle_findings", "Findings", id="documents.view.findings"),
    ]

    findings_open = False

    def __init__(self, document_id: int) -> None:
        super().__init__()
        self.document_id = document_id
        self.display_info: DocumentDisplay | None = None
        self.section_index = -1  # -1: the header block, before the first section
        self.showing_raw = False
        self.last_folder = ""
        self.built_width = 0  # the width the C-CDA's tables were wrapped for
        self.viewed = False  # the view is audited once, when the document is first read

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Loading document…", id="doc-title", classes="screen-title")
        yield VerticalScroll(Static("Loading document…", classes="doc-note"), id="doc-body")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        super().on_mount()
        body = self.query_one("#doc-body", VerticalScroll)
        body.focus()
        self.watch(body, "scroll_y", self._scrolled, init=False)
        self.load()

    # --- loading ------------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="document-view", exit_on_error=False)
    def load(self) -> None:
        from models.db import database
        from models.documents import DocumentError, get_document

        try:
            with database.connection_context():
                document = get_document(self.document_id)
                shown = display_document(document)
                if not self.viewed:  # once per opening: a resize or the raw text is the same view
                    self._record_view(document, shown)
                    self.viewed = True
        except DocumentError as error:
            self.app.call_from_thread(self.show_failure, f"This document is not available: {error}.")
            return
        except Exception as error:  # noqa: BLE001 — a database or reader failure is said, never a blank screen
            self.app.call_from_thread(self.show_failure, f"This document could not be opened: {error}")
            return
        self.app.call_from_thread(self.show, shown)

    def _record_view(self, document, shown: DocumentDisplay) -> None:
        """`document.view` (a patient's copy carries its MRN; a practice copy, e.g. a received message's, none):
        by document id, with its kind and how it was shown — a C-CDA read, text, or only its details."""
        from models.audit import patient_mrn_for, record

        record("document.view", username=getattr(self.app, "username", ""),
               patient_mrn=patient_mrn_for(document.patient_id), object_type="document", object_id=str(document.id),
               outcome="ok" if shown.mode != "error" else "unreadable",
               detail=f"kind={document.kind}; owner={document.owner}; shown={shown.mode}")

    def show_failure(self, message: str) -> None:
        self.query_one("#doc-title", Static).update(Text("Document not available"))
        body = self.query_one("#doc-body", VerticalScroll)
        body.remove_children()
        body.mount(Static(Text(message), classes="doc-error"))

    def show(self, shown: DocumentDisplay) -> None:
        self.display_info = shown
        body = self.query_one("#doc-body", VerticalScroll)
        body.remove_children()
        body.mount_all(list(self._widgets_for(shown)))
        body.scroll_home(animate=False)
        self._show_position()
        self.refresh_bindings()
        if shown.mode == "text":
            self.query_one("#doc-text", TextArea).focus()

    def _widgets_for(self, shown: DocumentDisplay):
        if shown.mode == "ccda":
            self.built_width = self._content_width()
            if shown.findings:
                # No id: a resize rebuilds the body while the old widgets are still being removed.
                yield Static(findings_text(shown.findings, expanded=self.findings_open), classes="doc-findings")
            yield from document_widgets(shown.ccda, self.built_width)
        elif shown.mode == "text":
            area = TextArea(display_text(shown.text), read_only=True, soft_wrap=True, id="doc-text")
            area.cursor_blink = bool(getattr(self.app, "cursor_blink", False))
            yield area
        elif shown.mode == "error":
            yield Static(Text(f"This document could not be read: {shown.error}."), classes="doc-error")
            yield Static("Press r to view its raw text.", classes="doc-note")
            yield Static(label_grid(list(shown.details)), classes="doc-details")
        else:
            yield Static(label_grid(list(shown.details)), classes="doc-details")
            yield Static(_CANNOT_SHOW.format(kind=_a_kind(shown.type_label)), classes="doc-note")

    def on_resize(self) -> None:
        """Re-wrap a C-CDA's tables for the new width (an SSH window resized), staying on the same section."""
        shown = self.display_info
        if shown is None or shown.mode != "ccda" or self._content_width() == self.built_width:
            return
        section = self.section_index
        body = self.query_one("#doc-body", VerticalScroll)
        body.remove_children()
        body.mount_all(list(self._widgets_for(shown)))
        self.call_after_refresh(self._jump, section)

    def _content_width(self) -> int:
        # The body's width less its padding and the vertical scrollbar.
        return max(40, (self.query_one("#doc-body").size.width or self.app.size.width) - 3)

    # --- which keys apply ---------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        shown = self.display_info
        if action in ("next_section", "previous_section"):
            return shown is not None and shown.mode == "ccda"
        if action == "toggle_raw":
            return shown is not None and shown.mode == "error"
        if action == "toggle_findings":
            return shown is not None and bool(shown.findings)
        if action == "save_copy":
            return shown is not None
        return True

    # --- sections -----------------------------------------------------------------------------------------

    def _headings(self) -> list[SectionHeading]:
        return list(self.query(SectionHeading))

    def action_next_section(self) -> None:
        self._jump(self.section_index + 1)

    def action_previous_section(self) -> None:
        self._jump(self.section_index - 1)

    def _jump(self, index: int) -> None:
        headings = self._headings()
        if not headings:
            return
        body = self.query_one("#doc-body", VerticalScroll)
        if index < 0:
            body.scroll_home(animate=False, immediate=True)
            self.section_index = -1
        elif index < len(headings):
            body.scroll_to(y=headings[index].virtual_region.y, animate=False, immediate=True)
            self.section_index = index
        else:
            self.notify("This is the last section.", timeout=2)
        self._show_position()

    def _scrolled(self, y: float) -> None:
        """Keep the section position right when the user scrolls with the arrow or page keys."""
        headings = self._headings()
        above = [h.index for h in headings if h.virtual_region.y <= round(y)]
        index = above[-1] if above else -1
        body = self.query_one("#doc-body", VerticalScroll)
        if round(y) >= body.max_scroll_y and index < self.section_index:
            return  # at the end, later headings cannot reach the top: keep the one jumped to
        if index != self.section_index:
            self.section_index = index
            self._show_position()

    def _show_position(self) -> None:
        shown = self.display_info
        if shown is None:
            return
        title = Text(display_text(shown.title), style="bold")
        headings = self._headings()
        if shown.mode == "ccda" and headings:
            if self.section_index < 0:
                title.append(f"  ·  {len(headings)} sections", style="not bold")
            else:
                heading = headings[self.section_index]
                title.append(f"  ·  {self.section_index + 1}/{len(headings)} {display_text(heading.section.title)}",
                             style="not bold")
        elif shown.mode != "ccda":
            title.append(f"  ·  {shown.type_label}", style="not bold")
        self.query_one("#doc-title", Static).update(title)

    # --- raw text of a document that failed -------------------------------------------------------------

    def action_toggle_findings(self) -> None:
        shown = self.display_info
        if shown is None or not shown.findings:
            return
        self.findings_open = not self.findings_open
        for widget in self.query(".doc-findings").results(Static):
            widget.update(findings_text(shown.findings, expanded=self.findings_open))

    def action_toggle_raw(self) -> None:
        shown = self.display_info
        if shown is None or shown.mode != "error":
            return
        body = self.query_one("#doc-body", VerticalScroll)
        body.remove_children()
        self.showing_raw = not self.showing_raw
        if self.showing_raw:
            area = TextArea(display_text(shown.text), read_only=True, soft_wrap=True, id="doc-text")
            area.cursor_blink = bool(getattr(self.app, "cursor_blink", False))
            body.mount(Static(Text(f"Raw text — not read: {shown.error}. r returns to the message."),
                              classes="doc-error"))
            body.mount(area)
            area.focus()
        else:
            body.mount_all(list(self._widgets_for(shown)))
            body.focus()

    # --- saving a copy ------------------------------------------------------------------------------------

    def action_save_copy(self, error: str = "") -> None:
        from tui.dialogs.save_copy import SaveCopyDialog

        shown = self.display_info
        if shown is None:
            return
        filename = dict(shown.details).get("File", shown.title)
        self.app.push_screen(SaveCopyDialog(filename, self.last_folder or self._default_folder(), error),
                             self._folder_chosen)

    def _default_folder(self) -> str:
        config = getattr(self.app, "config", None)
        folder = str(config.section("print").get("folder", "")) if config else ""
        return folder or "~"

    def _folder_chosen(self, folder: str | None) -> None:
        if folder:
            self.last_folder = folder
            self.save(folder)

    @work(thread=True, exclusive=True, group="document-save", exit_on_error=False)
    def save(self, folder: str) -> None:
        from documents.viewing import DocumentCopyError
        from models.db import database
        from models.documents import DocumentError

        try:
            with database.connection_context():
                path = save_copy(self.document_id, folder, username=getattr(self.app, "username", ""))
        except (DocumentCopyError, DocumentError) as error:
            self.app.call_from_thread(self.action_save_copy, f"Not saved: {error}.")
            return
        self.app.call_from_thread(self.saved, path)

    def saved(self, path: Path) -> None:
        self.notify(f"Saved a copy to {path} (readable by you only).", title="Copy saved")


def findings_text(findings: tuple[str, ...], *, expanded: bool, most: int = 20) -> Text:
    """What the checks found wrong with the document, above it: a received document may break rules, and the
    reader should know before trusting what follows. One line until the user asks for the list (f)."""
    if not expanded:
        return Text(f"⚠ Checks found {len(findings)} problem(s) with this document — f lists them")
    lines = [f"⚠ Checks found {len(findings)} problem(s) with this document (f hides them):"]
    lines += [f"  • {finding}" for finding in findings[:most]]
    if len(findings) > most:
        lines.append(f"  … and {len(findings) - most} more (referdesk inspect FILE lists them all)")
    return Text("\n".join(lines))


def _a_kind(type_label: str) -> str:
    article = "An" if type_label[:1] in "AEIOU" else "A"
    return f"{article} {type_label} file"
