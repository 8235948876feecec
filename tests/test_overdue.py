"""Overdue referrals: sent or delivered, ours, and no report after `[referrals] overdue_days` (30 by default).
The rule, the setting, and how the Referrals list shows and filters them."""

from __future__ import annotations

import datetime as dt

import pytest
from rich.style import Style
from textual.widgets import DataTable, Static

from models.config import Config
from models.overdue import (
    DEFAULT_OVERDUE_DAYS,
    OverdueSettingError,
    days_overdue,
    overdue_days_setting,
    overdue_referrals,
)
from models.patients import Patient
from models.referral_history import HistoryError, get_referral, list_referrals
from models.referrals import Referral
from tui.app import ReferdeskApp
from tui.widgets.referrals_pane import ReferralsPane
from pilot_keys import press

TODAY = dt.date(2026, 11, 2)  # the frozen clock's day


def config(**referrals) -> Config:
    return Config(path=None, data_dir=None, database_url="", values={"referrals": referrals} if referrals else {})


@pytest.fixture
def referrals(db):
    """One patient's referrals, named by what they are. Today is 11/02/2026."""
    alice = Patient(mrn="T0001", first_name="Alice", last_name="Adams", birth_date=dt.date(1970, 1, 1), sex="F")
    alice.save()
    bob = Patient(mrn="T0002", first_name="Bob", last_name="Brown", birth_date=dt.date(1960, 1, 1), sex="M")
    bob.save()

    def make(patient, made: dt.datetime, status: str, report: dt.date | None = None,
             direction: str = "transferring") -> int:
        return Referral.create(patient=patient, direction=direction, channel="direct",
                               recipient=f"c{made:%m%d%H}@direct.cardio.example", recipient_name="Kim Lee, MD",
                               status=status, created_at=made, sent_at=made, report_received_on=report).id

    return {
        "sent_31": make(alice, dt.datetime(2026, 10, 2, 15), "sent"),  # 31 days: overdue
        "delivered_30": make(alice, dt.datetime(2026, 10, 3, 9), "delivered"),  # exactly 30: not yet
        "delivered_90": make(bob, dt.datetime(2026, 8, 4, 9), "delivered"),
        "received": make(alice, dt.datetime(2026, 6, 1, 9), "report-received", dt.date(2026, 6, 20)),
        "failed": make(alice, dt.datetime(2026, 6, 2, 9), "failed"),
        "cancelled": make(alice, dt.datetime(2026, 6, 3, 9), "cancelled"),
        "queued": make(alice, dt.datetime(2026, 6, 4, 9), "queued"),
        "receiving": make(bob, dt.datetime(2026, 6, 5, 9), "delivered", direction="receiving"),
        "alice": alice.id, "bob": bob.id,
    }


def test_overdue_referrals_are_the_ones_waiting_too_long(referrals):
    rows = overdue_referrals(30, TODAY)
    assert [r.id for r in rows] == [referrals["sent_31"], referrals["delivered_90"]]  # newest first
    assert [days_overdue(r, 30, TODAY) for r in rows] == [31, 90]
    assert [r.id for r in overdue_referrals(29, TODAY)] == [referrals[k] for k in
                                                             ("delivered_30", "sent_31", "delivered_90")]
    assert [r.id for r in overdue_referrals(90, TODAY)] == []
    assert [r.id for r in overdue_referrals(30, TODAY, patient_id=referrals["bob"])] == [referrals["delivered_90"]]
    assert [r.id for r in overdue_referrals(30, TODAY, since=dt.date(2026, 9, 1))] == [referrals["sent_31"]]
    assert [r.id for r in overdue_referrals(30, TODAY, until=dt.date(2026, 9, 1))] == [referrals["delivered_90"]]
    assert overdue_referrals(30) == rows  # today defaults to the local day
    with pytest.raises(HistoryError, match="after the To date"):
        overdue_referrals(30, TODAY, since=dt.date(2026, 10, 1), until=dt.date(2026, 9, 1))


def test_days_overdue_agrees_with_the_query_on_every_row(referrals):
    for days in (0, 29, 30, 31, 89, 90, 150):
        listed = {r.id for r in overdue_referrals(days, TODAY)}
        assert {r.id for r in list_referrals() if days_overdue(r, days, TODAY) is not None} == listed
    for key in ("received", "failed", "cancelled", "queued", "receiving"):
        assert days_overdue(get_referral(referrals[key]), 0, TODAY) is None


def test_the_setting(db):
    assert overdue_days_setting(None) == DEFAULT_OVERDUE_DAYS == 30
    assert overdue_days_setting(config()) == 30
    assert overdue_days_setting(config(overdue_days=45)) == 45
    for bad in (0, -3, "30", 2.5, True, 99999):
        with pytest.raises(OverdueSettingError, match=r"\[referrals\] overdue_days must be a whole number"):
            overdue_days_setting(config(overdue_days=bad))


# --- the Referrals list ---------------------------------------------------------------------------------------


def status_cells(app) -> dict[int, object]:
    table = app.screen.query_one("#referrals-table", DataTable)
    return {int(table.coordinate_to_cell_key((i, 0)).row_key.value): table.get_row_at(i)[-1]
            for i in range(table.row_count)}


async def test_overdue_rows_are_highlighted_and_filtered(referrals):
    app = ReferdeskApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await press(pilot, "f3")
        cells = status_cells(app)
        assert str(cells[referrals["sent_31"]]) == "Overdue 31 d · Sent"
        assert str(cells[referrals["delivered_90"]]) == "Overdue 90 d · Delivered"
        assert str(cells[referrals["delivered_30"]]) == "Delivered"
        error = Style.parse(app.theme_variables["error"])
        word = cells[referrals["sent_31"]]
        assert word.get_style_at_offset(app.console, 0) == error + Style(bold=True)
        assert word.get_style_at_offset(app.console, len("Overdue ")) == error
        await press(pilot, "s", "enter", "down", "down", "enter")  # All, Open, Overdue
        assert app.screen.query_one(ReferralsPane).filters.status == "overdue"
        assert list(status_cells(app)) == [referrals["sent_31"], referrals["delivered_90"]]
        assert "2 referrals" in str(app.screen.query_one("#referral-message", Static).content)


async def test_narrow_rows_say_overdue_and_the_days(referrals):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, "f3")
        assert str(status_cells(app)[referrals["delivered_90"]]) == "Overdue 90 d"


async def test_the_configured_limit_is_used(referrals):
    app = ReferdeskApp(config=config(overdue_days=60))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await press(pilot, "f3")
        cells = status_cells(app)
        assert str(cells[referrals["sent_31"]]) == "Sent"
        assert str(cells[referrals["delivered_90"]]) == "Overdue 90 d · Delivered"
        await press(pilot, "s", "enter", "down", "down", "enter")
        assert list(status_cells(app)) == [referrals["delivered_90"]]


async def test_nothing_overdue_says_so(referrals):
    app = ReferdeskApp(config=config(overdue_days=365))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await press(pilot, "f3", "s", "enter", "down", "down", "enter")
        assert status_cells(app) == {}
        assert str(app.screen.query_one("#referral-message", Static).content) == \
            "No referral has waited more than 365 days for its report."


async def test_a_bad_setting_warns_and_uses_the_default(referrals):
    app = ReferdeskApp(config=config(overdue_days="soon"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await press(pilot, "f3")
        assert any("overdue_days must be a whole number" in n.message and "using 30" in n.message
                   for n in app._notifications)
        assert str(status_cells(app)[referrals["sent_31"]]) == "Overdue 31 d · Sent"
