"""A list of pre-formatted one-line results with a cursor, drawn with Textual's line API.

Each visible row is one strip of one style, and a change repaints the region once: new results cost one line
of output per row, and moving the cursor repaints just the two rows involved — which matters over thin SSH
links, where a grid of styled cells costs several kilobytes per keystroke.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from textual.binding import Binding
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget


class ResultList(Widget, can_focus=True):
    COMPONENT_CLASSES = {"result-list--cursor"}
    DEFAULT_CSS = """
    ResultList { height: 1fr; background: $surface; }
    ResultList > .result-list--cursor { background: $block-cursor-blurred-background; }
    ResultList:focus > .result-list--cursor { background: $block-cursor-background;
                                             color: $block-cursor-foreground; text-style: bold; }
    """
    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "move(-1000000)", "First", show=False),
        Binding("end", "move(1000000)", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    @dataclass
    class Selected(Message):
        result_list: "ResultList"
        key: str

        @property
        def control(self) -> "ResultList":
            return self.result_list

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lines: list[str] = []
        self.keys: list[str] = []
        self.cursor = 0
        self.top = 0

    def set_results(self, lines: list[str], keys: list[str]) -> None:
        self.lines, self.keys = lines, keys
        self.cursor = self.top = 0
        self.refresh()

    @property
    def count(self) -> int:
        return len(self.lines)

    @property
    def selected_key(self) -> str | None:
        return self.keys[self.cursor] if self.keys else None

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        index = self.top + y
        if index >= len(self.lines):
            return Strip([Segment(" " * width, self.rich_style)], width)
        style = self.get_component_rich_style("result-list--cursor") if index == self.cursor else self.rich_style
        text = self.lines[index][:width].ljust(width)
        return Strip([Segment(text, self.rich_style + style)], width)

    def _show_cursor(self, old: int) -> None:
        height = max(self.size.height, 1)
        top = self.top
        if self.cursor < top:
            top = self.cursor
        elif self.cursor >= top + height:
            top = self.cursor - height + 1
        if top != self.top:
            self.top = top
            self.refresh()
        else:
            width = self.size.width
            for row in {old - self.top, self.cursor - self.top}:
                self.refresh(Region(0, row, width, 1))

    def action_move(self, step: int) -> None:
        if not self.lines:
            return
        old = self.cursor
        self.cursor = max(0, min(len(self.lines) - 1, self.cursor + step))
        if self.cursor != old:
            self._show_cursor(old)

    def action_page(self, direction: int) -> None:
        self.action_move(direction * max(self.size.height - 1, 1))

    def action_select(self) -> None:
        if self.keys:
            self.post_message(self.Selected(self, self.keys[self.cursor]))

    def on_focus(self) -> None:
        self._show_cursor(self.cursor)

    def on_blur(self) -> None:
        self._show_cursor(self.cursor)
