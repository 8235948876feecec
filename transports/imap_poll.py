"""Polling the practice's mailbox at its HISP over IMAPS, for sites where the HISP keeps the mail
(ARCHITECTURE.md "Receiving"). Each unseen message goes through the one receiving pipeline and is marked
`\\Seen` (or deleted, `[inbound] imap_after = "delete"`) only once the pipeline has stored it: a crash in
between leaves it unseen, and the pipeline's Message-ID check makes the second look harmless.

The standard library's imaplib, called on a thread: it is small, synchronous and well kept. TLS 1.2 or newer
with the server certificate verified, as for SMTP (smtp_check.client_context); each failure a user can fix
(login, TLS version, certificate, an unreachable server) ends the poll with a message that names it.
"""

from __future__ import annotations

import imaplib
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import unquote, urlsplit

from models.config import Config
from transports.direct.smtp_check import _legacy_context, _verify_message, client_context

DEFAULT_PASSWORD_ENV = "REFERDESK_IMAP_PASSWORD"
DEFAULT_PORT = 993
AFTER = ("seen", "delete")


class ImapPollError(Exception):
    """A poll that could not run; the message says what to change."""


@dataclass
class PollSummary:
    fetched: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    error: str = ""

    def as_json(self) -> dict:
        return {"fetched": self.fetched, "accepted": self.accepted, "rejected": self.rejected,
                "duplicates": self.duplicates, "error": self.error}


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    user: str
    mailbox: str
    password: str
    ca_file: str | None
    after: str
    timeout: float

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        """The mailbox as a URL without the password, for the worker's start-up line."""
        return f"imaps://{self.user}@{self.where}/{self.mailbox}"

    @classmethod
    def from_config(cls, config: Config, env: Mapping[str, str] | None = None) -> "ImapSettings":
        env = os.environ if env is None else env
        inbound = config.section("inbound")
        url = str(inbound.get("imap_url") or "").strip()
        if not url:
            raise ImapPollError("no [inbound] imap_url is configured")
        parts = urlsplit(url)
        if parts.scheme != "imaps":
            raise ImapPollError(f"[inbound] imap_url must start with imaps:// (IMAP over TLS); got {parts.scheme!r}")
        if parts.password is not None:
            raise ImapPollError("[inbound] imap_url holds a password: remove it and put the password in the "
                                f"environment variable named by imap_password_env")
        if not parts.hostname or not parts.username:
            raise ImapPollError(f"[inbound] imap_url = {url!r}: give imaps://USER@HOST[:PORT]/MAILBOX")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ImapPollError(f"[inbound] imap_url = {url!r}: the port is not a number") from None
        variable = str(inbound.get("imap_password_env") or DEFAULT_PASSWORD_ENV)
        password = env.get(variable, "")
        if not password:
            raise ImapPollError(f"the IMAP password is not set: put it in the environment variable {variable}")
        after = str(inbound.get("imap_after") or "seen")
        if after not in AFTER:
            raise ImapPollError(f"[inbound] imap_after = {after!r}: use \"seen\" or \"delete\"")
        ca_file = inbound.get("imap_ca_file")
        return cls(host=parts.hostname, port=port, user=unquote(parts.username),
                   mailbox=unquote(parts.path.lstrip("/")) or "INBOX", password=password,
                   ca_file=str(ca_file) if ca_file else None, after=after,
                   timeout=float(inbound.get("imap_timeout", 30)))


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value) -> str:
    """The server's words from an imaplib answer or exception (bytes or str), shortened."""
    if isinstance(value, OSError):
        value = value.strerror or str(value) or type(value).__name__
    elif isinstance(value, BaseException):
        value = value.args[0] if value.args else type(value).__name__
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:200]


def _legacy_version(settings: ImapSettings) -> str | None:
    """The TLS version a server negotiates when offered only 1.0/1.1 (to name it), or None."""
    try:
        with socket.create_connection((settings.host, settings.port), timeout=settings.timeout) as sock:
            with _legacy_context().wrap_socket(sock) as tls:
                return tls.version()
    except (OSError, ssl.SSLError):
        return None


def connect(settings: ImapSettings) -> imaplib.IMAP4_SSL:
    """A logged-in session with the mailbox selected, or ImapPollError saying what went wrong."""
    where = settings.where
    try:
        context = client_context(settings.ca_file)
    except (FileNotFoundError, ssl.SSLError) as exc:
        raise ImapPollError(f"[inbound] imap_ca_file {settings.ca_file}: not a readable PEM CA file") from exc
    try:
        imap = imaplib.IMAP4_SSL(settings.host, settings.port, ssl_context=context, timeout=settings.timeout)
    except ssl.SSLCertVerificationError as exc:
        raise ImapPollError(_verify_message(exc, settings.host, where, settings.ca_file)
                            .replace("the CA file to", "[inbound] imap_ca_file to")) from exc
    except ssl.SSLError as exc:
        legacy = _legacy_version(settings)
        if legacy:
            name = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1"}.get(legacy, legacy)
            raise ImapPollError(f"{where} offers only {name}; referdesk requires TLS 1.2 or newer") from exc
        raise ImapPollError(f"TLS handshake with {where} failed: {exc.reason or exc}") from exc
    except socket.gaierror as exc:
        raise ImapPollError(f"cannot reach {where}: unknown host name") from exc
    except ConnectionRefusedError as exc:
        raise ImapPollError(f"cannot reach {where}: connection refused (is the server running, is the port "
                            "right?)") from exc
    except TimeoutError as exc:
        raise ImapPollError(f"cannot reach {where}: no answer within {settings.timeout:g} s (timeout)") from exc
    except OSError as exc:
        raise ImapPollError(f"cannot reach {where}: {exc.strerror or exc}") from exc
    except imaplib.IMAP4.error as exc:
        raise ImapPollError(f"{where} did not answer as an IMAP server: {_text(exc)}") from exc
    try:
        imap.login(_quoted(settings.user), settings.password)
    except imaplib.IMAP4.error as exc:
        _close(imap)
        raise ImapPollError(f"the IMAP server {where} refused the login for {settings.user} "
                            f"({_text(exc)}): check the user in [inbound] imap_url and the password") from exc
    status, data = imap.select(_quoted(settings.mailbox))
    if status != "OK":
        _close(imap)
        raise ImapPollError(f"the mailbox {settings.mailbox!r} cannot be opened on {where}: "
                            f"{_text(data[0] if data else status)}")
    return imap


def _close(imap: imaplib.IMAP4) -> None:
    try:
        imap.logout()
    except (imaplib.IMAP4.error, OSError):
        pass


def _message_bytes(data: list) -> bytes | None:
    """The literal of a UID FETCH (BODY.PEEK[]) answer."""
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return None


def _command(imap: imaplib.IMAP4, *args: str) -> list:
    status, data = imap.uid(*args)
    if status != "OK":
        raise ImapPollError(f"the IMAP server refused {args[0]}: {_text(data[0] if data else status)}")
    return data


def poll_once(config: Config, *, opener=None, env: Mapping[str, str] | None = None) -> PollSummary:
    """Fetch every unseen message, feed each to the pipeline, then mark it seen (or delete it). Errors end the
    poll and are returned in `error`; what was stored before stays stored."""
    from transports.efax.reports import FaxReports
    from transports.inbound import receive_message

    summary = PollSummary()
    fax_reports = FaxReports.from_config(config)
    try:
        settings = ImapSettings.from_config(config, env)
        if opener is None:
            from transports.direct.receiving import opener_from_config

            opener = opener_from_config(config)
        imap = connect(settings)
    except ImapPollError as exc:
        summary.error = str(exc)
        return summary
    flags = r"(\Seen \Deleted)" if settings.after == "delete" else r"(\Seen)"
    try:
        uids = _command(imap, "SEARCH", "UNSEEN")[0].split()
        for uid in (u.decode("ascii") for u in uids):
            raw = _message_bytes(_command(imap, "FETCH", uid, "(BODY.PEEK[])"))
            if raw is None:
                continue  # gone since the search (another client expunged it)
            summary.fetched += 1
            outcome = receive_message(raw, opener=opener, channel="imap", fax_reports=fax_reports)
            if outcome.outcome == "accepted":
                summary.accepted += 1
            elif outcome.outcome == "duplicate":
                summary.duplicates += 1
            else:
                summary.rejected += 1
            _command(imap, "STORE", uid, "+FLAGS.SILENT", flags)
        if settings.after == "delete" and summary.fetched:
            imap.expunge()
    except ImapPollError as exc:
        summary.error = str(exc)
    except (imaplib.IMAP4.error, OSError) as exc:
        summary.error = f"the IMAP session with {settings.where} broke off: {_text(exc)}"
    except Exception as exc:  # the pipeline could not store a message: it stays unseen for the next poll
        summary.error = f"a message could not be stored ({type(exc).__name__}: {exc}); it stays in the mailbox"
    finally:
        _close(imap)
    return summary
