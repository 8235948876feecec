"""PLACEHOLDER (being written by a helper): the practice's documents."""

from textual.widgets import Footer, Header

from tui.screens.base import ReferdeskScreen


class PracticeDocumentsScreen(ReferdeskScreen):
    def compose(self):
        yield Header()
        yield Footer(compact=True)
