"""PLACEHOLDER (being written by a helper): referral history."""

from textual.widgets import Footer, Header

from tui.screens.base import ReferdeskScreen


class ReferralsScreen(ReferdeskScreen):
    def compose(self):
        yield Header()
        yield Footer(compact=True)
