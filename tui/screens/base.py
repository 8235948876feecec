"""What every referdesk screen shares."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Input


class ReferdeskScreen(Screen[None]):
    def on_mount(self) -> None:
        # A blinking cursor repaints twice a second: bytes over a thin SSH link, and nondeterministic snapshots.
        blink = getattr(self.app, "cursor_blink", False)
        for widget in self.query(Input):
            widget.cursor_blink = blink
