"""The base of the chart's panes: something the menu can hand focus to."""

from __future__ import annotations

from textual.containers import VerticalScroll


class Pane(VerticalScroll):
    can_focus = False

    def focus_first(self) -> None:
        """Give focus to the pane's main widget, or to the pane itself when it has none."""
        for widget in self.query("*"):
            if widget.focusable:
                widget.focus()
                return
        self.can_focus = True
        self.focus()
