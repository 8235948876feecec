"""Fax by email: mail the PDF to `<number>@<gateway domain>` and let the gateway dial.

The mail goes through the same SMTP client as Direct (transports.direct.smtp_send: TLS 1.2+, verified
certificate), so the fax leaves the practice encrypted to the same standard. The headers carry nothing about the
patient: gateways print the subject and body on cover pages and keep them in logs, so the Subject is "Fax" and a
token derived from our reference, never FaxRequest.subject. The outcome comes back later as an emailed report
(transports.efax.gateway_report); a gateway can neither be asked nor told to cancel.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import hashlib
import re
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from models import clock
from transports.direct.smtp_send import PermanentSendError, SmtpSettings, TransientSendError, send_message
from transports.efax.base import IN_PROGRESS, FaxError, FaxRequest, FaxStatus

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}")
_ID_TEXT = re.compile(r"[!-~]{1,240}")  # printable ASCII, no space: safe as a header value
_E164 = re.compile(r"\+?([1-9][0-9]{6,14})")


def _domain(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("[efax] gateway_domain is missing: give the fax gateway's mail domain, "
                         "e.g. gateway_domain = \"fax.example.net\"")
    domain = value.strip().lower().rstrip(".")
    if "@" in domain or "://" in domain or len(domain) > 253 or not _DOMAIN.fullmatch(domain) \
            or domain.rsplit(".", 1)[-1].isdigit():
        raise ValueError(f"[efax] gateway_domain {value.strip()!r} is not a domain name: give only the part after "
                         "the @ of the gateway's fax addresses, e.g. \"fax.example.net\"")
    return domain


def _from_address(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value.strip()):
        raise ValueError(f"{key} {value!r} is not an email address (the gateway sends its reports there), "
                         "e.g. \"fax@riverbend.example\"")
    return value.strip()


def _one_line(text: str, limit: int) -> str:
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[:limit]


def _filename(name: str) -> str:
    """A bare file name (no path) ending in .pdf: some gateways refuse attachments by extension."""
    name = _one_line(name.replace("\\", "/").rsplit("/", 1)[-1], 120).strip(" .") or "fax"
    return name if name.lower().endswith(".pdf") else f"{name}.pdf"


class SmtpGatewayProvider:
    """A FaxProvider for email-to-fax gateways; `env` holds the SMTP password (os.environ when None)."""

    name = "smtp-gateway"

    def __init__(self, settings: SmtpSettings, gateway_domain: str, from_address: str,
                 env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.gateway_domain = _domain(gateway_domain)
        self.from_address = _from_address(from_address, "the fax from address")
        self.env = env

    @classmethod
    def from_config(cls, efax_section: Mapping[str, Any], smtp_section: Mapping[str, Any] | None,
                    env: Mapping[str, str] | None, default_from: str | None) -> "SmtpGatewayProvider":
        """[efax] gateway_domain (required) and from_address (else `default_from`); SMTP from [efax.smtp] when the
        gateway has its own mail server, else the practice's [smtp]. ValueError names the key that is wrong."""
        domain = _domain(efax_section.get("gateway_domain"))
        sender = efax_section.get("from_address") or default_from
        if not sender:
            raise ValueError("[efax] from_address is missing: give the address the gateway should send its "
                             "delivery reports to, e.g. from_address = \"fax@riverbend.example\"")
        sender = _from_address(sender, "[efax] from_address")
        own = efax_section.get("smtp")
        if own is not None:
            if not isinstance(own, Mapping):
                raise ValueError("[efax] smtp must be a table ([efax.smtp]) with host, port, ...")
            try:
                settings = SmtpSettings.from_config(own)
            except ValueError as exc:
                raise ValueError(str(exc).replace("[smtp]", "[efax.smtp]", 1)) from None
        else:
            settings = SmtpSettings.from_config(smtp_section or {})
        return cls(settings, domain, sender, env)

    def address_for(self, number: str) -> str:
        """`+15551230001` -> `15551230001@fax.example.net`; FaxError (permanent) for anything not E.164."""
        match = _E164.fullmatch(number.strip()) if isinstance(number, str) else None
        if match is None:
            raise FaxError("the fax number is not in international (E.164) form, e.g. +15551234567",
                           transient=False)
        return f"{match.group(1)}@{self.gateway_domain}"

    def message_id(self, reference: str) -> str:
        """The reference as a Message-ID: already `<local@domain>`, or wrapped into one."""
        value = reference.strip() if isinstance(reference, str) else ""
        if not _ID_TEXT.fullmatch(value):
            raise FaxError("the fax reference cannot be used as a Message-ID (empty, spaces or non-ASCII)",
                           transient=False)
        inner = value[1:-1] if value.startswith("<") and value.endswith(">") else value.strip("<>")
        if "<" in inner or ">" in inner or not inner:
            raise FaxError("the fax reference cannot be used as a Message-ID", transient=False)
        if "@" not in inner:
            inner = f"{inner}@{self.from_address.rsplit('@', 1)[1]}"
        return f"<{inner}>"

    def compose(self, request: FaxRequest, *, date: dt.datetime | None = None) -> tuple[str, bytes]:
        """(Message-ID, the message as CRLF bytes). Nothing from request.subject goes into it."""
        message_id = self.message_id(request.reference)
        token = hashlib.sha256(message_id.encode()).hexdigest()[:8]
        when = (date or clock.now())
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        message = EmailMessage()
        message["From"] = self.from_address
        message["To"] = self.address_for(request.to)
        message["Subject"] = f"Fax {token}"
        message["Date"] = email.utils.format_datetime(when)
        message["Message-ID"] = message_id
        sender_line = _one_line(request.header_text or "", 100)
        body = (f"Fax from {sender_line}.\n" if sender_line else "") + "The document to fax is the attached PDF.\n"
        message.set_content(body)
        filename = _filename(request.filename)
        message.add_attachment(bytes(request.pdf), maintype="application", subtype="pdf", filename=filename,
                               params={"name": filename})
        return message_id, message.as_bytes(policy=email.policy.SMTP)

    async def send(self, request: FaxRequest) -> str:
        """Mail the fax; the Message-ID is the fax id the gateway's report will refer to (In-Reply-To)."""
        if not request.pdf:
            raise FaxError("there is no PDF to fax (empty document)", transient=False)
        message_id, raw = self.compose(request)
        recipient = self.address_for(request.to)
        try:
            await send_message(raw, mail_from=self.from_address, rcpt_to=[recipient], settings=self.settings,
                               env=self.env)
        except TransientSendError as exc:
            raise FaxError(str(exc), transient=True) from None
        except PermanentSendError as exc:
            raise FaxError(str(exc), transient=False) from None
        return message_id

    async def status(self, fax_id: str) -> FaxStatus:
        """A gateway cannot be asked: the fax stays in progress until its emailed report is read."""
        return FaxStatus(IN_PROGRESS)

    async def cancel(self, fax_id: str) -> None:
        raise FaxError("an email-to-fax gateway cannot cancel a fax once mailed", transient=False)
