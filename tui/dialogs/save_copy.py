"""Ask which folder a copy of a document goes to. Escape cancels; nothing is written until the user confirms."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class SaveCopyDialog(ModalScreen[str | None]):
    """Returns the folder typed, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="documents.save.cancel")]
    DEFAULT_CSS = """
    SaveCopyDialog { align: center middle; }
    SaveCopyDialog > Vertical { width: 72; max-width: 100%; height: auto; border: round $primary;
                                background: $surface; padding: 0 1; }
    SaveCopyDialog .dialog-title { text-style: bold; }
    SaveCopyDialog #save-error { color: $error; }
    SaveCopyDialog .dialog-hint { color: $text-muted; }
    """

    def __init__(self, filename: str, folder: str = "", error: str = "") -> None:
        super().__init__()
        self.filename = filename
        self.folder = folder
        self.error = error

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(f"Save a copy of {self.filename}"), classes="dialog-title")
            yield Input(self.folder, placeholder="Folder, e.g. ~/Documents", id="save-folder")
            yield Static(Text(self.error), id="save-error")
            yield Static("Enter saves (readable by you only; never overwrites) · Esc cancels", classes="dialog-hint")

    def on_mount(self) -> None:
        folder = self.query_one("#save-folder", Input)
        folder.cursor_blink = bool(getattr(self.app, "cursor_blink", False))
        folder.focus()
        self.query_one("#save-error").display = bool(self.error)

    @on(Input.Submitted, "#save-folder")
    def submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            error = self.query_one("#save-error", Static)
            error.update("Type the folder to save the copy in.")
            error.display = True
            return
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
