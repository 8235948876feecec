"""What every referdesk screen shares."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Input


class ReferdeskScreen(Screen[None]):
    #: The audit log's action for opening this screen, when it shows several patients' data at once (a list);
    #: one row per opening, not per reload or filter change. Screens about one patient record their own view.
    AUDIT_VIEW: str | None = None

    def on_mount(self) -> None:
        # A blinking cursor repaints twice a second: bytes over a thin SSH link, and nondeterministic snapshots.
        blink = getattr(self.app, "cursor_blink", False)
        for widget in self.query(Input):
            widget.cursor_blink = blink
        # Textual calls on_mount of every class in the MRO, and subclasses call super() too: record once.
        if self.AUDIT_VIEW and not getattr(self, "_view_recorded", False):
            from models.audit import record

            self._view_recorded = True
            record(self.AUDIT_VIEW, username=getattr(self.app, "username", ""), detail="via=tui")
