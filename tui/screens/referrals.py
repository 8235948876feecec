"""Referral history for all patients: what was sent, where each one stands, and what needs a hand."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from tui.screens.base import ReferdeskScreen
from tui.widgets.referrals_pane import ReferralsPane


class ReferralsScreen(ReferdeskScreen):
    """Referrals: every patient's, newest first."""

    AUDIT_VIEW = "referral.list"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="referrals.back"),
        Binding("q", "quality", "Quality (CMS50)", id="referrals.cms50"),
    ]
    CSS = """
    ReferralsScreen #referrals-pane { height: 1fr; }
    ReferralsScreen #referrals-pane #referral-filters { margin-top: 0; }
    """

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Referrals — all patients", classes="screen-title")
        yield ReferralsPane(id="referrals-pane")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#referrals-table", DataTable).focus()

    def action_quality(self) -> None:
        """CMS50, Closing the Referral Loop: this year's figures and the referrals still waiting for a report."""
        from tui.screens.cms50 import Cms50Screen

        self.app.push_screen(Cms50Screen())
