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
            # Ours all carry an id (so they can be remapped); Textual's scrolling keys would only add noise.
            if not binding.id or not binding.description or (binding.action, binding.description) in seen:
                continue
            seen.add((binding.action, binding.description))
            rows.append((self.app.get_key_display(binding), binding.description, binding.id))
        with VerticalScroll():
            about = (self.under.__class__.__doc__ or "").strip().splitlines()
            yield Static(f"[b]Keys[/b] — {about[0] if about else 'this screen'}")
            table = DataTable(cursor_type="none", show_header=False)
            table.add_columns("Key", "Does", "Id")
            for row in sorted(rows, key=lambda r: r[1]):
                table.add_row(*row)
            yield table
            yield Static("Tab / Shift+Tab move between fields · arrows and PgUp/PgDn scroll · Esc backs out · "
                         "Ctrl+P lists every action. Remap a key in the config file: [keymap] then "
                         "\"app.help\" = \"f9\"", markup=False)
