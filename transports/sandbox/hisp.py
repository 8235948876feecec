"""The sandbox's HISP: an SMTP submission and relay server on 127.0.0.1 that passes mail on, byte for byte, to
the loopback server that stands for each recipient domain (the partner practice, the eFax gateway, referdesk's
own listener).

It holds itself to the same rules as a real HISP so the demo exercises referdesk's production paths: STARTTLS
before MAIL (TLS 1.2 floor), recipients only for domains it has a route to, and a DATA reply that tells the
truth about the onward hop (250 only once every route took the message, 451 when one is down so the sender
keeps it and retries, the route's own 5xx when it refused). It relays synchronously instead of queueing: the
sandbox has no disk queue to lose, and the sender's retry logic is what the demo is meant to show.

Nothing about a message's content is kept or logged; the status log holds envelope addresses and outcomes.
`SmtpService` and `relay` are shared with the sandbox's fax gateway.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
import weakref
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple

import aiosmtplib

from transports.direct.smtp_check import client_context

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
RELAY_TIMEOUT = 30.0
LOG_SIZE = 200


def _one_line(code: int, text: str) -> str:
    return f"{code} {' '.join(str(text).split())}"[:300]


def reply_code(reply: str) -> int:
    """The code of an SMTP reply line ("451 4.4.1 ..." -> 451); 0 when there is none."""
    head = reply[:3]
    return int(head) if head.isdigit() else 0


def _root(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


async def relay(raw: bytes, mail_from: str, rcpt_tos: list[str], where: tuple[str, int],
                context: ssl.SSLContext, *, label: str, timeout: float = RELAY_TIMEOUT) -> str:
    """Hand `raw` unchanged to the SMTP server at `where` over verified STARTTLS; the outcome as one SMTP reply
    line, never an exception. The server's own reply when it refused (its code and words), a 451 naming `label`
    when it cannot be reached, will not do TLS or fails mid-way: the sender should try again later."""
    host, port = where
    down = f"451 4.4.1 {label} is not answering in the sandbox; try again later"
    smtp = aiosmtplib.SMTP(hostname=host, port=port, start_tls=True, tls_context=context, timeout=timeout,
                           local_hostname="localhost")
    try:
        try:
            await smtp.connect()
        except aiosmtplib.SMTPResponseException as exc:  # greeting or STARTTLS refused
            return _one_line(exc.code, exc.message) if exc.code >= 400 else down
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            if isinstance(_root(exc), ssl.SSLCertVerificationError):
                return f"451 4.7.5 {label}'s certificate is not trusted in the sandbox; try again later"
            return down
        try:
            refused, _ = await smtp.sendmail("" if mail_from == "<>" else mail_from, rcpt_tos, raw)
        except ValueError:  # aiosmtplib checks the addresses before sending anything
            return "553 5.1.7 the sandbox cannot relay for these addresses"
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return _one_line(first.code, first.message)
        except aiosmtplib.SMTPResponseException as exc:  # MAIL or DATA refused
            return _one_line(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError):
            return f"451 4.4.2 the connection to {label} broke off; try again later"
        if refused:  # some recipients taken, some not: the sender must hear about the ones that were not
            response = next(iter(refused.values()))
            return _one_line(response.code, response.message)
        return "250 2.0.0 relayed"
    except asyncio.CancelledError:  # the sandbox is stopping: hang up at once, no polite QUIT
        smtp.close()
        raise
    finally:
        if smtp.is_connected:
            try:
                await smtp.quit(timeout=5)
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError):
                smtp.close()


class SmtpHandler:
    """aiosmtpd hooks shared by the sandbox servers: a failed TLS handshake (a TLS 1.0/1.1-only client) gets a
    plain 454 and no traceback; anything else is a 451 and goes to `last_error`, not to a log."""

    def __init__(self, service: "SmtpService") -> None:
        self.service = service

    async def handle_exception(self, error: Exception) -> str:
        from aiosmtpd.smtp import TLSSetupException

        if isinstance(error, TLSSetupException):
            return "454 4.7.0 TLS not available: TLS 1.2 or newer is required"
        self.service.last_error = f"an SMTP session failed ({type(error).__name__})"
        return "451 4.3.0 local error; try again later"


class SmtpService:
    """aiosmtpd on the caller's running loop, STARTTLS required (TLS 1.2 floor), loopback only. Subclasses give
    the hooks in `handler()`. `await start()` binds (port 0: the kernel picks; `port` says which), `await
    stop()` closes the port and every open session and waits for their tasks to end."""

    def __init__(self, tls: ssl.SSLContext, *, host: str = "127.0.0.1", port: int = 0,
                 max_bytes: int = DEFAULT_MAX_BYTES, hostname: str = "localhost") -> None:
        if tls.minimum_version < ssl.TLSVersion.TLSv1_2:  # the floor is ours to hold, whatever the context says
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls, self.host, self.port = tls, host, port
        self.max_bytes, self.hostname = max_bytes, hostname
        self.last_error = ""
        self._server: asyncio.AbstractServer | None = None
        self._sessions: weakref.WeakSet = weakref.WeakSet()

    def handler(self) -> SmtpHandler:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        from aiosmtpd.smtp import SMTP

        if self._server is not None:
            return
        # aiosmtpd logs envelope addresses at INFO and every DATA line at DEBUG: only its warnings.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        handler, loop = self.handler(), asyncio.get_running_loop()

        class _Smtp(SMTP):
            def connection_lost(self, error):
                super().connection_lost(error)
                # A client that gives up mid-handshake leaves the reset in aiosmtpd's closed-future; take it,
                # or asyncio logs it as never retrieved.
                closed = getattr(self, "_closed", None)
                if closed is not None and closed.done() and not closed.cancelled():
                    closed.exception()

        def factory():
            session = _Smtp(handler, hostname=self.hostname, tls_context=self.tls, require_starttls=True,
                            data_size_limit=self.max_bytes, auth_exclude_mechanism=["LOGIN", "PLAIN"], loop=loop)
            self._sessions.add(session)
            return session

        self._server = await loop.create_server(factory, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Hang up on everyone; a sender cut off before its 250 keeps the message and retries."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        tasks = []
        for session in list(self._sessions):
            task = getattr(session, "_handler_coroutine", None)
            if task is not None and not task.done():
                tasks.append(task)
            if session.transport is not None:
                session.transport.close()
            original = getattr(session, "_original_transport", None)  # the TCP under STARTTLS
            if original is not None:
                original.abort()
        for task in tasks:  # a session whose TLS layer was torn down may never hear of it: end it here
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await server.wait_closed()


class LogEntry(NamedTuple):
    time: dt.datetime  # UTC
    mail_from: str
    rcpt_tos: tuple[str, ...]
    outcome: str  # the reply the sender got, e.g. "250 2.0.0 relayed"


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


class _HispHandler(SmtpHandler):
    service: "DemoHisp"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        domain = _domain_of(address)
        if "@" not in address or domain not in self.service.routes:
            return f"550 5.1.2 no route to {domain or 'that address'} in the sandbox"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = bytes(envelope.original_content or b"")
        return await self.service.deliver(raw, envelope.mail_from or "", list(envelope.rcpt_tos))


class DemoHisp(SmtpService):
    """`routes` maps a recipient domain to the (host, port) of the server that takes its mail; `ca_file` is the
    sandbox's trust anchor, which every route's certificate must chain to. `log` holds the latest relays."""

    def __init__(self, tls: ssl.SSLContext, ca_file: str, routes: dict[str, tuple[str, int]], *,
                 host: str = "127.0.0.1", port: int = 0, max_bytes: int = DEFAULT_MAX_BYTES,
                 relay_timeout: float = RELAY_TIMEOUT) -> None:
        super().__init__(tls, host=host, port=port, max_bytes=max_bytes, hostname="hisp.sandbox.localhost")
        self.ca_file = ca_file
        self.client_tls = client_context(ca_file)
        self.relay_timeout = relay_timeout
        self.routes: dict[str, tuple[str, int]] = {}
        for domain, (route_host, route_port) in routes.items():
            self.set_route(domain, route_host, route_port)
        self.log: deque[LogEntry] = deque(maxlen=LOG_SIZE)

    def handler(self) -> SmtpHandler:
        return _HispHandler(self)

    def set_route(self, domain: str, host: str, port: int) -> None:
        self.routes[domain.strip().lower().rstrip(".")] = (host, int(port))

    def remove_route(self, domain: str) -> None:
        self.routes.pop(domain.strip().lower().rstrip("."), None)

    async def deliver(self, raw: bytes, mail_from: str, rcpt_tos: Iterable[str]) -> str:
        """Relay to every recipient's route, one connection per route, all at once; the one reply the sender
        gets: a refusal (5xx) if any route refused, else 451 if any could not take it now, else 250. A route
        that took the message while another refused it keeps it (a sandbox HISP sends no bounces)."""
        recipients = list(rcpt_tos)
        groups: dict[tuple[str, int], list[str]] = {}
        labels: dict[tuple[str, int], str] = {}
        missing = []
        for address in recipients:
            domain = _domain_of(address)
            route = self.routes.get(domain)
            if route is None:  # removed since RCPT
                missing.append(domain)
                continue
            groups.setdefault(route, []).append(address)
            labels.setdefault(route, domain)
        replies = await asyncio.gather(*(
            relay(raw, mail_from, addresses, route, self.client_tls, label=labels[route], timeout=self.relay_timeout)
            for route, addresses in groups.items()))
        replies += [f"451 4.4.0 no route to {domain} in the sandbox right now; try again later" for domain in missing]
        outcome = (next((r for r in replies if reply_code(r) >= 500), None)
                   or next((r for r in replies if reply_code(r) != 250), None)
                   or "250 2.0.0 relayed")
        self.log.append(LogEntry(dt.datetime.now(dt.timezone.utc), mail_from, tuple(recipients), outcome))
        return outcome

    def status(self) -> dict[str, Any]:
        """For `referdesk sandbox status`: where it listens, its routes and its latest relays."""
        return {"address": f"{self.host}:{self.port}", "running": self.running, "routes": dict(self.routes),
                "log": list(self.log), "last_error": self.last_error}
