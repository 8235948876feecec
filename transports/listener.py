"""The inbound SMTP listener, for sites where referdesk is the edge of its own HISP: other HISPs deliver Direct
mail for the practice's address straight to it (ARCHITECTURE.md "Receiving").

What a receiving MTA must get right and nothing more: STARTTLS required before MAIL (TLS 1.2 floor), RCPT only
for the practice's own addresses, a size limit announced and enforced, and a 250 only once the raw message is
in the database. Whether the message is then accepted or rejected is referdesk's business, recorded with it,
never an SMTP error: a sender that sees a 5xx after DATA would bounce a message we already kept. A failure to
store it is a 451, so the sender retries. Nothing about a message's content or addresses is logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import ssl
import weakref
from typing import Any

from models.config import Config
from models.db import database_problem
from models.redact import redact
from transports.efax.reports import FaxReports

DEFAULT_MAX_MB = 50


class ListenerError(Exception):
    """The listener cannot start as configured; the message says which setting to change."""


def parse_listen(value: Any) -> tuple[str, int]:
    """`[inbound] smtp_listen` as (IP address, port). Only an explicit IP address is accepted (no host name, no
    empty host meaning "everywhere"): where the site's mail port is exposed is a decision made in the file."""
    text = str(value or "").strip()
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        if not sep:
            raise ValueError
        ipaddress.ip_address(host)
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise ListenerError(f"[inbound] smtp_listen = {text!r}: give an IP address and a port, e.g. "
                            "\"127.0.0.1:2525\", \"0.0.0.0:25\" or \"[::]:25\"") from None
    return host, number


def accepted_addresses(config: Config) -> frozenset[str]:
    """The practice's Direct address and `[inbound] accept_addresses`, lower-cased."""
    inbound = config.section("inbound")
    extra = inbound.get("accept_addresses") or []
    if isinstance(extra, str):
        extra = [extra]
    names = [config.section("direct").get("address") or "", *extra]
    return frozenset(str(name).strip().lower() for name in names if str(name).strip())


def max_message_bytes(config: Config) -> int:
    value = config.section("inbound").get("max_message_mb", DEFAULT_MAX_MB)
    try:
        size = int(float(value) * 1024 * 1024)
    except (TypeError, ValueError):
        size = 0
    if size <= 0:
        raise ListenerError(f"[inbound] max_message_mb = {value!r}: give a size in MB, e.g. 50")
    return size


def server_tls_context(config: Config) -> ssl.SSLContext:
    """The site's certificate and key for STARTTLS; TLS 1.2 or newer only."""
    inbound = config.section("inbound")
    certificate, key = inbound.get("tls_certificate"), inbound.get("tls_key")
    if not certificate or not key:
        raise ListenerError("the SMTP listener needs a TLS certificate: set [inbound] tls_certificate and tls_key "
                            "(PEM files); mail is never accepted without STARTTLS")
    certificate, key = os.path.expanduser(str(certificate)), os.path.expanduser(str(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, key)
    except FileNotFoundError as exc:
        raise ListenerError(f"[inbound] TLS file not found: {exc.filename}") from exc
    except (ssl.SSLError, OSError) as exc:
        raise ListenerError(f"[inbound] tls_certificate {certificate} and tls_key {key} cannot be used together "
                            f"(not PEM, or the key does not match the certificate): {exc}") from exc
    return context


def _stored_error(exc: BaseException) -> str:
    """Why a message could not be stored, for the worker's status line and log: a full or locked database
    said plainly; anything else by its type and (redacted) text — never the message's content."""
    problem = database_problem(exc)
    if problem is not None:
        return f"a message could not be stored, the sender will retry: {problem}"
    return redact(f"a message could not be stored ({type(exc).__name__}: {exc})")


class _Handler:
    """aiosmtpd's hooks: who may receive, and DATA into the pipeline."""

    def __init__(self, listener: "InboundListener") -> None:
        self.listener = listener

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.strip().lower() not in self.listener.addresses:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = bytes(envelope.original_content or b"")
        try:
            await asyncio.to_thread(self.listener.receive, raw)
        except Exception as exc:  # the database is locked or gone: the sender keeps the message and retries
            self.listener.last_error = _stored_error(exc)
            return "451 4.3.0 the message could not be stored; try again later"
        self.listener.received, self.listener.last_error = self.listener.received + 1, ""
        return "250 2.0.0 message stored"

    async def handle_exception(self, error):
        """Instead of aiosmtpd's traceback in the log and the exception's text in the reply: a failed TLS
        handshake (a client offering only TLS 1.0/1.1) is the client's problem and needs no log line."""
        from aiosmtpd.smtp import TLSSetupException

        if isinstance(error, TLSSetupException):
            return "454 4.7.0 TLS not available: TLS 1.2 or newer is required"
        self.listener.last_error = redact(f"an SMTP session failed ({type(error).__name__}: {error})")
        return "451 4.3.0 local error; try again later"


class InboundListener:
    """`await start()` binds and serves on the running event loop; `await stop()` closes. `port` is the port
    bound (useful with port 0). `received` counts messages stored; `last_error` says why one was not."""

    def __init__(self, config: Config, *, opener=None) -> None:
        listen = config.section("inbound").get("smtp_listen")
        if not listen:
            raise ListenerError("no [inbound] smtp_listen address is configured")
        self.host, self.port = parse_listen(listen)
        self.addresses = accepted_addresses(config)
        if not self.addresses:
            raise ListenerError("the SMTP listener would accept mail for nobody: set [direct] address")
        self.max_bytes = max_message_bytes(config)
        self.tls = server_tls_context(config)
        self.config, self.opener = config, opener
        self.fax_reports = FaxReports.from_config(config)
        self.received, self.last_error = 0, ""
        self._server: asyncio.AbstractServer | None = None
        self._sessions: weakref.WeakSet = weakref.WeakSet()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def receive(self, raw: bytes):
        """The pipeline, on a worker thread: it stores the raw message before anything else."""
        from transports.inbound import receive_message

        return receive_message(raw, opener=self.opener, channel="smtp", fax_reports=self.fax_reports)

    async def start(self) -> None:
        try:
            from aiosmtpd.smtp import SMTP
        except ImportError as exc:  # pragma: no cover - depends on the site's install
            raise ListenerError("the SMTP listener needs the aiosmtpd package: pip install aiosmtpd") from exc
        if self.opener is None:
            from transports.direct.receiving import opener_from_config

            self.opener = await asyncio.to_thread(opener_from_config, self.config)
        # aiosmtpd logs envelope addresses at INFO and every DATA line at DEBUG: only its warnings, whatever
        # level the rest of the process logs at.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        handler, loop = _Handler(self), asyncio.get_running_loop()
        hostname = await asyncio.to_thread(socket.getfqdn)  # once, not per connection as aiosmtpd would

        class _Smtp(SMTP):
            def connection_lost(self, error):
                super().connection_lost(error)
                # A client that gives up mid-handshake (a TLS 1.1-only one) leaves the reset in aiosmtpd's
                # closed-future; take it, or asyncio logs it as never retrieved.
                closed = getattr(self, "_closed", None)
                if closed is not None and closed.done() and not closed.cancelled():
                    closed.exception()

        def factory():
            session = _Smtp(handler, hostname=hostname, tls_context=self.tls, require_starttls=True,
                            data_size_limit=self.max_bytes, auth_exclude_mechanism=["LOGIN", "PLAIN"], loop=loop)
            self._sessions.add(session)
            return session

        try:
            self._server = await loop.create_server(factory, self.host, self.port, reuse_address=True)
        except OSError as exc:
            raise ListenerError(f"cannot listen on {self.address}: {exc.strerror or exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and hang up on open sessions; a sender cut off before our 250 simply retries."""
        if self._server is None:
            return
        self._server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await self._server.wait_closed()
        self._server = None
