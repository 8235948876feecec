"""The outbox worker: claims due jobs, sends them through their channel, records what happened, and fails
Direct referrals whose delivery was never confirmed.

One worker per process; several may share a database (claims are atomic, models/outbox.py). `run_once`
drains what is due (for `referdesk worker --once` and tests); `run` loops until told to stop, sleeping until
the next job is due or a poll interval passes, so a referral queued by another process goes out promptly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Mapping

from models.config import Config
from models.delivery import fail_unconfirmed
from models.outbox import (LEASE, ClaimedJob, LeaseLost, claim_due_jobs, job_failed, job_retry, job_sent,
                           pending_count)
from transports.direct.smtp_send import retry_delay

MAX_ATTEMPTS = 40  # with delays capped at 24 h: several days of a HISP being down before giving up
WORKER = "worker"  # the audit log's actor for what the outbox does


def _settle_direct(job: ClaimedJob, state: str, detail: str, delay: float = 0.0) -> None:
    """Record a Direct hand-over's outcome and its audit row (`referral.direct`: ok, retry or failed; the
    attempt number only, never the server's words) in one transaction: both or neither."""
    from models.audit import record_referral
    from models.db import database

    with database.atomic():
        if state == "sent":
            job_sent(job, detail)
        elif state == "retry":
            job_retry(job, detail, delay)
        else:
            job_failed(job, detail)
        if job.kind == "referral":
            record_referral("referral.direct", job.referral_id, username=WORKER,
                            outcome="ok" if state == "sent" else state, detail=f"attempt {job.attempt}")


@dataclass
class RunSummary:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    unconfirmed: int = 0
    mdns: int = 0  # notifications we sent about messages we received
    not_ready: str = ""  # why Direct jobs were left queued (no set-up, unreadable certificate)
    details: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"sent": self.sent, "retried": self.retried, "failed": self.failed,
                "unconfirmed": self.unconfirmed, "mdns": self.mdns, "not_ready": self.not_ready}


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class OutboxWorker:
    """Sends referrals by Direct, eFax and print, and follows faxes until their provider settles them."""

    channels = ("direct", "efax", "print")
    # Messages in flight at once: sealing one (CPU, in a thread) overlaps another's TLS and SMTP round trips.
    # Only their DATA-and-record steps take turns (HandOverGate), so a crash re-sends at most one message.
    concurrency = 6

    def __init__(self, config: Config, *, env: Mapping[str, str] | None = None, name: str | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.env = os.environ if env is None else env
        self.name = name or worker_name()
        self.rng = rng or random.Random()
        self._direct = None
        self._fax_setup = None
        self._recorder: ThreadPoolExecutor | None = None
        self.last_error = ""  # why the last round broke off, for whoever shows the worker's state

    @property
    def mdn_timeout(self) -> dt.timedelta:
        minutes = self.config.section("direct").get("mdn_timeout_minutes", 60)
        return dt.timedelta(minutes=float(minutes))

    @property
    def lease(self) -> dt.timedelta:
        """How long a claim holds (`[worker] lease_seconds`, default 10 min): a worker killed mid-send leaves its
        jobs to the next worker once this runs out, so it must outlast the slowest batch this worker sends."""
        try:
            seconds = float(self.config.section("worker").get("lease_seconds", 0))
        except (TypeError, ValueError):
            seconds = 0
        return dt.timedelta(seconds=seconds) if seconds > 0 else LEASE

    def _direct_context(self):
        from transports.direct.sender import DirectContext

        if self._direct is None:
            self._direct = DirectContext.from_config(self.config, self.env)
        return self._direct

    def _fax(self):
        """The fax provider and policy, made once per worker; FaxNotReady when eFax is not set up."""
        from transports.efax.fax_job import FaxPolicy
        from transports.efax.providers import FaxNotReady, provider_from_config

        if self._fax_setup is None:
            provider = provider_from_config(self.config, self.env)
            try:
                policy = FaxPolicy.from_config(self.config.section("efax"))
            except ValueError as exc:
                raise FaxNotReady(str(exc)) from exc
            self._fax_setup = (provider, policy)
        return self._fax_setup

    async def _ready_channels(self, summary: RunSummary) -> dict[str, object]:
        """Each channel that can send now, with what it sends with; the others' jobs stay queued, and why is
        said in `summary.not_ready` (for eFax only when a fax is waiting, as most sites never fax)."""
        from transports.direct.sender import DirectNotReady
        from transports.efax.providers import FaxNotReady

        ready: dict[str, object] = {"print": None}
        reasons = []
        try:
            ready["direct"] = await asyncio.to_thread(self._direct_context)
        except DirectNotReady as exc:
            reasons.append(str(exc))
        try:
            ready["efax"] = self._fax()
        except FaxNotReady as exc:
            if await asyncio.to_thread(pending_count, ("efax",)):
                reasons.append(str(exc))
        summary.not_ready = "; ".join(reasons)
        return ready

    async def run_once(self) -> RunSummary:
        summary = RunSummary()
        summary.unconfirmed = len(await asyncio.to_thread(fail_unconfirmed, self.mdn_timeout))
        ready = await self._ready_channels(summary)
        while True:
            jobs = await asyncio.to_thread(claim_due_jobs, self.name, tuple(ready), lease=self.lease)
            if not jobs:
                return summary
            direct = [job for job in jobs if job.channel == "direct"]
            others = [job for job in jobs if job.channel != "direct"]
            work = [self._deliver(job, ready[job.channel], summary) for job in others]
            if direct:
                work.append(self._send_batch(direct, ready["direct"], summary))
            await asyncio.gather(*work)

    async def _deliver(self, job: ClaimedJob, setup, summary: RunSummary) -> None:
        """A fax (send, or ask how it went) or a print job; each records its own outcome."""
        from transports.efax.fax_job import run_fax_job
        from transports.print_job import run_print_job

        try:
            if job.channel == "efax":
                provider, policy = setup
                effect = await run_fax_job(job, provider, policy)
            else:
                effect, _ = await asyncio.to_thread(run_print_job, job)
        except LeaseLost:
            return
        except Exception as exc:  # a bug must not kill the worker or strand the job: retry it, say why
            effect = "retry"
            try:
                await asyncio.to_thread(job_retry, job, f"internal error ({type(exc).__name__}: {exc}); will retry",
                                        retry_delay(job.attempt, rng=self.rng))
            except LeaseLost:
                return
        if effect in ("sent", "delivered"):
            summary.sent += 1
        elif effect == "retry":
            summary.retried += 1
        elif effect == "failed":
            summary.failed += 1
        summary.details.append(f"referral {job.referral_id} ({job.channel}): {effect}")

    async def _send_batch(self, jobs: list[ClaimedJob], context, summary: RunSummary) -> None:
        """Up to `concurrency` messages in flight, each on one of as many SMTP sessions kept open for the batch
        (one TLS handshake and login per session, not per message)."""
        from transports.direct.smtp_send import HandOverGate, SmtpConnection

        gate = HandOverGate()  # a crash re-sends at most one message of the batch (see HandOverGate)
        sessions: asyncio.Queue = asyncio.Queue()
        for _ in range(min(self.concurrency, len(jobs))):
            sessions.put_nowait(SmtpConnection(context.smtp, context.env, gate=gate))

        async def send(job: ClaimedJob) -> None:
            connection = await sessions.get()
            try:
                await self._send(job, context, summary, connection)
            finally:
                connection.settled()  # after _send has recorded the outcome
                sessions.put_nowait(connection)

        try:
            await asyncio.gather(*(send(job) for job in jobs))
        finally:
            while not sessions.empty():
                await sessions.get_nowait().close()

    async def _record(self, outcome, *args) -> None:
        """Write a send's outcome on a thread kept for that: a message the HISP has accepted is recorded at once,
        not after the sealing and certificate checks queued on the shared threads (every moment between the
        HISP's 250 and this commit is one in which a crash means the message goes out twice)."""
        if self._recorder is None:
            self._recorder = ThreadPoolExecutor(1, thread_name_prefix="outbox-record")
        await asyncio.get_running_loop().run_in_executor(self._recorder, outcome, *args)

    async def _send(self, job: ClaimedJob, context, summary: RunSummary, connection=None) -> None:
        from transports.direct.sender import send_mdn, send_referral

        try:
            if job.kind == "mdn":
                outcome = await send_mdn(job.id, context, connection)
            else:
                outcome = await send_referral(job.referral_id, context, connection)
        except Exception as exc:  # a bug must not kill the worker or strand the job: retry it, say why
            outcome_state, detail = "retry", f"internal error ({type(exc).__name__}: {exc}); will retry"
        else:
            outcome_state, detail = outcome.state, outcome.detail
        try:
            if outcome_state == "sent":
                await self._record(_settle_direct, job, "sent", detail)
                if job.kind == "mdn":
                    summary.mdns += 1
                else:
                    summary.sent += 1
            elif outcome_state == "retry" and job.attempt < MAX_ATTEMPTS:
                delay = retry_delay(job.attempt, rng=self.rng)
                await self._record(_settle_direct, job, "retry", detail, delay)
                summary.retried += 1
            else:
                if outcome_state == "retry":
                    detail = f"gave up after {job.attempt} attempts: {detail}"
                await self._record(_settle_direct, job, "failed", detail)
                summary.failed += 1
        except LeaseLost:
            return
        what = f"MDN job {job.id}" if job.kind == "mdn" else f"referral {job.referral_id}"
        summary.details.append(f"{what}: {outcome_state}: {detail}")

    async def run(self, stop: asyncio.Event, *, poll: float = 5.0, wake: asyncio.Event | None = None) -> None:
        """Work until `stop` is set; errors in one round are kept in `last_error` and never end the loop.
        Setting `wake` starts the next round at once (a referral was just queued)."""
        wake = wake or asyncio.Event()
        while not stop.is_set():
            wake.clear()
            try:
                summary = await self.run_once()
                self.last_error = summary.not_ready
            except Exception as exc:  # the database briefly locked or gone: say so, try again next round
                self.last_error = f"{type(exc).__name__}: {exc}"
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
            await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()


class BackgroundOutbox:
    """An outbox worker on its own thread and event loop, for a process whose main loop is busy (the TUI):
    `start()`, `kick()` after queueing a referral, `stop()` on exit. Database calls happen on that thread."""

    def __init__(self, worker: OutboxWorker, *, poll: float = 5.0) -> None:
        self.worker, self.poll = worker, poll
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="referdesk-outbox", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _main(self) -> None:
        from models.db import database

        async def body() -> None:
            self._stop, self._wake = asyncio.Event(), asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self.worker.run(self._stop, poll=self.poll, wake=self._wake)

        try:
            asyncio.run(body())
        finally:
            if not database.is_closed():
                database.close()

    def kick(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self, timeout: float = 10) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
