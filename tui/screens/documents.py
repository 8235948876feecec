"""The practice's documents (F4): its own files, and with `a` every patient's documents as well."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header

from tui.screens.base import ReferdeskScreen
from tui.widgets.documents_pane import DocumentsPane

_HEADINGS = {"practice": "Practice documents", None: "All documents, the practice's and every patient's"}


class PracticeDocumentsScreen(ReferdeskScreen):
    """The practice's documents; a shows every patient's documents too."""

    AUDIT_VIEW = "document.list"

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="documents.back"),
        Binding("a", "show_all", "All patients", id="documents.all"),
        Binding("a", "show_practice", "Practice only", id="documents.practice"),
    ]
    DEFAULT_CSS = """
    PracticeDocumentsScreen #documents { height: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.owner: str | None = "practice"

    def compose(self) -> ComposeResult:
        yield Header()
        yield DocumentsPane(owner=self.owner, heading=_HEADINGS[self.owner], id="documents")
        yield Footer(compact=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "show_all":
            return self.owner == "practice"
        if action == "show_practice":
            return self.owner is None
        return True

    def action_show_all(self) -> None:
        self._show(None)

    def action_show_practice(self) -> None:
        self._show("practice")

    def _show(self, owner: str | None) -> None:
        self.owner = owner
        self.query_one(DocumentsPane).reload(owner=owner, heading=_HEADINGS[owner])
        self.refresh_bindings()
