"""CMS50, Closing the Referral Loop: the measure against a hand-computed expectation, against an independent
computation over the seeded rows, in the local time zone's days, on the command line, and on its screen
(snapshots at 80x24 and 120x40, and the keyboard flow from the Referrals screen)."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections import defaultdict

import pytest
from textual.widgets import DataTable, Select, Static

from models.cms50 import (
    ELIGIBLE_ENCOUNTER_CODES,
    GAP_NO_REPORT,
    GAP_REPORT_EARLY,
    GAP_REPORT_LATE,
    Cms50Error,
    cms50_report,
    parse_year,
    report_years,
)
from models.db import close_database, open_database, sqlite_url
from models.patients import Encounter, Patient
from models.practice import Provider
from models.referrals import Referral
from tui.app import ReferdeskApp
from tui.screens.cms50 import Cms50Screen
from tui.screens.referral_detail import ReferralDetailScreen
from tui.screens.referrals import ReferralsScreen
from pilot_keys import keys, press

SIZES = [(80, 24), (120, 40)]
size_ids = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
D = dt.date
T = dt.datetime


# --- a small practice, computed by hand ---------------------------------------------------------------------


class Practice:
    """Patients, their visits and referrals, made one call at a time."""

    def __init__(self) -> None:
        self.doctor = Provider.create(npi="1234567893", first_name="Ana", last_name="Reyes", in_practice=True)
        self.count = 0

    def patient(self, last: str, *visits: tuple[str, dt.datetime]) -> Patient:
        self.count += 1
        patient = Patient(mrn=f"T{self.count:04d}", first_name="Pat", last_name=last, birth_date=D(1970, 1, 1),
                          sex="F")
        patient.save()
        for code, start in visits:
            Encounter.create(patient=patient, provider=self.doctor, start=start, type_code=code)
        return patient

    @staticmethod
    def referral(patient: Patient, made: dt.datetime, status: str = "delivered", report: dt.date | None = None,
                 direction: str = "transferring", to: str = "Kim Lee, MD") -> Referral:
        return Referral.create(patient=patient, direction=direction, channel="direct",
                               recipient=f"consult{made:%m%d%H%M}@direct.cardio.example", recipient_name=to,
                               status=status, created_at=made, sent_at=made, report_received_on=report)


@pytest.fixture
def practice(db):
    """The hand-computed data set. For 2026 (today is 11/02/2026):

    met          eligible visit, referral 03/05, report 03/20                  -> numerator
    late         preventive visit, referral 09/15, report 01/05/2027          -> denominator only (after 12/31)
    early        visit, referral 05/10, report dated 05/01                    -> denominator only (before it)
    november     visit, referral 11/01                                        -> not in the denominator
    no_visit     a 99211 nurse visit in 2026 and an office visit in 2025      -> not in the denominator
    two          visit, first referral 02/01 no report, second 03/01 has one  -> denominator only (first counts)
    cancelled    visit, its only referral cancelled                           -> not in the denominator
    receiving    visit, a receiving referral (our report on their patient)    -> not in the denominator
    then_sent    visit, a cancelled referral 05/06 then a sent one 06/10      -> denominator only (the sent one)
    same_day     eye exam, referral 10/31 at 23:30, report 10/31              -> numerator
    failed       visit, referral failed 09/02                                 -> denominator only
    """
    p = Practice()
    met = p.patient("Met", ("99213", T(2026, 3, 1, 9)))
    p.referral(met, T(2026, 3, 5, 10), "report-received", D(2026, 3, 20))
    late = p.patient("Late", ("99396", T(2026, 2, 10, 9)))
    p.referral(late, T(2026, 9, 15, 11), "report-received", D(2027, 1, 5))
    early = p.patient("Early", ("99214", T(2026, 4, 1, 9)))
    p.referral(early, T(2026, 5, 10, 14), "report-received", D(2026, 5, 1))
    november = p.patient("November", ("99213", T(2026, 10, 1, 9)))
    p.referral(november, T(2026, 11, 1, 9), "sent")
    no_visit = p.patient("Novisit", ("99211", T(2026, 5, 1, 9)), ("99213", T(2025, 12, 31, 15)))
    p.referral(no_visit, T(2026, 6, 1, 9), "delivered")
    two = p.patient("Two", ("99203", T(2026, 1, 20, 9)))
    first_of_two = p.referral(two, T(2026, 2, 1, 9), "delivered")
    p.referral(two, T(2026, 3, 1, 9), "report-received", D(2026, 3, 10))
    cancelled = p.patient("Cancelled", ("99213", T(2026, 5, 5, 9)))
    p.referral(cancelled, T(2026, 5, 6, 9), "cancelled")
    receiving = p.patient("Receiving", ("99395", T(2026, 7, 1, 9)))
    p.referral(receiving, T(2026, 7, 2, 9), "delivered", direction="receiving")
    then_sent = p.patient("Thensent", ("99213", T(2026, 5, 5, 9)))
    p.referral(then_sent, T(2026, 5, 6, 9), "cancelled")
    sent_after = p.referral(then_sent, T(2026, 6, 10, 9), "sent")
    same_day = p.patient("Sameday", ("92004", T(2026, 8, 1, 9)))
    p.referral(same_day, T(2026, 10, 31, 23, 30), "report-received", D(2026, 10, 31))
    failed = p.patient("Failed", ("99215", T(2026, 9, 1, 9)))
    p.referral(failed, T(2026, 9, 2, 9), "failed")
    return {"first_of_two": first_of_two.id, "sent_after": sent_after.id,
            **{name: patient for name, patient in locals().items() if isinstance(patient, Patient)}}


def test_hand_computed_2026(practice):
    report = cms50_report(2026)
    assert (report.year, report.denominator, report.numerator) == (2026, 7, 2)
    assert report.rate == pytest.approx(2 / 7) and report.rate_text == "28.6%"
    assert report.today == D(2026, 11, 2)
    gaps = [(g.mrn, g.referred_on, g.status, g.report_received_on, g.days_open, g.gap) for g in report.gaps]
    assert gaps == [
        (practice["two"].mrn, D(2026, 2, 1), "delivered", None, 274, GAP_NO_REPORT),
        (practice["early"].mrn, D(2026, 5, 10), "report-received", D(2026, 5, 1), 0, GAP_REPORT_EARLY),
        (practice["then_sent"].mrn, D(2026, 6, 10), "sent", None, 145, GAP_NO_REPORT),
        (practice["failed"].mrn, D(2026, 9, 2), "failed", None, 61, GAP_NO_REPORT),
        (practice["late"].mrn, D(2026, 9, 15), "report-received", D(2027, 1, 5), 112, GAP_REPORT_LATE),
    ]
    assert report.gaps[0].referral_id == practice["first_of_two"]
    assert report.gaps[2].referral_id == practice["sent_after"]
    assert len(report.gaps) == report.denominator - report.numerator
    gap = report.gaps[0]
    assert (gap.patient_name, gap.recipient_name, gap.channel) == ("Two, Pat", "Kim Lee, MD", "direct")
    assert [g.why for g in report.gaps[1::3]] == ["report dated 05/01/2026, before the referral",
                                                  "report came 01/05/2027, after the year ended"]


def test_other_years_and_the_json_form(practice):
    assert report_years() == [2026]  # referrals only in 2026: nothing older to offer
    empty = cms50_report(2025)  # the 2025 office visit, but no referral that year
    assert (empty.denominator, empty.numerator, empty.rate, empty.gaps) == (0, 0, None, ())
    assert empty.rate_text == "—"
    data = json.loads(json.dumps(cms50_report(2026).as_json()))
    assert data["measure"] == "CMS50" and data["year"] == 2026
    assert (data["denominator"], data["numerator"]) == (7, 2) and data["rate"] == pytest.approx(2 / 7)
    assert data["period"] == {"start": "2026-01-01", "end": "2026-12-31", "referrals_until": "2026-10-31"}
    assert data["gaps"][0]["referred_on"] == "2026-02-01" and data["gaps"][0]["report_received_on"] is None
    assert data["gaps"][-1]["gap"] == "report-after-period" and data["gaps"][-1]["days_open"] == 112


def test_years_offered_reach_back_to_the_first_referral(practice):
    Practice.referral(practice["met"], T(2024, 6, 1, 9), "delivered")
    assert report_years() == [2026, 2025, 2024]


@pytest.mark.parametrize("text, message", [
    ("2027", "2027 has not begun yet"),
    ("1999", "1999 is too long ago"),
    ("26", "'26' is not a year"),
    ("twenty", "'twenty' is not a year"),
    ("", "'' is not a year"),
])
def test_a_bad_year_is_refused_in_words(db, text, message):
    with pytest.raises(Cms50Error, match=message):
        parse_year(text)


def test_the_current_and_a_past_year_are_accepted(db):
    assert parse_year(" 2026 ") == 2026 and parse_year("2000") == 2000
    with pytest.raises(Cms50Error):
        cms50_report(2027)


@pytest.fixture
def chicago():
    """The machine's zone is Chicago (CST -6, CDT -5) for one test."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "America/Chicago"
    time.tzset()
    yield
    os.environ["TZ"] = before or "UTC"
    time.tzset()


def test_days_are_the_users_local_days(db, chicago):
    """Stored times are UTC; the measure's days are Chicago's, in daylight saving time and out of it."""
    p = Practice()
    # 10/31 21:30 CDT: made in the window although stored on 11/01; its report the same local day is in time.
    halloween = p.patient("Halloween", ("99213", T(2026, 3, 1, 15)))
    p.referral(halloween, T(2026, 11, 1, 2, 30), "report-received", D(2026, 10, 31))
    # 01/14 21:00 CST (stored 01/15): a report dated 01/14 is the same day, so in time.
    january = p.patient("January", ("99213", T(2026, 3, 1, 15)))
    p.referral(january, T(2026, 1, 15, 3, 0), "report-received", D(2026, 1, 14))
    # 12/31/2025 21:00 CST (stored 01/01/2026): a 2025 referral, not this year's.
    new_year = p.patient("Newyear", ("99213", T(2026, 3, 1, 15)))
    p.referral(new_year, T(2026, 1, 1, 3, 0), "delivered")
    # 07/09 23:00 CDT (stored 07/10 04:00): a report dated 07/09 is in time, one dated 07/08 is not.
    summer = p.patient("Summer", ("99213", T(2026, 3, 1, 15)))
    p.referral(summer, T(2026, 7, 10, 4, 0), "report-received", D(2026, 7, 8))
    report = cms50_report(2026)
    assert (report.denominator, report.numerator) == (3, 2)
    assert [(g.mrn, g.referred_on, g.gap) for g in report.gaps] == [(summer.mrn, D(2026, 7, 9), GAP_REPORT_EARLY)]
    assert cms50_report(2025).denominator == 0  # Newyear has no 2025 visit


# --- the seeded practice, cross-checked -----------------------------------------------------------------------


def straightforward(year: int) -> tuple[int, int, list[int]]:
    """The measure the plain way, row by row in Python (the time zone is UTC here)."""
    visits = defaultdict(list)
    for patient, code, start in Encounter.select(Encounter.patient, Encounter.type_code, Encounter.start).tuples():
        visits[patient].append((code, start))
    firsts: dict[int, tuple] = {}
    for rid, patient, direction, status, made, report in (
            Referral.select(Referral.id, Referral.patient, Referral.direction, Referral.status,
                            Referral.created_at, Referral.report_received_on).tuples()):
        if direction != "transferring" or status == "cancelled":
            continue
        if not D(year, 1, 1) <= made.date() <= D(year, 10, 31):
            continue
        if patient not in firsts or (made, rid) < firsts[patient][:2]:
            firsts[patient] = (made, rid, report)
    denominator = numerator = 0
    gaps = []
    for patient, (made, rid, report) in sorted(firsts.items(), key=lambda item: item[1][:2]):
        if not any(code in ELIGIBLE_ENCOUNTER_CODES and start.year == year for code, start in visits[patient]):
            continue
        denominator += 1
        if report is not None and made.date() <= report <= D(year, 12, 31):
            numerator += 1
        else:
            gaps.append(rid)
    return denominator, numerator, gaps


@pytest.mark.parametrize("year", [2025, 2026])
def test_seeded_data_agrees_with_a_straightforward_computation(seeded, year):
    denominator, numerator, gaps = straightforward(year)
    report = cms50_report(year)
    assert (report.denominator, report.numerator) == (denominator, numerator)
    assert [g.referral_id for g in report.gaps] == gaps
    if year == 2026:
        assert denominator > 0 and gaps  # the seed gives the check something to check


def test_seeded_data_with_more_referrals(seeded):
    """More of every case on the seeded patients: several referrals each, some in November, some received late,
    some cancelled, some receiving; the two computations still agree."""
    import random

    rng = random.Random(50)
    patients = [pid for (pid,) in Patient.select(Patient.id).tuples()]
    for _ in range(400):
        made = T(2026, 1, 1) + dt.timedelta(minutes=rng.randrange(0, 330 * 24 * 60))
        status = rng.choice(["sent", "delivered", "report-received", "failed", "cancelled"])
        report = (made.date() + dt.timedelta(days=rng.randrange(-5, 90)) if status == "report-received" else None)
        Practice.referral(Patient.get_by_id(rng.choice(patients)), made, status, report,
                          direction=rng.choice(["transferring"] * 5 + ["receiving"]))
    denominator, numerator, gaps = straightforward(2026)
    report = cms50_report(2026)
    assert denominator > 20 and 0 < numerator < denominator
    assert (report.denominator, report.numerator, [g.referral_id for g in report.gaps]) == \
        (denominator, numerator, gaps)


# --- the command line -----------------------------------------------------------------------------------------


def expected_for(data_dir, year: int) -> dict:
    open_database(sqlite_url(data_dir / "referdesk.db"))
    try:
        return cms50_report(year).as_json()
    finally:
        close_database()


def test_cli_json(cli, data_dir):
    code, out, err = cli("--data-dir", data_dir, "report", "cms50", "--year", "2026", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data == expected_for(data_dir, 2026)
    assert data["denominator"] == data["numerator"] + len(data["gaps"]) > 0
    assert set(data["gaps"][0]) == {"referral_id", "patient_id", "mrn", "patient_name", "referred_on", "recipient",
                                    "recipient_name", "channel", "status", "report_received_on", "days_open", "gap"}


def test_cli_text(cli, data_dir):
    expected = expected_for(data_dir, 2026)
    code, out, err = cli("--data-dir", data_dir, "report", "cms50", "--year", "2026")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "CMS50 Closing the Referral Loop: Receipt of Specialist Report, 2026"
    assert lines[1].split()[:2] == ["Denominator", str(expected["denominator"])]
    assert lines[2].split()[:2] == ["Numerator", str(expected["numerator"])]
    rate = expected["numerator"] / expected["denominator"] * 100
    assert lines[3].split() == ["Performance", "rate", f"{rate:.1f}%"]
    assert f"Gap: {len(expected['gaps'])} first referral(s)" in out
    assert lines[6].split() == ["ID", "Made", "MRN", "Patient", "Recipient", "Status", "Days"]
    rows = [line.split() for line in lines[7:]]
    assert [int(r[0]) for r in rows] == [g["referral_id"] for g in expected["gaps"]]
    assert [r[2] for r in rows] == [g["mrn"] for g in expected["gaps"]]
    assert [int(r[-1]) for r in rows] == [g["days_open"] for g in expected["gaps"]]


def test_cli_a_year_without_anyone(cli, data_dir):
    code, out, err = cli("--data-dir", data_dir, "report", "cms50", "--year", "2010")
    assert code == 0
    assert "Performance rate        —" in out and "Gap" not in out


@pytest.mark.parametrize("year, message", [
    ("2027", "referdesk: --year: 2027 has not begun yet"),
    ("abc", "referdesk: --year: 'abc' is not a year: give four digits, e.g. 2026"),
    ("1899", "referdesk: --year: 1899 is too long ago"),
])
def test_cli_bad_year(cli, data_dir, year, message):
    code, out, err = cli("--data-dir", data_dir, "report", "cms50", "--year", year, "--json")
    assert code == 1 and out == ""
    assert err.startswith(message)


# --- the screen -----------------------------------------------------------------------------------------------


@size_ids
def test_snapshot_cms50_screen(practice, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=keys("f3", "q"))


@size_ids
def test_snapshot_cms50_seeded(seeded, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=keys("f3", "q"))


def figures(app) -> str:
    return str(app.screen.query_one("#cms50-figures", Static).content)


def gap_ids(app) -> list[int]:
    table = app.screen.query_one("#cms50-gaps", DataTable)
    return [int(table.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(table.row_count)]


async def test_keyboard_flow(practice):
    Practice.referral(practice["met"], T(2025, 6, 1, 9), "delivered")  # so 2025 is on offer
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, "f3")
        assert isinstance(app.screen, ReferralsScreen)
        await press(pilot, "q")
        assert isinstance(app.screen, Cms50Screen) and app.screen.year == 2026
        assert figures(app) == "Denominator 7 · Numerator 2 · Performance rate 28.6%"
        expected = [g.referral_id for g in cms50_report(2026).gaps]
        assert gap_ids(app) == expected and app.screen.query_one("#cms50-gaps").has_focus
        year = app.screen.query_one("#cms50-year", Select)
        assert [str(o[0]) for o in year._options] == ["2026", "2025"]

        await press(pilot, "y", "enter", "down", "enter")  # the year selector: one down is 2025
        assert app.screen.year == 2025 and year.value == 2025
        assert figures(app) == "Denominator 0 · Numerator 0 · Performance rate —"
        assert gap_ids(app) == [] and app.screen.query_one("#cms50-gaps").has_focus
        await press(pilot, "left_square_bracket")  # no 2024 to go to: says so, stays
        assert app.screen.year == 2025 and any("No report for 2024" in n.message for n in app._notifications)
        await press(pilot, "right_square_bracket")
        assert app.screen.year == 2026 and gap_ids(app) == expected

        await press(pilot, "down", "enter")  # the second gap: the report dated before the referral
        assert isinstance(app.screen, ReferralDetailScreen) and app.screen.referral_id == expected[1]
        await press(pilot, "escape")
        assert isinstance(app.screen, Cms50Screen) and gap_ids(app) == expected

        await press(pilot, "up", "enter", "m", "ctrl+u", *"10/30/2026", "enter", "escape")  # mark the first
        assert isinstance(app.screen, Cms50Screen)
        assert figures(app) == "Denominator 7 · Numerator 3 · Performance rate 42.9%"
        assert gap_ids(app) == expected[1:]
        await press(pilot, "escape")
        assert isinstance(app.screen, ReferralsScreen)


async def test_palette_lists_the_report_on_the_referrals_screen(practice):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, "f3")
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "Quality (CMS50)" in commands
