"""The keys of the screen the user came from, and the keys that work everywhere."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static


class HelpDialog(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,question_mark,q", "dismiss", "Close", id="help.close")]
    DEFAULT_CSS = """
    HelpDialog { align: center middle; }
    HelpDialog > VerticalScroll { width: 70; max-width: 100%; height: auto; max-height: 90%;
                                  border: round $primary; background: $surface; padding: 0 1; }
    HelpDialog DataTable { height: auto; }
    """

    def __init__(self, under: Screen) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        rows = []
        seen = set()
        for key, active in self.under.active_bindings.items():
            binding = active.binding
            if not binding.description or (binding.action, binding.description) in seen:
                continue
            seen.add((binding.action, binding.description))
            rows.append((self.app.get_key_display(binding), binding.description))
        with VerticalScroll():
            yield Static(f"[b]Keys[/b] — {self.under.__class__.__doc__.splitlines()[0] if self.under.__class__.__doc__ else ''}")
            table = DataTable(cursor_type="none", show_header=False)
            table.add_columns("Key", "Does")
            for row in sorted(rows, key=lambda r: r[1]):
                table.add_row(*row)
            yield table
            yield Static("Tab / Shift+Tab move between fields · Esc backs out · Ctrl+P lists every action")
