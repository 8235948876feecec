"""Referral history in the TUI: snapshots at 80x24 and 120x40, and the keyboard flows on a real seeded SQLite file:
filter, open, resend, mark the report received, cancel, and Esc leaving everything as it was."""

from __future__ import annotations

import datetime as dt

import pytest
from textual.widgets import DataTable, Input, Static

from models.referral_history import list_referrals
from models.referrals import AuditEvent, OutboxJob, Referral, ReferralEvent
from models.referring import ReferralDraft, create_referral
from tui.app import ReferdeskApp
from tui.dialogs.confirm import ConfirmDialog
from tui.dialogs.mark_received import MarkReceivedDialog
from tui.screens.chart import ChartScreen
from tui.screens.patient_search import PatientSearchScreen
from tui.screens.referral_detail import ReferralDetailScreen
from tui.screens.referrals import ReferralsScreen
from tui.widgets.referrals_pane import Filters, ReferralsPane, fit_person
from pilot_keys import keys, press

SIZES = [(80, 24), (120, 40)]
size_ids = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")

# Keys, from patient search: F3, then the status filter (s, Enter opens it, a letter jumps to the status, Enter).
TO_FAILED = ("f3", "s", "enter", "f", "enter")
TO_DELIVERED = ("f3", "s", "enter", "d", "enter")


def table_of(app) -> DataTable:
    return app.screen.query_one("#referrals-table", DataTable)


def state(referral_id: int) -> tuple:
    ref = Referral.get_by_id(referral_id)
    return (ref.status, ref.report_received_on, ref.message_id,
            ReferralEvent.select().where(ReferralEvent.referral == referral_id).count(),
            OutboxJob.select().where(OutboxJob.referral == referral_id).count(),
            # looking (the list, a referral opened) is recorded, and is not a change
            AuditEvent.select().where(~(AuditEvent.action.endswith(".list") | AuditEvent.action.endswith(".view")))
            .count())


# --- snapshots ------------------------------------------------------------------------------------------------


@size_ids
def test_snapshot_referrals_screen(seeded, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=keys("f3"))


@size_ids
def test_snapshot_referrals_filtered_failed(seeded, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=keys(*TO_FAILED))


@size_ids
def test_snapshot_referral_detail_failed(seeded, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=keys(*TO_FAILED, "enter"))


@size_ids
def test_snapshot_mark_received_invalid_date(seeded, snap_compare, size):
    typed = ("m", "ctrl+u", *"13/45/2026", "enter")
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=keys(*TO_DELIVERED, "enter", *typed))


@size_ids
def test_snapshot_chart_referrals_pane(seeded, snap_compare, size):
    mrn = list_referrals(status="failed")[0].mrn
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=keys(*mrn, "enter", "enter", "4"))


# --- keyboard flows -----------------------------------------------------------------------------------------


async def test_f3_filter_failed_open_and_resend(seeded):
    failed = list_referrals(status="failed")
    assert failed
    app = ReferdeskApp(username="frontdesk")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, PatientSearchScreen)
        await press(pilot, *TO_FAILED)
        assert isinstance(app.screen, ReferralsScreen)
        table = table_of(app)
        assert table.row_count == len(failed) and table.has_focus
        assert "Failed" in str(table.get_row_at(0)[-1])
        await press(pilot, "enter")
        assert isinstance(app.screen, ReferralDetailScreen)
        rid = app.screen.referral_id
        assert rid == failed[0].id
        old_message = Referral.get_by_id(rid).message_id
        jobs_before = OutboxJob.select().where(OutboxJob.referral == rid).count()
        await press(pilot, "r")
        ref = Referral.get_by_id(rid)
        assert ref.status == "queued" and ref.status_reason == "" and ref.message_id != old_message
        jobs = list(OutboxJob.select().where(OutboxJob.referral == rid).order_by(OutboxJob.id))
        assert len(jobs) == jobs_before + 1 and jobs[-1].state == "pending"
        last = ReferralEvent.select().where(ReferralEvent.referral == rid).order_by(ReferralEvent.id.desc()).get()
        assert (last.kind, last.detail) == ("queued", "resent by frontdesk")
        assert "Queued" in str(app.screen.query_one("#detail-title", Static).content)  # the screen reloaded
        assert any(f"Referral {rid} queued again" in n.message for n in app._notifications)
        await press(pilot, "escape")
        assert isinstance(app.screen, ReferralsScreen)
        assert table_of(app).row_count == len(failed) - 1  # back on the list, reloaded: it is no longer failed


async def test_mark_a_delivered_referral_received_today(seeded):
    delivered = list_referrals(status="delivered")[0]
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, *TO_DELIVERED, "enter")
        assert app.screen.referral_id == delivered.id
        await press(pilot, "m")
        assert isinstance(app.screen, MarkReceivedDialog)
        assert app.screen.query_one("#received-on", Input).value == "11/02/2026"  # today, prefilled
        await press(pilot, "enter")
        assert isinstance(app.screen, ReferralDetailScreen)
        ref = Referral.get_by_id(delivered.id)
        assert ref.status == "report-received" and ref.report_received_on == dt.date(2026, 11, 2)
        assert "Report received" in str(app.screen.query_one("#detail-title", Static).content)
        assert any("Report received on 11/02/2026" in n.message for n in app._notifications)


async def test_mark_received_with_a_typed_date_and_a_refused_future_one(seeded):
    delivered = list_referrals(status="delivered")[0]
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, *TO_DELIVERED, "enter", "m", "ctrl+u", *"11/05/2026", "enter")
        assert isinstance(app.screen, MarkReceivedDialog)  # still open: the date is in the future
        assert "in the future" in str(app.screen.query_one("#received-error", Static).content)
        assert Referral.get_by_id(delivered.id).status == "delivered"
        await press(pilot, "ctrl+u", *"10/31/2026", "enter")
        assert Referral.get_by_id(delivered.id).report_received_on == dt.date(2026, 10, 31)


async def test_escape_from_the_dialog_changes_nothing(seeded):
    delivered = list_referrals(status="delivered")[0]
    before = state(delivered.id)
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, *TO_DELIVERED, "enter", "m")
        assert isinstance(app.screen, MarkReceivedDialog)
        await press(pilot, "escape")
        assert isinstance(app.screen, ReferralDetailScreen)
        assert state(delivered.id) == before
        await press(pilot, "escape", "escape")
        assert isinstance(app.screen, PatientSearchScreen)
        assert state(delivered.id) == before


async def test_an_action_not_allowed_says_why_and_opens_nothing(seeded):
    failed = list_referrals(status="failed")[0]
    before = state(failed.id)
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, *TO_FAILED, "enter", "m", "c")
        assert isinstance(app.screen, ReferralDetailScreen)
        messages = [n.message for n in app._notifications]
        assert any("failed and never reached the recipient" in m for m in messages)
        assert any("only a referral still queued can be cancelled" in m for m in messages)
        assert state(failed.id) == before


async def test_cancel_asks_first_and_no_keeps_it(seeded):
    made = create_referral(ReferralDraft(patient_id=1, note_id=None, channel="direct",
                                         recipient="consult@direct.cardio.example"), [])
    before = state(made.id)
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, "f3")
        await press(pilot, "enter")
        assert app.screen.referral_id == made.id  # newest first: the one just made is on top
        await press(pilot, "c")
        assert isinstance(app.screen, ConfirmDialog)
        await press(pilot, "enter")  # Enter on the default button is No
        assert state(made.id) == before
        await press(pilot, "c", "escape")
        assert state(made.id) == before
        await press(pilot, "c", "y")
        assert isinstance(app.screen, ReferralDetailScreen)
        assert Referral.get_by_id(made.id).status == "cancelled"
        assert [j.state for j in OutboxJob.select().where(OutboxJob.referral == made.id)] == ["cancelled"]


async def test_date_filters_validate_and_narrow(seeded):
    rows = list_referrals()
    day = rows[len(rows) // 2].created_at.date()
    expected = [r.id for r in rows if r.created_at.date() == day]
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, "f3", "shift+tab", "shift+tab")  # from the list back to the To box, then From
        assert app.focused.id == "referral-from"
        await press(pilot, *"13/45/2026")
        message = app.screen.query_one("#referral-message", Static)
        assert "From:" in str(message.content) and "not a date" in str(message.content)
        assert message.has_class("-error")
        assert table_of(app).row_count == len(rows)  # an impossible date filters nothing
        await press(pilot, "ctrl+u", *f"{day:%m/%d/%Y}", "tab", *f"{day:%m/%d/%Y}", "enter")
        table = table_of(app)
        assert table.has_focus
        assert [int(table.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(table.row_count)] == expected
        assert not message.has_class("-error")


async def test_chart_pane_shows_only_the_patients_referrals(seeded):
    row = list_referrals(status="failed")[0]
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, *row.mrn, "enter", "enter", "4")
        assert isinstance(app.screen, ChartScreen)
        pane = app.screen.query_one(ReferralsPane)
        table = pane.query_one(DataTable)
        assert table.has_focus
        assert {r.patient_id for r in pane.rows} == {row.patient_id}
        assert "patient" not in {str(c.key.value) for c in table.columns.values()}
        await press(pilot, "enter")
        assert isinstance(app.screen, ReferralDetailScreen) and app.screen.referral_id == row.id
        await press(pilot, "escape")
        assert isinstance(app.screen, ChartScreen)


async def test_a_stale_load_never_overwrites_newer_filters(seeded):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, *TO_FAILED)
        pane = app.screen.query_one(ReferralsPane)
        failed_rows = table_of(app).row_count
        pane._show(Filters(), list_referrals())  # an answer for "All" arriving after the user chose Failed
        assert table_of(app).row_count == failed_rows


def test_names_shorten_like_people_shorten_them():
    assert fit_person("Jackson, DeShawn", 16, last_first=True) == "Jackson, DeShawn"
    assert fit_person("Jackson, DeShawn", 12, last_first=True) == "Jackson, D"
    assert fit_person("Kimi Running Water, MD, PhD", 18, last_first=False) == "Kimi Running Water"
    assert fit_person("Kimi Running Water, MD, PhD", 15, last_first=False) == "K Running Water"
    assert fit_person("Kimi Running Water, MD, PhD", 8, last_first=False) == "K Runni…"
