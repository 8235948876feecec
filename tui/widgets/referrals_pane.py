"""PLACEHOLDER (being written by a helper): referrals."""

from textual.widgets import Static

from tui.widgets.pane import Pane


class ReferralsPane(Pane):
    def __init__(self, patient_id: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.patient_id = patient_id

    def compose(self):
        yield Static("Referrals")
