"""The inner RFC 5322 message of a Direct referral and the MIME plumbing the S/MIME layers share.

Everything is built as bytes with CRLF line endings and ASCII headers, because the signature covers these exact
bytes: letting a library re-serialise them (LF endings, refolded headers) is how signatures break in transit.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime
from urllib.parse import quote

CRLF = b"\r\n"
MDN_OPTIONS = "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true"
_TOKEN = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$")


@dataclass(frozen=True)
class Part:
    """One attachment: a C-CDA (text/xml), an XDM package (application/zip), a PDF (application/pdf)."""
    filename: str
    content_type: str
    data: bytes


def canonical(data: bytes) -> bytes:
    """CRLF line endings everywhere (RFC 5751 §3.1.1 canonical form)."""
    crlf = data.count(CRLF)
    if crlf == data.count(b"\n") == data.count(b"\r"):
        return data
    return data.replace(CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n", CRLF)


def base64_lines(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, CRLF after each (the last included)."""
    return base64.encodebytes(data).replace(b"\n", CRLF)


def boundary_for(tag: str, *parts: bytes) -> str:
    """A boundary derived from the content, so a resend is byte-identical. '=_' never occurs in base64 or
    quoted-printable text, so it cannot collide with the encoded bodies it separates."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return f"=_{tag}_{digest.hexdigest()[:32]}"


def _header_value(name: str, value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{name} must be a single line")
    return value


def _ascii(name: str, value: str) -> str:
    value = _header_value(name, value).strip()
    if not value.isascii():
        raise ValueError(f"{name} must be ASCII: {value!r}")
    return value


def header(name: str, value: str) -> bytes:
    return f"{name}: {value}".encode("ascii") + CRLF


def _address_list(name: str, addresses: list[str]) -> bytes:
    if not addresses:
        raise ValueError(f"{name} needs at least one address")
    return header(name, ",\r\n ".join(_ascii(name, a) for a in addresses))


def _subject(subject: str) -> bytes:
    subject = _header_value("Subject", subject)
    charset = "us-ascii" if subject.isascii() else "utf-8"
    return header("Subject", Header(subject, charset, maxlinelen=76, header_name="Subject").encode(linesep="\r\n"))


def angle_id(value: str) -> str:
    """A Message-ID in angle brackets, ASCII, one line."""
    value = _ascii("Message-ID", value)
    return value if value.startswith("<") and value.endswith(">") else f"<{value.strip('<>')}>"


def mail_date(date: dt.datetime) -> str:
    """RFC 5322 date; naive datetimes are UTC, as models.clock keeps them."""
    if date.tzinfo is None:
        date = date.replace(tzinfo=dt.timezone.utc)
    return format_datetime(date)


def _filename_params(filename: str) -> tuple[str, str]:
    """(Content-Type name param, Content-Disposition filename param); RFC 2231 for non-ASCII names."""
    filename = _header_value("filename", filename).replace("\\", "_").replace('"', "_") or "attachment"
    if filename.isascii():
        return f'name="{filename}"', f'filename="{filename}"'
    encoded = "utf-8''" + quote(filename, safe="")
    return f"name*={encoded}", f"filename*={encoded}"


def text_part(text: str) -> bytes:
    """text/plain in quoted-printable: readable when ASCII, safe when not, CRLF either way."""
    body = canonical(text.encode("utf-8"))
    if not body.endswith(CRLF):
        body += CRLF  # also makes b2a_qp use CRLF for its soft line breaks
    return (header("Content-Type", "text/plain; charset=utf-8")
            + header("Content-Transfer-Encoding", "quoted-printable") + CRLF
            + binascii.b2a_qp(body, istext=True))


def attachment_part(part: Part) -> bytes:
    content_type = part.content_type.strip().lower()
    if not _TOKEN.match(content_type):
        raise ValueError(f"not a MIME type: {part.content_type!r}")
    name, filename = _filename_params(part.filename)
    return (header("Content-Type", f"{content_type}; {name}")
            + header("Content-Transfer-Encoding", "base64")
            + header("Content-Disposition", f"attachment; {filename}") + CRLF
            + base64_lines(part.data))


def multipart(subtype: str, boundary: str, parts: list[bytes], extra_params: str = "") -> tuple[bytes, bytes]:
    """(Content-Type header line, body) for a multipart entity; each part is already canonical."""
    body = b"".join(b"--" + boundary.encode() + CRLF + p + (b"" if p.endswith(CRLF) else CRLF) for p in parts)
    body += b"--" + boundary.encode() + b"--" + CRLF
    params = f"{extra_params};\r\n " if extra_params else ""
    return header("Content-Type", f'multipart/{subtype}; {params}boundary="{boundary}"'), body


def compose_message(*, sender: str, recipients: list[str], subject: str, text: str, attachments: list[Part],
                    message_id: str, date: dt.datetime, request_mdn: bool = True) -> bytes:
    """The inner message a Direct referral wraps, signs and encrypts (STANDARDS.md "Direct message format").

    Deterministic: the same inputs give the same bytes, so a retry resends the same message."""
    parts = [text_part(text)] + [attachment_part(a) for a in attachments]
    boundary = boundary_for("mixed", message_id.encode(), *parts)
    content_type, body = multipart("mixed", boundary, parts)
    sender = _ascii("From", sender)
    headers = (header("Date", mail_date(date)) + header("From", sender) + _address_list("To", recipients)
               + _subject(subject) + header("Message-ID", angle_id(message_id))
               + header("MIME-Version", "1.0"))
    if request_mdn:
        headers += header("Disposition-Notification-Options", MDN_OPTIONS)
        headers += header("Disposition-Notification-To", sender)
    return headers + content_type + CRLF + body


def wrap_rfc822(message: bytes) -> bytes:
    """The whole message as a message/rfc822 entity: what a wrapped Direct message signs."""
    return header("Content-Type", "message/rfc822") + CRLF + canonical(message)


def transport_headers(*, sender: str, recipients: list[str], subject: str, message_id: str,
                      date: dt.datetime) -> bytes:
    """The outer headers the HISP routes by (From, To, Subject, Date, Message-ID, MIME-Version)."""
    return (header("From", _ascii("From", sender)) + _address_list("To", recipients) + _subject(subject)
            + header("Date", mail_date(date)) + header("Message-ID", angle_id(message_id))
            + header("MIME-Version", "1.0"))
