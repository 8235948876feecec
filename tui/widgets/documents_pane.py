"""PLACEHOLDER (being written by a helper): the patient's documents."""

from textual.widgets import Static

from tui.widgets.pane import Pane


class DocumentsPane(Pane):
    def __init__(self, patient_id: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.patient_id = patient_id

    def compose(self):
        yield Static("Documents")
