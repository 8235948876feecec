"""Patient search screen: snapshots at fixed sizes and the keyboard flow, on a real seeded SQLite file."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from tui.widgets.result_list import ResultList

from tui.app import ReferdeskApp
from tui.screens.chart import ChartScreen
from tui.screens.patient_search import PatientSearchScreen

SIZES = [(80, 24), (120, 40)]


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def typing(text: str):
    async def run_before(pilot) -> None:
        await pilot.pause()
        await pilot.press(*text)
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_empty_search(seeded, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_results_for_two_letters(seeded, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=typing("ng"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_no_match(seeded, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=typing("zzq"))


async def test_typing_shows_matches_and_enter_opens_the_patient(seeded):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("o", "'", "b")
        await settle(pilot)
        results = app.screen.query_one("#results", ResultList)
        assert results.count > 0
        first = results.lines[0]
        assert first.lower().startswith("o")
        await pilot.press("down")
        assert results.has_focus
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ChartScreen)
        assert app.screen.patient.last_name.lower().startswith("o")
        await pilot.press("escape")
        assert isinstance(app.screen, PatientSearchScreen)


async def test_stale_results_never_overwrite_newer_ones(seeded):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        await pilot.press("n", "g")
        await settle(pilot)
        ng_rows = screen.query_one("#results", ResultList).count
        from models.search import search_patients

        # An answer for an older query arrives after the user typed on: it must be dropped.
        screen.show_results("zz", search_patients("ga"))
        assert screen.query_one("#results", ResultList).count == ng_rows
        assert screen.query_one("#query", Input).value == "ng"


async def test_escape_clears_and_f2_returns_to_search_from_a_chart(seeded):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("s", "m")
        await settle(pilot)
        await pilot.press("enter", "enter")  # Enter in the box moves to the results, Enter opens
        await pilot.pause()
        assert isinstance(app.screen, ChartScreen)
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(app.screen, PatientSearchScreen)
        await pilot.press("escape")
        assert app.screen.query_one("#query", Input).value == ""
        assert app.screen.query_one("#results", ResultList).count == 0


async def test_one_letter_shows_the_hint_not_results(seeded):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("s")
        await settle(pilot)
        assert app.screen.query_one("#results", ResultList).count == 0
        assert "at least 2 letters" in str(app.screen.query_one("#status").content)
