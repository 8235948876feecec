"""eFax and Download/Print from the referral dialog, by keys, end to end: the fax goes to a loopback Phaxio
through the in-app worker and the note's banner follows it to "Successfully Sent"; the packet is saved (and
printed through a stand-in `lp`) while the user waits, and the banner says where. Snapshots of the first-fax
confirmation, the print window with its choices, and both outcome banners, at 80×24 and 120×40."""

from __future__ import annotations

import json
import os
import stat

import pytest
from textual.widgets import Checkbox, Static

from fake_cups import recording_lp
from loopback_phaxio import LoopbackPhaxio
from models import clock
from models.config import Config
from models.referrals import Referral
from referral_nav import SIZES, run, settle, signed_note, size_ids, to_compose, type_text
from tui.app import ReferdeskApp
from tui.dialogs.confirm import ConfirmDialog
from tui.screens.compose import ComposeScreen
from tui.screens.note_view import NoteViewScreen

ENV = {"PHAXIO_API_KEY": "test-key", "PHAXIO_API_SECRET": "test-secret"}


@pytest.fixture
def phaxio(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with LoopbackPhaxio(polls_to_final=1) as server:
        yield server


@pytest.fixture
def lp_bin(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "lp").symlink_to(recording_lp(folder, job="FrontDesk-7"))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def app_config(tmp_path, phaxio=None, *, printer: str = "") -> Config:
    values = {"worker": {"in_app": phaxio is not None, "poll_seconds": 0.2},
              "print": {"folder": str(tmp_path / "referrals"), "printer": printer}}
    if phaxio is not None:
        values["efax"] = {"provider": "phaxio", "api_url": phaxio.url, "poll_seconds": 0.2,
                          "retry_delays": [0.2, 0.2]}
    return Config(path=None, data_dir=tmp_path, database_url="", values=values)


async def fill_fax(pilot, number: str = "(217) 555-0142", *, by_keys: bool = True) -> None:
    await type_text(pilot, number, by_keys=by_keys)
    await pilot.press("enter")
    await settle(pilot)
    await pilot.press("ctrl+s")  # no name for the cover sheet yet: the window asks for it and goes there
    await settle(pilot)
    assert pilot.app.focused.id == "attn"
    await type_text(pilot, "Dr. Ana Ruiz", by_keys=by_keys)
    await pilot.press("ctrl+s")
    await settle(pilot)


def banner(app) -> str:
    return str(app.screen.query_one("#outcome", Static).content)


async def test_a_fax_by_keys_is_confirmed_sent_and_followed_to_successfully_sent(seeded, tmp_path, phaxio):
    clock.freeze(None)  # the worker polls Phaxio on real time
    phaxio.script("+12175550142", ["busy", "success"])
    note = signed_note()
    app = ReferdeskApp(config=app_config(tmp_path, phaxio))
    async with app.run_test(size=(80, 24)) as pilot:
        await to_compose(pilot, note, "f")
        await fill_fax(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await settle(pilot)
        assert isinstance(app.screen, NoteViewScreen)
        for _ in range(100):
            if banner(app).startswith("Successfully Sent"):
                break
            await pilot.pause(0.1)
        assert banner(app).startswith("Successfully Sent — fax to (217) 555-0142 delivered (phaxio (id ")
    referral = Referral.select().where(Referral.recipient == "2175550142").get()
    assert referral.status == "delivered" and len(phaxio.faxes) == 2  # busy once, then through
    assert [e.kind for e in referral.events].count("retry") == 1


async def test_print_by_keys_saves_the_pdf_and_the_ccda_and_prints_it(seeded, tmp_path, lp_bin):
    note = signed_note()
    app = ReferdeskApp(config=app_config(tmp_path, printer="FrontDesk"))
    async with app.run_test(size=(80, 24)) as pilot:
        await to_compose(pilot, note, "p")
        screen = app.screen
        assert isinstance(screen, ComposeScreen)
        assert screen.query_one("#print-on", Checkbox).value  # the configured printer is offered, ticked
        await pilot.press("enter")  # the folder from [print] folder, as offered; on to the next field
        await settle(pilot)
        assert app.focused.id == "save-ccda"
        await pilot.press("space")  # Also save the C-CDA
        await settle(pilot)
        assert ".xml" in str(screen.query_one("#attachments", Static).content)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, NoteViewScreen)
        text = banner(app)
    folder = tmp_path / "referrals"
    names = sorted(p.name for p in folder.iterdir())
    assert [n.rsplit(".", 1)[1] for n in names] == ["pdf", "xml"]
    assert all(stat.S_IMODE((folder / n).stat().st_mode) == 0o600 for n in names)
    assert text.startswith("Saved — referral #") and str(folder) in text and "as job FrontDesk-7" in text
    argv = json.loads((lp_bin / "lp-argv.json").read_text())
    assert argv[:2] == ["-d", "FrontDesk"] and argv[-1].endswith(".pdf")


async def test_a_folder_that_cannot_be_used_is_said_and_nothing_is_sent(seeded, tmp_path):
    note = signed_note()
    (tmp_path / "taken").write_text("a file, not a folder")
    app = ReferdeskApp(config=app_config(tmp_path))
    before = Referral.select().count()
    async with app.run_test(size=(80, 24)) as pilot:
        await to_compose(pilot, note, "p")
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(pilot, str(tmp_path / "taken"), by_keys=False)
        await pilot.press("enter")
        await settle(pilot)
        assert "is a file, not a folder" in str(app.screen.query_one("#verdict", Static).content)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, ComposeScreen)
    assert Referral.select().count() == before


# --- snapshots ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_first_fax_confirmation(seeded, tmp_path, snap_compare, size):
    note = signed_note()

    async def steps(pilot):
        await to_compose(pilot, note, "f", by_keys=False)
        await fill_fax(pilot, by_keys=False)

    assert snap_compare(ReferdeskApp(config=app_config(tmp_path)), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_print_window_with_a_printer(seeded, tmp_path, snap_compare, size):
    note = signed_note()

    async def steps(pilot):
        await to_compose(pilot, note, "p", by_keys=False)
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(pilot, "/tmp/referrals-snapshot", by_keys=False)
        await pilot.press("enter", "space")
        await settle(pilot)

    assert snap_compare(ReferdeskApp(config=app_config(tmp_path, printer="FrontDesk")), terminal_size=size,
                        run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_saved_banner(seeded, tmp_path, snap_compare, size, lp_bin, monkeypatch):
    note = signed_note()
    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path)  # the banner shows the folder as ~/referrals

    async def steps(pilot):
        await to_compose(pilot, note, "p", by_keys=False)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("ctrl+s")
        await settle(pilot)

    assert snap_compare(ReferdeskApp(config=app_config(tmp_path, printer="FrontDesk")), terminal_size=size,
                        run_before=run(steps))
