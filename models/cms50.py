"""CMS50 — Closing the Referral Loop: Receipt of Specialist Report (MIPS Quality ID 374), for one calendar year.

The rule as referdesk applies it (STANDARDS.md "CMS50"):

- **Denominator**: patients with an eligible encounter in the measurement year *and* a referral made between
  January 1 and October 31 of that year. No exclusions.

  - *Eligible encounter*: an `Encounter` whose CPT `type_code` is in one of the measure's qualifying value
    sets — Office Visit (99202–99205, 99212–99215), Preventive Care Services initial and established office
    visits for every age band (99381–99387, 99391–99397) and Ophthalmological Services (92002, 92004, 92012,
    92014) — that started in the year. Anything else (a telephone call, a nurse-only 99211 visit, an encounter
    with no code) does not qualify. The encounter need not be the one the referral came from: the measure
    counts patients, not encounter–referral pairs.
  - *Referral*: one we made (`direction` "transferring"; a "receiving" row is our own report on a patient
    referred to us and never counts), not cancelled (a cancelled referral was never made), in any other
    status — queued, sent, delivered, failed (it never reached the consultant, which is exactly a loop left
    open) or report-received.
  - Only the patient's **first** such referral counts (the earliest `created_at`, the lower id on a tie), even
    when a later one did get its report.

- **Numerator**: denominator patients whose first referral has its report: `report_received_on` is set, is on
  or after the day the referral was made, and is no later than December 31 of the year.

Days are the user's local days (the same convention as the referral history's date filters): "made between
January 1 and October 31" means in local time, so a referral made at 9 pm on October 31 in Chicago counts even
though it is stored as November 1 in UTC.

Everything is computed by the database in two queries whatever the number of patients: one for the figures and
one for the gap list (the first referrals not met), never a query per patient.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from peewee import SQL, Case, fn

from models import clock
from models.db import is_sqlite
from models.patients import Encounter, Patient
from models.referral_history import _utc_start, display_recipient, local_today
from models.referrals import Referral

MEASURE = "CMS50"
TITLE = "Closing the Referral Loop: Receipt of Specialist Report"

#: CPT codes of the qualifying encounter value sets (see the module docstring).
OFFICE_VISIT = ("99202", "99203", "99204", "99205", "99212", "99213", "99214", "99215")
PREVENTIVE_CARE = ("99381", "99382", "99383", "99384", "99385", "99386", "99387",
                   "99391", "99392", "99393", "99394", "99395", "99396", "99397")
OPHTHALMOLOGICAL = ("92002", "92004", "92012", "92014")
ELIGIBLE_ENCOUNTER_CODES = OFFICE_VISIT + PREVENTIVE_CARE + OPHTHALMOLOGICAL

#: The last month and day on which a referral enters the denominator.
REFERRAL_CUTOFF = (10, 31)
EARLIEST_YEAR = 2000

#: Why a denominator patient is not in the numerator.
GAP_NO_REPORT = "no-report"
GAP_REPORT_LATE = "report-after-period"
GAP_REPORT_EARLY = "report-before-referral"


class Cms50Error(ValueError):
    """A report that cannot be computed as asked (a year out of range); the message says why."""


@dataclass(frozen=True, slots=True)
class Cms50Gap:
    """A denominator patient's first referral that does not (yet) meet the measure."""

    referral_id: int
    patient_id: int
    mrn: str
    patient_name: str  # "Last, First"
    referred_on: dt.date  # the local day the referral was made
    recipient: str  # display form: fax numbers as (555) 555-0100
    recipient_name: str
    channel: str
    status: str
    report_received_on: dt.date | None
    days_open: int  # from the referral to the report, or to today when none came back
    gap: str  # GAP_NO_REPORT | GAP_REPORT_LATE | GAP_REPORT_EARLY

    @property
    def why(self) -> str:
        """The gap in words for staff."""
        if self.gap == GAP_REPORT_LATE:
            return f"report came {self.report_received_on:%m/%d/%Y}, after the year ended"
        if self.gap == GAP_REPORT_EARLY:
            return f"report dated {self.report_received_on:%m/%d/%Y}, before the referral"
        return "no report yet"

    def as_json(self) -> dict:
        return {
            "referral_id": self.referral_id, "patient_id": self.patient_id, "mrn": self.mrn,
            "patient_name": self.patient_name, "referred_on": self.referred_on.isoformat(),
            "recipient": self.recipient, "recipient_name": self.recipient_name, "channel": self.channel,
            "status": self.status,
            "report_received_on": self.report_received_on.isoformat() if self.report_received_on else None,
            "days_open": self.days_open, "gap": self.gap,
        }


@dataclass(frozen=True, slots=True)
class Cms50Report:
    year: int
    denominator: int
    numerator: int
    rate: float | None  # numerator / denominator; None when the denominator is empty
    gaps: tuple[Cms50Gap, ...]  # oldest referral first
    today: dt.date  # the day `days_open` was counted to

    @property
    def rate_text(self) -> str:
        return "—" if self.rate is None else f"{self.rate * 100:.1f}%"

    def as_json(self) -> dict:
        return {
            "measure": MEASURE, "title": TITLE, "year": self.year,
            "period": {"start": dt.date(self.year, 1, 1).isoformat(), "end": dt.date(self.year, 12, 31).isoformat(),
                       "referrals_until": dt.date(self.year, *REFERRAL_CUTOFF).isoformat()},
            "denominator": self.denominator, "numerator": self.numerator, "rate": self.rate,
            "today": self.today.isoformat(), "gaps": [gap.as_json() for gap in self.gaps],
        }


def parse_year(text: str | int) -> int:
    """A measurement year as typed (`2026`), checked: a past or the current year, never one not begun."""
    value = str(text).strip()
    if not (value.isdigit() and len(value) == 4):
        raise Cms50Error(f"{value!r} is not a year: give four digits, e.g. {local_today().year}")
    return check_year(int(value))


def check_year(year: int) -> int:
    current = local_today().year
    if year > current:
        raise Cms50Error(f"{year} has not begun yet: the measure covers a past year or this one ({current})")
    if year < EARLIEST_YEAR:
        raise Cms50Error(f"{year} is too long ago: referdesk reports from {EARLIEST_YEAR} on")
    return year


def report_years() -> list[int]:
    """The years worth offering, newest first: this year back to the year of the first referral we made."""
    current = local_today().year
    first = (Referral.select(fn.MIN(Referral.created_at)).where(Referral.direction == "transferring").scalar())
    if isinstance(first, str):  # SQLite hands an aggregate back untyped
        first = dt.datetime.fromisoformat(first)
    oldest = min(max(clock.local(first).year, EARLIEST_YEAR), current) if first else current
    return list(range(current, oldest - 1, -1))


# --- the computation --------------------------------------------------------------------------------------


def _offset_segments(start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, int]]:
    """[(from, seconds)]: the local zone's UTC offset from each stored (naive UTC) time `from` until the next
    one, covering [start, end). One entry without daylight saving time, three in a year that has it."""
    def offset(at: dt.datetime) -> int:
        return int(at.replace(tzinfo=dt.timezone.utc).astimezone().utcoffset().total_seconds())

    segments = [(start, offset(start))]
    day = start
    while day < end:
        following = min(day + dt.timedelta(days=1), end)
        if offset(following) != offset(day):  # a change within this day: find its hour (they fall on the hour)
            hour = day
            while offset(hour) == offset(day):
                hour += dt.timedelta(hours=1)
            segments.append((hour, offset(hour)))
        day = following
    return segments


def _shifted_date(column, seconds: int):
    """DATE(column + seconds), in the engine's own dialect."""
    if not seconds:
        return fn.DATE(column)
    if is_sqlite():
        return fn.DATE(column, f"{seconds:+d} seconds")
    return fn.DATE(column + SQL(f"INTERVAL '{int(seconds)} seconds'"))


def _local_date(column, start: dt.datetime, end: dt.datetime):
    """The local day of a stored (naive UTC) time in [start, end), as SQL."""
    segments = _offset_segments(start, end)
    if len(segments) == 1:
        return _shifted_date(column, segments[0][1])
    cases = [(column < until, _shifted_date(column, seconds))
             for (_, seconds), (until, _) in zip(segments, segments[1:])]
    return Case(None, cases, _shifted_date(column, segments[-1][1]))


def _first_referrals(year: int):
    """(subquery of the denominator's referrals, SQL expression for "met") for `year`."""
    start = _utc_start(dt.date(year, 1, 1))
    cutoff = _utc_start(dt.date(year, *REFERRAL_CUTOFF) + dt.timedelta(days=1))
    year_end = _utc_start(dt.date(year + 1, 1, 1))
    made = (Referral.direction == "transferring") & (Referral.status != "cancelled") & \
        (Referral.created_at >= start) & (Referral.created_at < cutoff)
    ranked = (Referral
              .select(Referral.id.alias("rid"),
                      fn.ROW_NUMBER().over(partition_by=[Referral.patient],
                                           order_by=[Referral.created_at, Referral.id]).alias("n"))
              .where(made)
              .alias("ranked"))
    visit = (Encounter.select(SQL("1"))
             .where(Encounter.patient == Referral.patient,
                    Encounter.type_code.in_(ELIGIBLE_ENCOUNTER_CODES),
                    Encounter.start >= start, Encounter.start < year_end))
    referred_on = _local_date(Referral.created_at, start, cutoff)
    met = (Referral.report_received_on.is_null(False)
           & (Referral.report_received_on >= referred_on)
           & (Referral.report_received_on <= dt.date(year, 12, 31)))
    where = (ranked.c.n == 1) & fn.EXISTS(visit)
    return ranked, where, met, referred_on


def cms50_report(year: int) -> Cms50Report:
    """The measure for `year`: figures and the referrals behind the gap (see the module docstring)."""
    check_year(year)
    today = local_today()
    ranked, where, met, referred_on = _first_referrals(year)
    counts = (Referral
              .select(fn.COUNT(Referral.id), fn.COALESCE(fn.SUM(Case(None, [(met, 1)], 0)), 0))
              .join(ranked, on=(Referral.id == ranked.c.rid))
              .where(where))
    denominator, numerator = counts.tuples().get()
    denominator, numerator = int(denominator or 0), int(numerator or 0)
    gaps_query = (Referral
                  .select(Referral.id, Patient.id, Patient.mrn, Patient.last_name, Patient.first_name,
                          Referral.created_at, Referral.channel, Referral.recipient, Referral.recipient_name,
                          Referral.status, Referral.report_received_on)
                  .join(ranked, on=(Referral.id == ranked.c.rid))
                  .switch(Referral).join(Patient)
                  .where(where & ~met)
                  .order_by(Referral.created_at, Referral.id))
    # Plain tuples: a busy practice has thousands of gaps, and building model instances would cost more than
    # the query itself.
    gaps = tuple(_gap(*row, today=today) for row in gaps_query.tuples())
    return Cms50Report(year=year, denominator=denominator, numerator=numerator,
                       rate=numerator / denominator if denominator else None, gaps=gaps, today=today)


def _gap(referral_id: int, patient_id: int, mrn: str, last_name: str, first_name: str, created_at: dt.datetime,
         channel: str, recipient: str, recipient_name: str, status: str, report: dt.date | None, *,
         today: dt.date) -> Cms50Gap:
    referred_on = clock.local(created_at).date()
    if report is None:
        kind = GAP_NO_REPORT
    elif report < referred_on:
        kind = GAP_REPORT_EARLY
    else:
        kind = GAP_REPORT_LATE
    return Cms50Gap(
        referral_id=referral_id, patient_id=patient_id, mrn=mrn, patient_name=f"{last_name}, {first_name}",
        referred_on=referred_on, recipient=display_recipient(channel, recipient), recipient_name=recipient_name,
        channel=channel, status=status, report_received_on=report,
        days_open=max(((report or today) - referred_on).days, 0), gap=kind,
    )
