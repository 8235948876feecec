"""The outbox: transport workers claim due jobs, and record what became of each attempt.

A claim is a guarded UPDATE (state and lease in the WHERE clause), so two workers on one database never both
take a job, and a worker that dies mid-send leaves a lease that runs out: the job is claimed again and the
message resent with the Message-ID it was given when the referral was made. Every step is a ReferralEvent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

from peewee import fn

from models import clock
from models.db import database, is_sqlite
from models.referrals import OutboxJob, Referral, ReferralEvent

LEASE = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    referral_id: int
    channel: str
    attempt: int
    worker: str
    kind: str = "referral"  # referral | mdn
    external_id: str = ""  # set when a provider already has it: this claim is to ask how it went
    payload: bytes | None = None

    @property
    def polling(self) -> bool:
        return bool(self.external_id)


class LeaseLost(Exception):
    """The job is no longer this worker's (its lease ran out and another worker took it)."""


def _due(now: dt.datetime):
    return (((OutboxJob.state.in_(("pending", "waiting"))) & (OutboxJob.due_at <= now))
            | ((OutboxJob.state == "claimed") & (OutboxJob.lease_until < now)))


def _line_busy():
    """A fax waits while another fax to the same number is being sent or awaits its outcome: one call to a
    fax machine at a time, so a busy line is not made busier by our own second packet."""
    other = OutboxJob.alias()
    return ((OutboxJob.channel == "efax") & (OutboxJob.recipient != "") & (OutboxJob.external_id == "")
            & fn.EXISTS(other.select(other.id).where(
                other.channel == "efax", other.recipient == OutboxJob.recipient, other.id != OutboxJob.id,
                other.state.in_(("claimed", "waiting")))))


def _mdn_waits():
    """An MDN waits while an earlier MDN about the same received message is still to be sent, so *processed*
    always leaves before *dispatched* or *failed* (a batch is sent concurrently, and the order matters to the
    sender's delivery tracking)."""
    earlier = OutboxJob.alias()
    return fn.EXISTS(earlier.select(earlier.id).where(
        earlier.inbound == OutboxJob.inbound, earlier.kind == "mdn", earlier.id < OutboxJob.id,
        earlier.state.in_(("pending", "claimed"))))


def claim_due_jobs(worker: str, channels: Iterable[str], *, limit: int = 20,
                   lease: dt.timedelta = LEASE) -> list[ClaimedJob]:
    """Take up to `limit` due jobs for `channels`; the referral of each becomes `sending`."""
    now = clock.now()
    channels = tuple(channels)
    query = (OutboxJob.select(OutboxJob.id)
             .where(OutboxJob.channel.in_(channels), _due(now), ~_mdn_waits(), ~_line_busy())
             .order_by(OutboxJob.due_at, OutboxJob.id).limit(limit))
    if is_sqlite():  # one writer at a time: the guarded UPDATE in _take settles any race
        # Read every candidate first: while a SELECT is still being stepped its read transaction stays open, and
        # _take's write transaction could then not wait for the lock ("database is locked" at once).
        ids = [job_id for (job_id,) in query.tuples()]
        return [job for job_id in ids
                if (job := _take(job_id, worker, now, lease, _due(now) & ~_line_busy())) is not None]
    # PostgreSQL, workers on several hosts: each locks the rows it takes and skips the ones others hold.
    with database.atomic():
        ids = [job_id for (job_id,) in query.for_update("FOR UPDATE SKIP LOCKED").tuples()]
        return [job for job_id in ids
                if (job := _take(job_id, worker, now, lease, _due(now) & ~_line_busy())) is not None]


def claim_job(worker: str, job_id: int, *, lease: dt.timedelta = LEASE) -> ClaimedJob | None:
    """Take one job now, due or not (a print the user is waiting for); None if it is not pending."""
    return _take(job_id, worker, clock.now(), lease, (OutboxJob.state == "pending") & ~_line_busy())


def claim_by_external_id(worker: str, channel: str, external_id: str, *,
                         lease: dt.timedelta = LEASE) -> ClaimedJob | None:
    """Take the job a provider's report is about (it is `waiting`); None if no such job waits, e.g. a report
    that came twice, or for a fax that was already settled."""
    if not external_id:
        return None
    row = (OutboxJob.select(OutboxJob.id)
           .where(OutboxJob.channel == channel, OutboxJob.external_id == external_id).first())
    if row is None:
        return None
    return _take(row.id, worker, clock.now(), lease, OutboxJob.state == "waiting")


def _take(job_id: int, worker: str, now: dt.datetime, lease: dt.timedelta, guard) -> ClaimedJob | None:
    """The guarded UPDATE that makes a job this worker's; the referral becomes `sending` unless the job only
    asks a provider how an earlier hand-over went (then it stays `sent`)."""
    with database.atomic():
        taken = (OutboxJob.update(state="claimed", claimed_by=worker, lease_until=now + lease,
                                  attempts=OutboxJob.attempts + 1)
                 .where(OutboxJob.id == job_id, guard).execute())
        if not taken:
            return None  # another worker was quicker, or it is not due after all
        job = OutboxJob.get_by_id(job_id)
        claim = ClaimedJob(job.id, job.referral_id or 0, job.channel, job.attempts, worker, job.kind,
                           job.external_id, job.payload)
        if job.kind != "referral" or claim.polling:  # an MDN, or a fax whose outcome is asked for
            return claim
        moved = (Referral.update(status="sending")
                 .where(Referral.id == job.referral_id, Referral.status.in_(("queued", "sending"))).execute())
        if not moved:  # cancelled, or settled by an earlier attempt: nothing to send
            OutboxJob.update(state="done", lease_until=None).where(OutboxJob.id == job_id).execute()
            return None
        ReferralEvent.create(referral=job.referral_id, at=now, kind="sending", detail=f"attempt {job.attempts}")
    return claim


def _release(job: ClaimedJob, **changes) -> None:
    updated = (OutboxJob.update(lease_until=None, **changes)
               .where(OutboxJob.id == job.id, OutboxJob.state == "claimed", OutboxJob.claimed_by == job.worker)
               .execute())
    if not updated:
        raise LeaseLost(f"outbox job {job.id} is no longer held by {job.worker}")


def job_sent(job: ClaimedJob, detail: str) -> None:
    """The server accepted the message: the referral is `sent`; delivery notifications take it further."""
    now = clock.now()
    with database.atomic():
        _release(job, state="done", last_error="")
        if job.kind == "referral":
            Referral.update(status="sent", sent_at=now, status_reason="").where(
                Referral.id == job.referral_id, Referral.status == "sending").execute()
            ReferralEvent.create(referral=job.referral_id, at=now, kind="sent", detail=detail)


def job_waiting(job: ClaimedJob, external_id: str, detail: str | None, poll_in: float,
                payload: bytes | None = None) -> dt.datetime:
    """Handed to a provider that reports later (a fax): `waiting`, asked again after `poll_in` seconds. The
    first hand-over makes the referral `sent`; a poll that learnt nothing new records nothing (detail None)."""
    now = clock.now()
    due = now + dt.timedelta(seconds=poll_in)
    changes = {"payload": payload} if payload is not None else {}
    with database.atomic():
        _release(job, state="waiting", external_id=external_id, due_at=due, last_error="", **changes)
        if not job.polling:
            Referral.update(status="sent", sent_at=now, status_reason="").where(
                Referral.id == job.referral_id, Referral.status == "sending").execute()
        if detail is not None:
            ReferralEvent.create(referral=job.referral_id, at=now, kind="sent" if not job.polling else "status",
                                 detail=detail)
    return due


def job_delivered(job: ClaimedJob, detail: str) -> None:
    """The provider confirms delivery (a fax went through, a packet was printed or saved): `delivered`."""
    now = clock.now()
    with database.atomic():
        _release(job, state="done", last_error="")
        Referral.update(status="delivered", delivered_at=now, status_reason="").where(
            Referral.id == job.referral_id, Referral.status.in_(("sending", "sent"))).execute()
        ReferralEvent.create(referral=job.referral_id, at=now, kind="delivered", detail=detail)


def job_retry(job: ClaimedJob, error: str, delay: float, payload: bytes | None = None) -> dt.datetime:
    """A passing failure (server down, 4xx, a busy fax line): back to `queued`, with the reason and the time of
    the next try."""
    now = clock.now()
    due = now + dt.timedelta(seconds=delay)
    changes = {"payload": payload} if payload is not None else {}
    with database.atomic():
        _release(job, state="pending", due_at=due, last_error=error, external_id="", **changes)
        if job.kind == "referral":
            Referral.update(status="queued", status_reason=error).where(
                Referral.id == job.referral_id, Referral.status.in_(("sending", "sent"))).execute()
            ReferralEvent.create(referral=job.referral_id, at=now, kind="retry",
                                 detail=f"attempt {job.attempt} failed: {error}; next attempt "
                                        f"{due:%Y-%m-%d %H:%M} UTC")
    return due


def job_failed(job: ClaimedJob, reason: str) -> None:
    """A failure that retrying cannot fix (5xx, untrusted recipient): the referral is `failed`, with why."""
    now = clock.now()
    with database.atomic():
        _release(job, state="failed", last_error=reason)
        if job.kind == "referral":
            Referral.update(status="failed", status_reason=reason).where(
                Referral.id == job.referral_id, Referral.status.in_(("sending", "sent"))).execute()
            ReferralEvent.create(referral=job.referral_id, at=now, kind="failed", detail=reason)


def pending_count(channels: Iterable[str]) -> int:
    return OutboxJob.select().where(OutboxJob.channel.in_(tuple(channels)),
                                    OutboxJob.state.in_(("pending", "claimed", "waiting"))).count()


def next_due(channels: Iterable[str]) -> dt.datetime | None:
    """When the next pending job becomes due (for a worker deciding how long to sleep)."""
    row = (OutboxJob.select(OutboxJob.due_at)
           .where(OutboxJob.channel.in_(tuple(channels)), OutboxJob.state.in_(("pending", "waiting")))
           .order_by(OutboxJob.due_at).first())
    return row.due_at if row else None


def queue_mdn(inbound_id: int, recipient: str, payload: bytes) -> OutboxJob:
    """An MDN to send (its inner message composed already, so a retry sends the same one), through the same
    outbox as referrals: durable and retried. Call inside the transaction that records what it reports."""
    now = clock.now()
    return OutboxJob.create(kind="mdn", inbound=inbound_id, recipient=recipient, payload=payload, channel="direct",
                            due_at=now, created_at=now)


def pending_job_id(referral_id: int) -> int | None:
    """The referral's job still waiting for a worker, if any."""
    row = (OutboxJob.select(OutboxJob.id)
           .where(OutboxJob.referral == referral_id, OutboxJob.kind == "referral", OutboxJob.state == "pending")
           .first())
    return row.id if row else None
