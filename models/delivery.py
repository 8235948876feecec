"""What delivery notifications do to a referral (STANDARDS.md "Delivery notification").

`sent` becomes `delivered` only once the recipient's HISP has said both *processed* and *dispatched*; a
*failed* MDN or a DSN fails it with the reason; no *processed* within the timeout fails it as unconfirmed.
Exactly one final outcome is shown: a notification that arrives after the referral settled is kept as an
event (`mdn-late`) and changes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from models import clock
from models.audit import record_referral
from models.db import database
from models.referrals import Referral, ReferralEvent

KINDS = ("processed", "dispatched", "failed", "dsn-failed", "dsn-delayed", "dsn-delivered")
DEFAULT_TIMEOUT = dt.timedelta(minutes=60)
TIMEOUT_REASON = "no delivery confirmation: the recipient's system did not confirm receipt within {minutes} minutes"


@dataclass(frozen=True)
class NotificationOutcome:
    referral_id: int | None
    status: str  # the referral's status afterwards ("" when no referral matched)
    effect: str  # delivered | failed | recorded | late | duplicate | unmatched


def _seen(referral_id: int, kind: str) -> bool:
    return ReferralEvent.select().where(ReferralEvent.referral == referral_id,
                                        ReferralEvent.kind == f"mdn-{kind}").exists()


def record_notification(original_message_id: str, kind: str, *, sender: str = "", detail: str = "",
                        at: dt.datetime | None = None) -> NotificationOutcome:
    """Apply one MDN/DSN about the message we sent as `original_message_id`."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    at = at or clock.now()
    wanted = original_message_id.strip()
    if wanted and not wanted.startswith("<"):
        wanted = f"<{wanted}>"
    referral = Referral.get_or_none(Referral.message_id == wanted) if wanted else None
    if referral is None:
        return NotificationOutcome(None, "", "unmatched")
    words = {"processed": "processed by the recipient's system", "dispatched": "delivered to the recipient",
             "failed": "the recipient's system could not deliver it", "dsn-failed": "delivery failed",
             "dsn-delayed": "delivery is delayed",
             "dsn-delivered": "relayed by a mail server on the way"}[kind]
    text = f"{words}" + (f" ({sender})" if sender else "") + (f": {detail}" if detail else "")
    with database.atomic():
        referral = Referral.get_by_id(referral.id)
        if kind in ("processed", "dispatched") and _seen(referral.id, kind):
            return NotificationOutcome(referral.id, referral.status, "duplicate")
        if referral.status not in ("sending", "sent"):
            ReferralEvent.create(referral=referral.id, at=at, kind="mdn-late", detail=f"{kind}: {text}")
            return NotificationOutcome(referral.id, referral.status, "late")
        if kind in ("dsn-delayed", "dsn-delivered"):  # news on the way, not an outcome
            ReferralEvent.create(referral=referral.id, at=at, kind=kind, detail=text)
            return NotificationOutcome(referral.id, referral.status, "recorded")
        if kind in ("failed", "dsn-failed"):
            reason = f"not delivered: {detail or words}"
            Referral.update(status="failed", status_reason=reason).where(Referral.id == referral.id).execute()
            ReferralEvent.create(referral=referral.id, at=at, kind=f"mdn-{kind}" if kind == "failed" else kind,
                                 detail=text)
            _audit(at, referral.id, kind)
            return NotificationOutcome(referral.id, "failed", "failed")
        ReferralEvent.create(referral=referral.id, at=at, kind=f"mdn-{kind}", detail=text)
        other = "dispatched" if kind == "processed" else "processed"
        if _seen(referral.id, other):
            Referral.update(status="delivered", delivered_at=at, status_reason="").where(
                Referral.id == referral.id).execute()
            ReferralEvent.create(referral=referral.id, at=at, kind="delivered",
                                 detail="processed and dispatched notifications received")
            _audit(at, referral.id, "delivered")
            return NotificationOutcome(referral.id, "delivered", "delivered")
        return NotificationOutcome(referral.id, referral.status, "recorded")


def _audit(at: dt.datetime, referral_id: int, what: str) -> None:
    record_referral(f"referral.{what}", referral_id, outcome="ok" if what == "delivered" else "failed",
                    detail="delivery notification")


def fail_unconfirmed(timeout: dt.timedelta = DEFAULT_TIMEOUT, channel: str = "direct") -> list[int]:
    """Referrals sent longer than `timeout` ago without a *processed* notification become failed."""
    now = clock.now()
    minutes = int(timeout.total_seconds() // 60)
    confirmed = ReferralEvent.select(ReferralEvent.referral).where(ReferralEvent.kind == "mdn-processed")
    stale = [r.id for r in Referral.select(Referral.id).where(
        Referral.channel == channel, Referral.status == "sent", Referral.sent_at < now - timeout,
        Referral.id.not_in(confirmed))]
    failed = []
    for referral_id in stale:
        with database.atomic():
            moved = (Referral.update(status="failed", status_reason=TIMEOUT_REASON.format(minutes=minutes))
                     .where(Referral.id == referral_id, Referral.status == "sent").execute())
            if moved:
                ReferralEvent.create(referral=referral_id, at=now, kind="failed",
                                     detail=TIMEOUT_REASON.format(minutes=minutes))
                _audit(now, referral_id, "unconfirmed")
                failed.append(referral_id)
    return failed
