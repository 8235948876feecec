"""Can referdesk hand mail to the HISP? Connect, STARTTLS (or implicit TLS), verify the server certificate
with TLS 1.2 as the floor, and say exactly which of those failed: set-up errors hidden behind generic
messages are what users of other systems complain about (STANDARDS.md).

Plain asyncio streams rather than an SMTP client library, so each failure keeps its own cause. Nothing is
sent: greeting, EHLO, STARTTLS, EHLO, QUIT.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import warnings
from dataclasses import dataclass, field

from transports.direct.identity import Finding

IMPLICIT_TLS_PORT = 465
_PROTOCOL_REASONS = {"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE",
                     "WRONG_SSL_VERSION", "VERSION_TOO_LOW", "TLSV1_ALERT_INTERNAL_ERROR",
                     "SSLV3_ALERT_HANDSHAKE_FAILURE", "NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE"}
_UNKNOWN_CA = {2, 18, 19, 20, 21}  # X509_V_ERR_* for "cannot build a chain to a CA we trust"


@dataclass
class SmtpCheck:
    findings: list[Finding] = field(default_factory=list)
    tls_version: str | None = None
    cipher: str | None = None
    auth_methods: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)


class _Failed(Exception):
    """One clear message for the user; ends the check."""


def client_context(ca_file: str | None) -> ssl.SSLContext:
    """Verification on, TLS 1.2 floor; the system CAs, or the HISP's CA file instead when given."""
    context = ssl.create_default_context(cafile=os.path.expanduser(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _legacy_context() -> ssl.SSLContext:
    """Only to tell a TLS 1.0/1.1-only server apart from other handshake failures; never used to send."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


async def _reply(reader: asyncio.StreamReader, where: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    while True:
        raw = await reader.readline()
        if not raw:
            raise _Failed(f"{where} closed the connection")
        text = raw.decode("ascii", "replace").rstrip("\r\n")
        lines.append(text[4:])
        if len(text) < 4 or text[3] != "-":
            return (int(text[:3]) if text[:3].isdigit() else 0), lines


async def _command(reader, writer, line: str, where: str) -> tuple[int, list[str]]:
    writer.write(line.encode("ascii") + b"\r\n")
    await writer.drain()
    return await _reply(reader, where)


def _helo_name(writer: asyncio.StreamWriter) -> str:
    """An address literal of our end: always a valid EHLO argument, and it reveals no host name."""
    local = writer.get_extra_info("sockname")
    address = local[0] if local else "127.0.0.1"
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


class _Session:
    """One SMTP conversation; `phase` says where a timeout struck."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, implicit: bool) -> None:
        self.host, self.port, self.context, self.implicit = host, port, context, implicit
        self.where = f"{host}:{port}"
        self.phase = "connect"
        self.writer: asyncio.StreamWriter | None = None
        self.result = SmtpCheck()

    async def run(self, result: SmtpCheck) -> None:
        self.result, self.phase = result, "connect"
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except socket.gaierror as exc:
            raise _Failed(f"cannot reach {self.where}: unknown host name") from exc
        except ConnectionRefusedError as exc:
            raise _Failed(f"cannot reach {self.where}: connection refused (is the server running, "
                          "is the port right?)") from exc
        except OSError as exc:
            raise _Failed(f"cannot reach {self.where}: {exc.strerror or exc}") from exc
        self.writer = writer
        if self.implicit:
            await self._handshake(writer)
        self.phase = "greeting"
        code, lines = await _reply(reader, self.where)
        if code != 220:
            raise _Failed(f"{self.where} did not greet as an SMTP server: {code} {' '.join(lines)[:80]}")
        self.phase = "ehlo"
        code, lines = await _command(reader, writer, f"EHLO {_helo_name(writer)}", self.where)
        if code != 250:
            raise _Failed(f"{self.where} refused EHLO: {code} {' '.join(lines)[:80]}")
        if not self.implicit:
            if not any(line.upper().split()[:1] == ["STARTTLS"] for line in lines[1:]):
                raise _Failed(f"{self.where} does not offer STARTTLS: referdesk never sends over an unencrypted "
                              "connection (for implicit TLS, use port 465 or switch STARTTLS off)")
            self.phase = "starttls"
            code, lines = await _command(reader, writer, "STARTTLS", self.where)
            if code != 220:
                raise _Failed(f"{self.where} refused STARTTLS: {code} {' '.join(lines)[:80]}")
            await self._handshake(writer)
            self.phase = "ehlo"
            code, lines = await _command(reader, writer, f"EHLO {_helo_name(writer)}", self.where)
            if code != 250:
                raise _Failed(f"{self.where} refused EHLO after STARTTLS: {code} {' '.join(lines)[:80]}")
        for line in lines[1:]:
            words = line.upper().split()
            if words and words[0] == "AUTH":
                result.auth_methods = words[1:]
        self.phase = "quit"
        try:
            await _command(reader, writer, "QUIT", self.where)
        except (_Failed, OSError):
            pass  # the check has its answer; a server that hangs up on QUIT does not spoil it

    async def _handshake(self, writer: asyncio.StreamWriter) -> None:
        self.phase = "handshake"
        await writer.start_tls(self.context, server_hostname=self.host)
        tls = writer.get_extra_info("ssl_object")
        self.result.tls_version, self.result.cipher = tls.version(), tls.cipher()[0]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 1)
            except (OSError, ssl.SSLError, asyncio.TimeoutError):
                pass


async def _converse(host, port, context, implicit, timeout, result: SmtpCheck) -> None:
    session = _Session(host, port, context, implicit)
    try:
        async with asyncio.timeout(timeout):
            await session.run(result)
    except TimeoutError as exc:
        message = _timeout_message(session.phase, session.where, timeout)
        if session.phase == "greeting" and not implicit:
            message += " (a port with implicit TLS, like 465, waits for TLS first: switch STARTTLS off)"
        raise _Failed(message) from exc
    finally:
        await session.close()


def _timeout_message(phase: str, where: str, timeout: float) -> str:
    if phase == "connect":
        return f"cannot reach {where}: no answer within {timeout:g} s (timeout)"
    if phase == "handshake":
        return f"TLS handshake with {where} did not finish within {timeout:g} s"
    return f"{where} accepted the connection but stopped answering ({phase}) within {timeout:g} s"


def _verify_message(exc: ssl.SSLCertVerificationError, host: str, where: str, ca_file: str | None) -> str:
    code, detail = exc.verify_code, exc.verify_message
    if code in (62, 64):
        return (f"TLS certificate of {where} is not valid for the name {host!r} (hostname mismatch): "
                "use the host name the HISP's certificate carries")
    if code == 10:
        return f"TLS certificate of {where} has expired"
    if code == 9:
        return f"TLS certificate of {where} is not yet valid"
    if code in _UNKNOWN_CA:
        where_ca = f"the CA file {ca_file}" if ca_file else "this system's CA list"
        return (f"TLS certificate of {where} is not signed by a CA in {where_ca} (unknown CA: {detail}); "
                "set the CA file to the HISP's CA certificate")
    return f"TLS certificate of {where} failed verification: {detail}"


async def _legacy_only(host, port, implicit, timeout) -> str | None:
    """The TLS version a server negotiates when offered only 1.0/1.1, or None if it does not."""
    probe = SmtpCheck()
    try:
        await _converse(host, port, _legacy_context(), implicit, timeout, probe)
    except (_Failed, ssl.SSLError, OSError):
        pass
    return probe.tls_version


async def check_smtp(host: str, port: int, *, starttls: bool, ca_file: str | None,
                     timeout: float = 10) -> SmtpCheck:
    """Check the submission server as referdesk will use it; `findings` hold ok steps and at most one error."""
    result = SmtpCheck()
    where = f"{host}:{port}"
    implicit = port == IMPLICIT_TLS_PORT or not starttls
    try:
        context = client_context(ca_file)
    except FileNotFoundError:
        result.findings.append(Finding("error", f"CA file {ca_file}: file not found"))
        return result
    except ssl.SSLError:
        result.findings.append(Finding("error", f"CA file {ca_file}: holds no PEM CA certificate"))
        return result
    try:
        await _converse(host, port, context, implicit, timeout, result)
    except _Failed as exc:
        result.findings.append(Finding("error", str(exc)))
        return result
    except ssl.SSLCertVerificationError as exc:
        result.findings.append(Finding("error", _verify_message(exc, host, where, ca_file)))
        return result
    except (ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError) as exc:
        result.findings.append(Finding("error", await _handshake_message(exc, host, port, implicit, timeout)))
        return result
    mode = "implicit TLS" if implicit else "STARTTLS"
    result.findings.append(Finding("ok", f"SMTP server {host} answered ({mode})"))
    result.findings.append(Finding("ok", f"{result.tls_version} with {result.cipher}; "
                                         f"the server certificate is valid for {host}"))
    return result


async def _handshake_message(exc: Exception, host: str, port: int, implicit: bool, timeout: float) -> str:
    where = f"{host}:{port}"
    legacy = await _legacy_only(host, port, implicit, timeout)
    if legacy:
        name = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1"}.get(legacy, legacy)
        return f"{where} offers only {name}; referdesk requires TLS 1.2 or newer"
    reason = getattr(exc, "reason", None) or type(exc).__name__
    if reason in _PROTOCOL_REASONS:
        return (f"TLS handshake with {where} failed ({reason}): the server offers only TLS 1.0/1.1 or weak "
                "ciphers; referdesk requires TLS 1.2 or newer")
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE") and implicit:
        return (f"TLS handshake with {where} failed: the server did not answer in TLS; the port may expect "
                "STARTTLS (usually 587) rather than implicit TLS")
    return f"TLS handshake with {where} failed: {reason}"
