"""Hand one sealed Direct message to the practice's HISP (smart host) over SMTP, with aiosmtplib.

The message is already S/MIME: it goes out byte for byte, only ever inside TLS 1.2 or newer with the server's
certificate and host name verified (the same policy and messages as smtp_check). Every failure is sorted for the
outbox worker: TransientSendError (retry later: 4xx, down, reset, timeout, DNS) or PermanentSendError (a person
must act: 5xx, old TLS, bad certificate, wrong password, no STARTTLS). Neither content nor password is logged.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import random
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib

from transports.direct.smtp_check import IMPLICIT_TLS_PORT, _handshake_message, _verify_message, client_context

DEFAULT_PASSWORD_ENV = "REFERDESK_SMTP_PASSWORD"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST = re.compile(r"[A-Za-z0-9._:\-\[\]]+")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 587
    starttls: bool = True
    ca_file: str | None = None
    username: str | None = None
    password_env: str = DEFAULT_PASSWORD_ENV
    timeout: float = 30

    @property
    def implicit_tls(self) -> bool:
        """Port 465 always speaks TLS first, whatever `starttls` says (as smtp_check decides)."""
        return self.port == IMPLICIT_TLS_PORT or not self.starttls

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "SmtpSettings":
        """The [smtp] table; ValueError says which key is wrong, so a typo fails at start-up, not at send."""
        host = section.get("host")
        if not isinstance(host, str) or not host.strip():
            raise ValueError("[smtp] host is missing: give the HISP's submission server, e.g. host = \"hisp.example\"")
        host = host.strip()
        if "://" in host or not _HOST.fullmatch(host):
            raise ValueError(f"[smtp] host {host!r} is not a host name: give only the name, e.g. \"hisp.example\" "
                             "(the port goes in port =)")
        port = section.get("port", 587)
        if isinstance(port, str) and port.strip().isdigit():
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"[smtp] port {port!r} is not a TCP port (a whole number from 1 to 65535)")
        starttls = section.get("starttls", port != IMPLICIT_TLS_PORT)
        if not isinstance(starttls, bool):
            raise ValueError(f"[smtp] starttls must be true or false, not {starttls!r}")
        password_env = section.get("password_env") or DEFAULT_PASSWORD_ENV
        if not isinstance(password_env, str) or not _ENV_NAME.fullmatch(password_env):
            raise ValueError(f"[smtp] password_env {password_env!r} is not an environment variable name "
                             "(it names the variable holding the password, never the password itself)")
        timeout = section.get("timeout", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValueError(f"[smtp] timeout {timeout!r} must be a number of seconds above 0")
        return cls(host=host, port=port, starttls=starttls, ca_file=_optional(section, "ca_file"),
                   username=_optional(section, "username"), password_env=password_env, timeout=float(timeout))


def _optional(section: Mapping[str, Any], key: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"[smtp] {key} must be text, not {value!r}")
    return value.strip() or None


@dataclass(frozen=True)
class SendReceipt:
    """The server took the message. `rejected`: recipients it refused at RCPT while taking the rest (a 4xx
    there is worth retrying for that recipient alone, a 5xx is not)."""
    code: int
    message: str
    rejected: dict[str, tuple[int, str]] = field(default_factory=dict)


class SendError(Exception):
    """`str()` is for the user; `reply_code` is the server's SMTP code when a reply caused it."""

    def __init__(self, message: str, *, reply_code: int | None = None,
                 rejected: dict[str, tuple[int, str]] | None = None) -> None:
        super().__init__(message)
        self.reply_code = reply_code
        self.rejected = rejected or {}


class TransientSendError(SendError):
    """Try again later (retry_delay): the server or the network may well be fine then."""


class PermanentSendError(SendError):
    """Retrying will not help until someone changes the settings, the address or the message."""


def retry_delay(attempt: int, *, base: float = 60, cap: float = 24 * 3600, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): the ceiling doubles from `base` up to `cap`,
    and the delay is drawn uniformly between `base` and that ceiling, so queued messages spread out instead of
    hitting a recovering HISP together, yet never come back sooner than `base`."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 64))
    return (rng or random).uniform(min(base, ceiling), ceiling)


def _reply_text(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"[:300]


def _by_code(code: int, text: str, *, rejected: dict | None = None) -> SendError:
    """4xx means "not now"; anything else a server says when refusing is taken as final."""
    kind = TransientSendError if 400 <= code < 500 else PermanentSendError
    return kind(text, reply_code=code, rejected=rejected)


def _root(exc: BaseException) -> BaseException:
    """aiosmtplib wraps socket and TLS errors; the innermost cause says what really happened."""
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    return seen


class HandOverGate:
    """Lets one message at a time be between "DATA begun" and "its outcome recorded".

    Once the final "." of DATA is on the wire the server may take the message at any moment; until the sender
    has written that down, a crash means the message goes out again. Several messages in flight (a worker's
    batch) share one gate, so a crash can cut off at most one of them: the others are still before DATA (their
    MAIL and RCPT done, which the server forgets). `acquire` is awaited just before DATA; whoever records the
    outcome calls `release` (a no-op when it was never acquired)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._holder: object | None = None

    async def acquire(self, holder: object) -> None:
        await self._lock.acquire()
        self._holder = holder

    def release(self, holder: object) -> None:
        if self._holder is holder and self._lock.locked():
            self._holder = None
            self._lock.release()


class _GatedSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client with a hook before DATA (sendmail calls `data` after MAIL and RCPT succeed)."""

    before_data: Callable[[], Awaitable[None]] | None = None

    async def data(self, *args: Any, **kwargs: Any):
        if self.before_data is not None:
            await self.before_data()
        return await super().data(*args, **kwargs)


class _Send:
    """One SMTP session; `phase` names the step for messages and decides how a dropped connection is read."""

    def __init__(self, settings: SmtpSettings, context: ssl.SSLContext) -> None:
        self.settings, self.context, self.where = settings, context, settings.where
        self.phase = "connect"
        self.smtp = _GatedSMTP(hostname=settings.host, port=settings.port, use_tls=settings.implicit_tls,
                               start_tls=False, tls_context=context, timeout=settings.timeout,
                               local_hostname="localhost")

    async def run(self, raw: bytes, mail_from: str, rcpt_to: list[str], password: str | None) -> SendReceipt:
        await self.open(password)
        receipt = await self.transact(raw, mail_from, rcpt_to)
        await self.goodbye()  # the message is already the server's; a rude goodbye does not undo that
        return receipt

    async def open(self, password: str | None) -> None:
        """Connect, EHLO, STARTTLS (required unless implicit TLS), EHLO again, log in."""
        smtp, where = self.smtp, self.where
        self.phase = "handshake" if self.settings.implicit_tls else "connect"
        await smtp.connect()
        smtp.local_hostname = _helo_name(smtp)  # set before the first EHLO
        self.phase = "ehlo"
        await smtp.ehlo()
        if not self.settings.implicit_tls:
            if not smtp.supports_extension("starttls"):
                raise PermanentSendError(
                    f"{where} does not offer STARTTLS: referdesk never sends over an unencrypted connection "
                    "(for implicit TLS, use port 465 or switch STARTTLS off)")
            self.phase = "handshake"
            await smtp.starttls()
            self.phase = "ehlo"
            await smtp.ehlo()
        if self.settings.username:
            self.phase = "auth"
            await self._login(self.settings.username, password or "")

    async def transact(self, raw: bytes, mail_from: str, rcpt_to: list[str]) -> SendReceipt:
        """MAIL, RCPT, DATA on an open session."""
        smtp, where = self.smtp, self.where
        self.phase = "send"
        try:
            rejected, reply = await smtp.sendmail(mail_from, rcpt_to, raw)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _all_refused(where, exc) from None
        except aiosmtplib.SMTPSenderRefused as exc:
            raise _by_code(exc.code, f"{where} refused the sender {mail_from}: "
                                     f"{_reply_text(exc.code, exc.message)}") from None
        except ValueError as exc:  # aiosmtplib checks every address before sending anything
            raise PermanentSendError(f"cannot send to these addresses: {exc}") from None
        except aiosmtplib.SMTPDataError as exc:
            raise _by_code(exc.code, f"{where} did not take the message: {_reply_text(exc.code, exc.message)}") \
                from None
        return SendReceipt(250, reply, {address: (response.code, response.message)
                                        for address, response in rejected.items()})

    async def _login(self, username: str, password: str) -> None:
        """PLAIN, else LOGIN; one attempt only, so a wrong password cannot lock the account by retrying."""
        methods = self.smtp.server_auth_methods
        method = next((m for m in ("plain", "login") if m in methods), None)
        if method is None:
            raise PermanentSendError(f"{self.where} offers no password login (AUTH PLAIN or LOGIN) after TLS, but "
                                     f"[smtp] username is set: remove the username or ask the HISP")
        try:
            await getattr(self.smtp, f"auth_{method}")(username, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            text = _reply_text(exc.code, exc.message)
            if 400 <= exc.code < 500:
                raise TransientSendError(f"{self.where} could not check the login now: {text}",
                                         reply_code=exc.code) from None
            raise PermanentSendError(f"{self.where} refused the login for {username!r} (wrong user name or "
                                     f"password in ${self.settings.password_env}?): {text}",
                                     reply_code=exc.code) from None

    async def goodbye(self) -> None:
        """QUIT while the connection still works (also after a refusal), so the server ends the session cleanly."""
        if self.smtp.is_connected:
            try:
                await self.smtp.quit(timeout=min(self.settings.timeout, 5))
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                pass

    def close(self) -> None:
        self.smtp.close()


def _helo_name(smtp: aiosmtplib.SMTP) -> str:
    """An address literal of our end (as smtp_check sends): always valid, and it reveals no host name."""
    local = smtp.get_transport_info("sockname")
    address = local[0] if local else "127.0.0.1"
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


def _all_refused(where: str, exc: aiosmtplib.SMTPRecipientsRefused) -> SendError:
    rejected = {r.recipient: (r.code, r.message) for r in exc.recipients}
    codes = [r.code for r in exc.recipients]
    first = exc.recipients[0]
    text = f"{where} refused the recipient {first.recipient}: {_reply_text(first.code, first.message)}"
    if len(exc.recipients) > 1:
        text += f" (and {len(exc.recipients) - 1} more)"
    # Retry when any refusal was temporary: a later attempt may get through to that recipient.
    code = next((c for c in codes if 400 <= c < 500), first.code)
    return _by_code(code, text, rejected=rejected)


def _stamp(ca_file: str | None) -> tuple:
    try:
        info = os.stat(os.path.expanduser(ca_file)) if ca_file else None
    except OSError:
        return ()
    return (info.st_mtime_ns, info.st_size) if info else ()


@functools.lru_cache(maxsize=8)
def _context(ca_file: str | None, stamp: tuple) -> ssl.SSLContext:
    """One TLS context per CA file (and version of it): loading the CA list costs more than the handshake."""
    return client_context(ca_file)


async def send_message(raw: bytes, *, mail_from: str, rcpt_to: list[str], settings: SmtpSettings,
                       env: Mapping[str, str] | None = None) -> SendReceipt:
    """Send `raw` (a complete RFC 5322 message, CRLF line ends) to `rcpt_to` through the configured HISP.

    Raises TransientSendError or PermanentSendError, never a bare library error. Lone LF or CR would be sent as
    CRLF (SMTP allows nothing else on the wire), and a missing final CRLF is added; all other bytes are kept."""
    async with SmtpConnection(settings, env) as connection:
        return await connection.send(raw, mail_from=mail_from, rcpt_to=rcpt_to)


def _password(settings: SmtpSettings, env: Mapping[str, str]) -> str | None:
    if not settings.username:
        return None
    password = env.get(settings.password_env)
    if not password:
        raise PermanentSendError(f"the SMTP password for {settings.username!r} is not available: "
                                 f"set ${settings.password_env}")
    return password


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    try:
        return _context(settings.ca_file, _stamp(settings.ca_file))
    except FileNotFoundError:
        raise PermanentSendError(f"CA file {settings.ca_file}: file not found") from None
    except ssl.SSLError:
        raise PermanentSendError(f"CA file {settings.ca_file}: holds no PEM CA certificate") from None


class SmtpConnection:
    """One session with the HISP kept open for several messages (a worker's batch): TLS, EHLO and login once,
    then one MAIL/RCPT/DATA transaction per message. A failure ends the session (the next send opens a new
    one), so a half-broken connection never carries the next message. Use as `async with`."""

    def __init__(self, settings: SmtpSettings, env: Mapping[str, str] | None = None, *,
                 gate: HandOverGate | None = None) -> None:
        self.settings = settings
        self.env = os.environ if env is None else env
        self.gate = gate
        self._session: _Send | None = None

    async def _enter_gate(self) -> None:
        await self.gate.acquire(self)

    def settled(self) -> None:
        """The last message's outcome is recorded: let the next message on the shared gate begin its DATA."""
        if self.gate is not None:
            self.gate.release(self)

    async def __aenter__(self) -> "SmtpConnection":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _ready(self) -> _Send:
        session = self._session
        if session is not None and session.smtp.is_connected:
            try:  # a server may drop an idle session; find out before a message is half-sent
                session.phase = "noop"
                await session.smtp.noop()
                return session
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                session.close()
        password = _password(self.settings, self.env)
        session = self._session = _Send(self.settings, _tls_context(self.settings))
        if self.gate is not None:
            session.smtp.before_data = self._enter_gate
        await session.open(password)
        return session

    async def send(self, raw: bytes, *, mail_from: str, rcpt_to: list[str]) -> SendReceipt:
        """Raises TransientSendError or PermanentSendError, never a bare library error. Lone LF or CR would be
        sent as CRLF (SMTP allows nothing else on the wire), and a missing final CRLF is added; all other bytes
        are kept."""
        if not rcpt_to:
            raise ValueError("no recipients")
        try:
            session = await self._ready()
            return await session.transact(raw, mail_from, list(rcpt_to))
        except SendError:
            await self._drop(self._session)
            raise
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            session = self._session
            await self._drop(session)
            raise await _classify(exc, session) from None

    async def _drop(self, session: _Send | None) -> None:
        if session is not None:
            await session.goodbye()
            session.close()
        self._session = None

    async def close(self) -> None:
        await self._drop(self._session)


async def _classify(exc: BaseException, session: _Send) -> SendError:
    """Turn what aiosmtplib raised into a message for the user and a retry decision."""
    settings, where, phase = session.settings, session.where, session.phase
    root = _root(exc)
    if isinstance(root, ssl.SSLCertVerificationError):
        return PermanentSendError(_verify_message(root, settings.host, where, settings.ca_file))
    if isinstance(exc, aiosmtplib.SMTPResponseException):  # greeting, EHLO or STARTTLS refused
        step = ("the connection" if isinstance(exc, aiosmtplib.SMTPConnectResponseError)
                else {"ehlo": "EHLO", "handshake": "STARTTLS"}.get(phase, phase))
        return _by_code(exc.code, f"{where} refused {step}: {_reply_text(exc.code, exc.message)}")
    if isinstance(root, socket.gaierror):
        return TransientSendError(f"cannot reach {where}: unknown host name (DNS lookup failed)")
    if isinstance(root, ConnectionRefusedError):
        return TransientSendError(f"cannot reach {where}: connection refused (is the server running, "
                                  "is the port right?)")
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError):
        if "server ready" not in str(exc):
            return TransientSendError(f"cannot reach {where}: no answer within {settings.timeout:g} s (timeout)")
        message = f"{where} accepted the connection but sent no greeting within {settings.timeout:g} s"
        if not settings.implicit_tls:
            message += " (a port with implicit TLS, like 465, waits for TLS first: switch STARTTLS off)"
        return TransientSendError(message)
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, asyncio.TimeoutError)) or isinstance(root, TimeoutError):
        return TransientSendError(f"{where} stopped answering ({phase}) within {settings.timeout:g} s")
    if phase == "handshake" and isinstance(root, (ssl.SSLError, ConnectionError)):
        return await _handshake_error(root, session)
    if phase == "send":
        return TransientSendError(f"{where} closed the connection while the message was being sent "
                                  "(it may have arrived; a retry can deliver it twice)")
    detail = getattr(root, "strerror", None) or str(root) or type(root).__name__
    return TransientSendError(f"cannot talk to {where} ({phase}): {detail}")


_NETWORK_SSL = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


async def _handshake_error(root: BaseException, session: _Send) -> SendError:
    """A server that speaks only TLS 1.0/1.1, or TLS we cannot agree on, needs a person; a connection dropped
    mid-handshake for no such reason is the network, and worth a retry."""
    settings = session.settings
    message = await _handshake_message(root, settings.host, settings.port, settings.implicit_tls,
                                       min(settings.timeout, 10))
    if " offers only " in message or (isinstance(root, ssl.SSLError) and not isinstance(root, _NETWORK_SSL)):
        return PermanentSendError(message)
    return TransientSendError(message)
