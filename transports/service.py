"""`referdesk worker` as one long-lived process: the outbox (with its MDN timeout clock), the inbound SMTP
listener when `[inbound] smtp_listen` is set, and IMAP polling when `[inbound] imap_url` is (ARCHITECTURE.md
"Workers"). Each part keeps going on its own: a listener that cannot bind or a HISP mailbox that refuses the
login is reported and retried, and never stops the outbox, nor the other way round.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Mapping

from models.config import Config
from transports.outbox import OutboxWorker

DEFAULT_IMAP_POLL_SECONDS = 60.0
RETRY_SECONDS = 60.0  # a listener that could not start tries again this often


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


def _seconds(value, default: float) -> float:
    """A positive number of seconds from the file, or the default for a missing or unusable one."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return default
    return seconds if seconds > 0 else default


class Service:
    """The parts configured for this site. `errors` holds each part's last error ("" once it works again);
    `report(line)` hears what starts and every change of a part's error (the command line prints them)."""

    def __init__(self, config: Config, *, report: Callable[[str], None] | None = None, poll: float = 5.0,
                 env: Mapping[str, str] | None = None, retry: float = RETRY_SECONDS, outbox: bool = True) -> None:
        """`outbox=False`: receiving only, for a process whose outbox runs elsewhere (the demo's app)."""
        self.config, self.poll, self.env, self.retry = config, poll, env, retry
        self.sends = outbox
        self.report = report or (lambda line: None)
        self.outbox = OutboxWorker(config, env=env)
        inbound = config.section("inbound")
        self.smtp_listen = str(inbound.get("smtp_listen") or "")
        self.imap_url = str(inbound.get("imap_url") or "")
        self.imap_every = _seconds(inbound.get("imap_poll_seconds"), DEFAULT_IMAP_POLL_SECONDS)
        self.listener = None
        self.errors: dict[str, str] = {}
        self._opener = None

    def _set_error(self, part: str, error: str) -> None:
        if self.errors.get(part, "") != error:
            self.errors[part] = error
            self.report(f"{part}: {error}" if error else f"{part}: working again")

    async def run(self, stop: asyncio.Event) -> None:
        parts = [self.outbox.run(stop, poll=self.poll), self._watch_outbox(stop)] if self.sends else []
        if self.smtp_listen or self.imap_url:
            from transports.direct.receiving import opener_from_config

            # One opener (the practice's key, loaded once) for every inbound message of this process.
            self._opener = await asyncio.to_thread(opener_from_config, self.config, self.env)
        if self.smtp_listen:
            parts.append(self._listen(stop))
        if self.imap_url:
            parts.append(self._poll_imap(stop))
        await asyncio.gather(*parts)

    async def _watch_outbox(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._set_error("outbox", self.outbox.last_error)
            await _sleep_until(stop, self.poll)

    async def _listen(self, stop: asyncio.Event) -> None:
        from transports.listener import InboundListener

        while not stop.is_set():
            try:
                listener = InboundListener(self.config, opener=self._opener)
                await listener.start()
            except Exception as exc:  # a bad setting or a port in use: say so, try again later
                self._set_error("inbound SMTP", f"{exc}")
                await _sleep_until(stop, self.retry)
                continue
            self.listener = listener
            self._set_error("inbound SMTP", "")
            self.report(f"inbound SMTP: listening on {listener.address} (STARTTLS required)")
            try:
                while not stop.is_set():
                    self._set_error("inbound SMTP", listener.last_error)
                    await _sleep_until(stop, self.poll)
            finally:
                await listener.stop()

    async def _poll_imap(self, stop: asyncio.Event) -> None:
        from transports.imap_poll import ImapPollError, ImapSettings, poll_once

        try:
            mailbox = ImapSettings.from_config(self.config, self.env).describe()
        except ImapPollError:
            mailbox = self.imap_url
        self.report(f"inbound IMAP: polling {mailbox} every {self.imap_every:g} s")
        while not stop.is_set():
            try:
                summary = await asyncio.to_thread(poll_once, self.config, opener=self._opener, env=self.env)
                error = summary.error
            except Exception as exc:  # a bug must not end polling: report it and look again next time
                summary, error = None, f"{type(exc).__name__}: {exc}"
            if summary is not None and summary.fetched:
                self.report(f"inbound IMAP: fetched {summary.fetched} (accepted {summary.accepted}, "
                            f"rejected {summary.rejected}, duplicates {summary.duplicates})")
            self._set_error("inbound IMAP", error)
            await _sleep_until(stop, self.imap_every)


async def run_service(config: Config, stop: asyncio.Event, **options) -> Service:
    """Run every configured part until `stop` is set; returns the service (its `errors`) when done."""
    service = Service(config, **options)
    await service.run(stop)
    return service
