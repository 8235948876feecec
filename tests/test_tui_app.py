"""App-wide conventions: the palette offers the current screen's actions, global keys reach every area."""

from __future__ import annotations

from models.patients import Note
from tui.app import ReferdeskApp
from tui.dialogs.help import HelpDialog
from tui.screens.note_view import NoteViewScreen
from tui.screens.patient_search import PatientSearchScreen


def signed_note() -> Note:
    return Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).first()


async def test_palette_lists_the_screen_actions_then_textual_commands(seeded):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.open_note(signed_note().id)
        await pilot.pause()
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert "Direct" not in titles  # not until Transferring or Receiving is chosen
        await pilot.press("t")
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert "Scroll Up" not in titles
        for action in ("Transferring", "Receiving", "Direct", "eFax", "Print", "Back", "Help", "Referrals"):
            assert action in titles
        assert "Quit" in titles and titles.index("Transferring") < titles.index("Quit")


async def test_palette_command_runs_the_action(seeded):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.open_note(signed_note().id)
        await pilot.pause()
        command = next(c for c in app.get_system_commands(app.screen) if c.title == "Transferring")
        command.callback()
        await pilot.pause()
        assert app.screen.direction == "transferring"


async def test_f2_returns_to_search_from_deep_in_the_flow_and_f1_shows_the_keys(seeded):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        note = signed_note()
        app.open_patient(note.patient.mrn)
        app.open_note(note.id)
        await pilot.pause()
        assert isinstance(app.screen, NoteViewScreen)
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpDialog)
        table = app.screen.query_one("DataTable")
        keys = {str(table.get_row_at(i)[2]) for i in range(table.row_count)}
        assert {"note.transferring", "note.send_direct", "app.patients", "app.help"} <= keys
        await pilot.press("escape", "f2")
        await pilot.pause()
        assert isinstance(app.screen, PatientSearchScreen)
        assert len(app.screen_stack) == 2


async def test_setup_direct_start_shows_the_wizard_and_leaving_returns_false(db):
    from tui.screens.direct_setup import DirectSetupScreen

    app = ReferdeskApp(start="direct-setup")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, DirectSetupScreen)
        await pilot.press("escape")
        await pilot.pause()
    assert app.return_value is False
