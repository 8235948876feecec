"""One fax referral through the outbox: hand the stored packet PDF to the provider, then follow it until the
provider says it went through or why not.

A job is claimed to send (the referral becomes `sent` once the provider has the fax, the job `waiting`) and
claimed again to ask how it went (Phaxio is polled; a gateway's emailed report is handed in through
`settle_report`). A busy line or no answer is dialled again after the `[efax] retry_delays`; a bad number or
a document the provider cannot convert fails at once with the provider's reason. Every attempt is a
ReferralEvent. The models keep one fax per number in flight (models/outbox.py).

Audited: each hand-over to the provider (`referral.fax`: sent, retry or failed, with the attempt), and the
final word about the fax — `referral.delivered` (ok) or `referral.failed`, as a Direct referral's notification is —
by the system actor that learnt it: the worker polling the provider (WORKER) or the inbound pipeline taking
the gateway's emailed report (transports/efax/reports.py). Written in the transaction that settles the job,
so a delivered referral never lacks its row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass
from collections.abc import Mapping

from models import clock
from models.addresses import fax_e164, format_fax
from models.audit import record_referral
from models.db import database
from models.documents import referral_files
from models.outbox import ClaimedJob, job_delivered, job_failed, job_retry, job_waiting
from models.practice import Practice
from models.referrals import Referral
from transports.efax.base import FaxError, FaxProvider, FaxRequest, FaxStatus, IN_PROGRESS, QUEUED, SUCCESS

#: The audit log's name for the outbox worker, which sends faxes and asks providers how they went.
WORKER = "worker"


@dataclass(frozen=True)
class FaxPolicy:
    """`[efax]` timing: the pause before each redial (so len + 1 sends at most), how often a provider is asked,
    and how long to wait for a final word before calling the fax failed."""

    retry_delays: tuple[float, ...] = (120.0, 300.0, 900.0)
    poll_seconds: float = 20.0
    report_timeout: dt.timedelta = dt.timedelta(minutes=60)

    @property
    def max_sends(self) -> int:
        return len(self.retry_delays) + 1

    @classmethod
    def from_config(cls, section: Mapping) -> "FaxPolicy":
        delays = section.get("retry_delays", cls.retry_delays)
        if not isinstance(delays, (list, tuple)) or not all(
                isinstance(d, (int, float)) and not isinstance(d, bool) and d >= 0 for d in delays):
            raise ValueError("[efax] retry_delays must be a list of seconds, e.g. [120, 300, 900]")
        poll = section.get("poll_seconds", cls.poll_seconds)
        timeout = section.get("report_timeout_minutes", 60)
        for key, value in (("poll_seconds", poll), ("report_timeout_minutes", timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"[efax] {key} must be a number above 0")
        return cls(tuple(float(d) for d in delays), float(poll), dt.timedelta(minutes=float(timeout)))


@dataclass
class FaxState:
    """What the job remembers between claims (OutboxJob.payload): sends so far, when the last one was handed
    over, and the last state reported (so an unchanged poll records nothing)."""

    sends: int = 0
    sent_at: str = ""
    last_state: str = ""

    @classmethod
    def load(cls, payload: bytes | None) -> "FaxState":
        try:
            data = json.loads(bytes(payload or b"{}"))  # PostgreSQL hands a BYTEA back as a memoryview
        except ValueError:
            data = {}
        return cls(int(data.get("sends", 0)), str(data.get("sent_at", "")), str(data.get("last_state", "")))

    def dump(self) -> bytes:
        return json.dumps({"sends": self.sends, "sent_at": self.sent_at, "last_state": self.last_state}).encode()


def _request(referral_id: int, attempt: int, job_id: int) -> FaxRequest:
    referral = Referral.get_by_id(referral_id)
    files = referral_files(referral_id, ("pdf",))
    if not files:
        raise FaxError("this referral has no PDF packet to fax (it was made before eFax existed): make it again",
                       transient=False)
    practice = Practice.select().first()
    header = " ".join(part for part in (practice.name if practice else "",
                                        f"Fax {format_fax(practice.fax)}" if practice and practice.fax else "")
                      if part)
    domain = referral.message_id.strip("<>").split("@")[-1] if referral.message_id else "referdesk.invalid"
    # The provider's copy is named by referral number only: its name travels in mail headers and provider logs.
    return FaxRequest(to=fax_e164(referral.recipient), pdf=bytes(files[0].content),
                      filename=f"referral-{referral.id}.pdf",
                      header_text=header[:50], subject=referral.subject,
                      reference=f"<fax-{job_id}-{attempt}-{referral.message_id.strip('<>').split('@')[0][:12]}"
                                f"@{domain}>")


async def run_fax_job(job: ClaimedJob, provider: FaxProvider, policy: FaxPolicy) -> str:
    """Send or follow up one claimed fax job; returns what happened in a few words (for the worker's log)."""
    state = FaxState.load(job.payload)
    if job.polling:
        try:
            status = await provider.status(job.external_id)
        except FaxError as exc:
            if exc.transient:
                await asyncio.to_thread(job_waiting, job, job.external_id, None, policy.poll_seconds)
                return f"status unknown for now ({exc}); asking again"
            await asyncio.to_thread(_failed, job, f"{provider.name} cannot say how the fax went: {exc}",
                                    f"via {provider.name}; no status", WORKER)
            return "failed"
        return await asyncio.to_thread(settle, job, status, provider.name, policy, state)
    attempt = state.sends + 1
    outcome = await _send(job, provider, policy, state, attempt)
    await asyncio.to_thread(record_referral, "referral.fax", job.referral_id, username=WORKER, outcome=outcome,
                            detail=f"attempt {attempt} of {policy.max_sends} via {provider.name}")
    return outcome


async def _send(job: ClaimedJob, provider: FaxProvider, policy: FaxPolicy, state: FaxState, attempt: int) -> str:
    """Hand the fax to the provider: sent (now waiting for its outcome), retry (a passing failure) or failed."""
    try:
        request = await asyncio.to_thread(_request, job.referral_id, attempt, job.id)
        fax_id = await provider.send(request)
    except FaxError as exc:
        if exc.transient:
            from transports.direct.smtp_send import retry_delay

            await asyncio.to_thread(job_retry, job, f"{provider.name}: {exc}", retry_delay(job.attempt))
            return "retry"
        await asyncio.to_thread(job_failed, job, f"{provider.name} refused the fax: {exc}")
        return "failed"
    state.sends, state.sent_at, state.last_state = attempt, clock.now().isoformat(), QUEUED
    await asyncio.to_thread(
        job_waiting, job, fax_id,
        f"fax handed to {provider.name} (id {fax_id}), attempt {attempt} of {policy.max_sends}",
        policy.poll_seconds, state.dump())
    return "sent"


def _failed(job: ClaimedJob, reason: str, detail: str, actor: str) -> None:
    """Fail the job and record the fax's final result, together."""
    with database.atomic():
        job_failed(job, reason)
        record_referral("referral.failed", job.referral_id, username=actor, outcome="failed", detail=detail)


def settle(job: ClaimedJob, status: FaxStatus, provider: str, policy: FaxPolicy,
           state: FaxState | None = None, *, actor: str = WORKER) -> str:
    """Act on what the provider said about the fax `job` handed over: delivered, dial again, fail, or wait.
    Synchronous (database work only): the poller runs it in a thread, the inbound pipeline directly. A final
    result is audited as done by `actor` (the poller: WORKER; a gateway report: the inbound pipeline's)."""
    state = state or FaxState.load(job.payload)
    pages = f", {status.pages} page(s)" if status.pages else ""
    # Ids and codes only: the provider's reason can quote the number dialled.
    audit = f"fax via {provider}; attempt {state.sends} of {policy.max_sends}"
    if status.state == SUCCESS:
        with database.atomic():
            job_delivered(job, f"fax delivered by {provider} (id {job.external_id}{pages}, attempt {state.sends})")
            record_referral("referral.delivered", job.referral_id, username=actor, outcome="ok",
                            detail=audit + (f"; pages={status.pages}" if status.pages else ""))
        return "delivered"
    if not status.final:
        sent_at = dt.datetime.fromisoformat(state.sent_at) if state.sent_at else clock.now()
        if clock.now() - sent_at > policy.report_timeout:
            minutes = int(policy.report_timeout.total_seconds() // 60)
            _failed(job, f"no delivery report from {provider} within {minutes} minutes (fax id "
                         f"{job.external_id}): check with the recipient before sending again",
                    f"{audit}; no report within {minutes} minutes", actor)
            return "failed"
        detail = None
        if status.state != state.last_state:
            detail = "fax is being sent" if status.state == IN_PROGRESS else f"fax {status.state}"
            state.last_state = status.state
        job_waiting(job, job.external_id, detail, policy.poll_seconds, state.dump())
        return "waiting"
    reason = status.reason or status.state
    if status.transient and state.sends < policy.max_sends:
        delay = policy.retry_delays[state.sends - 1] if state.sends >= 1 else policy.retry_delays[0]
        state.last_state = ""
        job_retry(job, f"fax attempt {state.sends} of {policy.max_sends} not delivered: {reason}", delay,
                  state.dump())
        return "retry"
    if status.transient:
        reason = f"not delivered after {state.sends} attempts: {reason}"
    _failed(job, f"fax failed: {reason}", f"{audit}; status={status.state}", actor)
    return "failed"
