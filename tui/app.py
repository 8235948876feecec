"""The referdesk Textual application: owns the screens, the theme and the configuration; no business logic."""

from __future__ import annotations

from textual.app import App
from textual.binding import Binding

from models.config import Config


class ReferdeskApp(App[None]):
    TITLE = "referdesk"
    CSS_PATH = "app.tcss"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
        Binding("f2,ctrl+f", "search_patients", "Patients", id="app.search"),
    ]

    def __init__(self, config: Config | None = None, *, demo: bool = False) -> None:
        super().__init__()
        self.config = config
        self.demo = demo
        self.cursor_blink = bool(config.section("ui").get("cursor_blink", False)) if config else False
        if demo:
            self.sub_title = "demo — synthetic patients only"

    def on_mount(self) -> None:
        from tui.screens.patient_search import PatientSearchScreen

        self.push_screen(PatientSearchScreen())

    def action_search_patients(self) -> None:
        """Back to patient search from anywhere, keeping nothing of the chart that was open."""
        from tui.screens.patient_search import PatientSearchScreen

        while len(self.screen_stack) > 2:
            self.pop_screen()
        if not isinstance(self.screen, PatientSearchScreen):
            self.push_screen(PatientSearchScreen())
        self.screen.query_one("#query").focus()
