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
from models.db import database
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


class LeaseLost(Exception):
    """The job is no longer this worker's (its lease ran out and another worker took it)."""


def _due(now: dt.datetime):
    return (((OutboxJob.state == "pending") & (OutboxJob.due_at <= now))
            | ((OutboxJob.state == "claimed") & (OutboxJob.lease_until < now)))


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
    candidates = [row for row in (OutboxJob.select(OutboxJob.id)
                                  .where(OutboxJob.channel.in_(channels), _due(now), ~_mdn_waits())
                                  .order_by(OutboxJob.due_at, OutboxJob.id).limit(limit).tuples())]
    claimed = []
    for (job_id,) in candidates:
        with database.atomic():
            taken = (OutboxJob.update(state="claimed", claimed_by=worker, lease_until=now + lease,
                                      attempts=OutboxJob.attempts + 1)
                     .where(OutboxJob.id == job_id, _due(now)).execute())
            if not taken:
                continue  # another worker was quicker
            job = OutboxJob.get_by_id(job_id)
            if job.kind != "referral":  # an MDN: nothing of a referral to move
                claimed.append(ClaimedJob(job.id, 0, job.channel, job.attempts, worker, job.kind))
                continue
            moved = (Referral.update(status="sending")
                     .where(Referral.id == job.referral_id, Referral.status.in_(("queued", "sending"))).execute())
            if not moved:  # cancelled, or settled by an earlier attempt: nothing to send
                OutboxJob.update(state="done", lease_until=None).where(OutboxJob.id == job_id).execute()
                continue
            ReferralEvent.create(referral=job.referral_id, at=now, kind="sending",
                                 detail=f"attempt {job.attempts}")
        claimed.append(ClaimedJob(job.id, job.referral_id, job.channel, job.attempts, worker, job.kind))
    return claimed


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


def job_retry(job: ClaimedJob, error: str, delay: float) -> dt.datetime:
    """A passing failure (server down, 4xx): back to `queued`, with the reason and the time of the next try."""
    now = clock.now()
    due = now + dt.timedelta(seconds=delay)
    with database.atomic():
        _release(job, state="pending", due_at=due, last_error=error)
        if job.kind == "referral":
            Referral.update(status="queued", status_reason=error).where(
                Referral.id == job.referral_id, Referral.status == "sending").execute()
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
                Referral.id == job.referral_id, Referral.status == "sending").execute()
            ReferralEvent.create(referral=job.referral_id, at=now, kind="failed", detail=reason)


def pending_count(channels: Iterable[str]) -> int:
    return OutboxJob.select().where(OutboxJob.channel.in_(tuple(channels)),
                                    OutboxJob.state.in_(("pending", "claimed"))).count()


def next_due(channels: Iterable[str]) -> dt.datetime | None:
    """When the next pending job becomes due (for a worker deciding how long to sleep)."""
    row = (OutboxJob.select(OutboxJob.due_at)
           .where(OutboxJob.channel.in_(tuple(channels)), OutboxJob.state == "pending")
           .order_by(OutboxJob.due_at).first())
    return row.due_at if row else None


def queue_mdn(inbound_id: int, recipient: str, payload: bytes) -> OutboxJob:
    """An MDN to send (its inner message composed already, so a retry sends the same one), through the same
    outbox as referrals: durable and retried. Call inside the transaction that records what it reports."""
    now = clock.now()
    return OutboxJob.create(kind="mdn", inbound=inbound_id, recipient=recipient, payload=payload, channel="direct",
                            due_at=now, created_at=now)
