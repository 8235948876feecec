"""Overdue referrals: ones we sent that reached (or went to) the consultant, yet no report came back within the
practice's limit (`[referrals] overdue_days`, 30 by default).

A referral is overdue when it is transferring, still "sent" or "delivered" (so no report is recorded, and it
neither failed nor was cancelled), and more than `days` whole days have passed since the local day it was made.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from models.patients import Patient
from models.referral_history import (
    _ROW_FIELDS,
    DEFAULT_LIMIT,
    HistoryError,
    ReferralRow,
    _row,
    _utc_start,
    local_today,
)
from models.referrals import Referral

DEFAULT_OVERDUE_DAYS = 30
#: Statuses that wait for the consultant's report.
AWAITING_REPORT = ("sent", "delivered")
MAX_OVERDUE_DAYS = 3650


class OverdueSettingError(ValueError):
    """`[referrals] overdue_days` is not a usable number of days; the message says what to write."""


def overdue_days_setting(config: Any) -> int:
    """`[referrals] overdue_days` from the configuration (None: the default)."""
    section = config.section("referrals") if config is not None else {}
    value = section.get("overdue_days", DEFAULT_OVERDUE_DAYS)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OVERDUE_DAYS:
        raise OverdueSettingError(f"[referrals] overdue_days must be a whole number of days from 1 to "
                                  f"{MAX_OVERDUE_DAYS}, not {value!r}")
    return value


def days_overdue(row: ReferralRow, days: int, today: dt.date | None = None) -> int | None:
    """How many days `row` has waited for its report when that is more than `days`; None when it is not
    overdue (a report came, it is not ours to chase, it failed or was cancelled, or it is recent)."""
    if row.direction != "transferring" or row.status not in AWAITING_REPORT or row.report_received_on:
        return None
    from models import clock

    waited = ((today or local_today()) - clock.local(row.created_at).date()).days
    return waited if waited > days else None


def overdue_referrals(days: int, today: dt.date | None = None, *, patient_id: int | None = None,
                      since: dt.date | None = None, until: dt.date | None = None,
                      limit: int = DEFAULT_LIMIT) -> list[ReferralRow]:
    """Overdue referrals newest first (the order of the referral history). `since`/`until` narrow by the local
    day they were made, both included, as in `list_referrals`."""
    if days < 0:
        raise HistoryError("the number of days cannot be negative")
    if since and until and since > until:
        raise HistoryError(f"the From date {since:%m/%d/%Y} is after the To date {until:%m/%d/%Y}")
    if limit < 1:
        raise HistoryError("limit must be at least 1")
    today = today or local_today()
    # Made on or before today - days - 1: then more than `days` whole days have passed.
    before = _utc_start(today - dt.timedelta(days=days))
    query = (Referral.select(*_ROW_FIELDS).join(Patient)
             .where(Referral.direction == "transferring", Referral.status.in_(AWAITING_REPORT),
                    Referral.report_received_on.is_null(), Referral.created_at < before))
    if since is not None:
        query = query.where(Referral.created_at >= _utc_start(since))
    if until is not None:
        query = query.where(Referral.created_at < _utc_start(until + dt.timedelta(days=1)))
    if patient_id is not None:
        query = query.where(Referral.patient == patient_id)
    query = query.order_by(Referral.created_at.desc(), Referral.id.desc()).limit(limit)
    return [_row(ref) for ref in query]
