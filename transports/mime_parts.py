"""Reading a received message's MIME structure without trusting it: headers as safe text, the body text and the
attachments as bytes, with limits on nesting, part count and damage.

Messages come from outside. Python's email parser copes with most damage silently (a missing boundary turns the
whole body into one text part, truncated base64 decodes to garbage) and recurses once per nesting level, so a
message of 10,000 nested multiparts ends in RecursionError. Here every such case is a `MimeError` with one
sentence for staff (and for the failed MDN), never a silently wrong document.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import email.utils
import quopri
import re
from dataclasses import dataclass, field
from email import errors as email_errors
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser

from models.safe_text import display_text

MAX_DEPTH = 12  # multipart/mixed > multipart/alternative > ... : real messages use 3 or 4 levels
MAX_PARTS = 200
HEADER_BYTES = 256 * 1024  # the most of a message read as its header block
_ID = re.compile(r"<[^<>\s]{1,250}>")
_FATAL_DEFECTS = {
    email_errors.NoBoundaryInMultipartDefect: "a multipart part declares no MIME boundary, so its parts cannot be "
                                              "told apart",
    email_errors.StartBoundaryNotFoundDefect: "a multipart part's MIME boundary does not occur in it (wrong "
                                              "boundary), so its parts cannot be found",
    email_errors.CloseBoundaryNotFoundDefect: "the message is incomplete: a multipart part is not closed by its "
                                              "final MIME boundary (cut off in transit?)",
    email_errors.MultipartInvariantViolationDefect: "a multipart part has no parts",
}


class MimeError(ValueError):
    """Why a message's content cannot be read, in one sentence."""


@dataclass(frozen=True)
class Piece:
    """One attachment as received: its name (sanitised, never a path), media type and decoded bytes."""

    filename: str
    media_type: str
    content: bytes


@dataclass
class Contents:
    text: str = ""  # the message's own text (its text/plain body parts, joined)
    html: str = ""  # an HTML body, kept only when there is no plain text
    pieces: list[Piece] = field(default_factory=list)


# --- headers ------------------------------------------------------------------------------------------------

def read_headers(raw: bytes) -> Message:
    """The header block alone (the body is not parsed, so no structure in it can hurt)."""
    return BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw[:HEADER_BYTES])


def _bytes_text(data: bytes, charset: str | None) -> str:
    if charset and charset.lower() not in ("unknown-8bit", "us-ascii"):
        try:
            return data.decode(charset, "replace")
        except LookupError:
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")  # raw 8-bit headers are Windows-1252 far more often than not


def text_of(value) -> str:
    """A header value as safe text: RFC 2047 words decoded, raw 8-bit bytes read as UTF-8 (else Windows-1252),
    one line, no NULs, and no control characters a terminal would obey (ESC, C1, bidi overrides: shown as ␛,
    U+FFFD — models.safe_text), whether they came raw or RFC 2047-encoded."""
    if value is None:
        return ""
    try:
        pieces = decode_header(value if isinstance(value, Header) else str(value))
        readable = []
        for piece, charset in pieces:
            if isinstance(piece, str):
                piece = piece.encode("utf-8", "surrogateescape")
                charset = None
            readable.append((_bytes_text(piece, charset), None))
        text = str(make_header(readable))
    except (ValueError, LookupError, UnicodeError, email_errors.HeaderParseError, TypeError):
        text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return display_text(" ".join(text.replace("\x00", "").split()))


def header(message: Message | None, name: str, limit: int = 250) -> str:
    if message is None:
        return ""
    try:
        return text_of(message.get(name))[:limit]
    except Exception:  # noqa: BLE001 - a header that cannot even be read is an empty one
        return ""


def address(message: Message | None, name: str) -> str:
    """The bare address of a From/To-style header ("" when there is none or it is not ASCII).

    Parsed before any RFC 2047 word is decoded: a display name "=?utf-8?q?Dr_Ruiz=0D=0ABcc:_x=40y?=" decoded
    first would read as a group and yield x@y as the address."""
    try:
        raw = message.get(name) if message is not None else None
        value = email.utils.parseaddr(" ".join(str(raw or "")[:1000].split()))[1].strip()
    except Exception:  # noqa: BLE001 - a header that cannot even be read has no address
        return ""
    return value if value.isascii() and value.isprintable() and "@" in value and len(value) <= 250 else ""


def message_id(message: Message | None, name: str = "Message-ID") -> str:
    """A usable Message-ID (<...>, ASCII, no spaces), else ""."""
    value = header(message, name, 1000)
    if not value:
        return ""
    if not value.startswith("<"):
        value = f"<{value}>"
    found = _ID.fullmatch(value)
    return found.group(0) if found and value.isascii() else ""


def referenced_ids(*messages: Message | None) -> list[str]:
    """Every Message-ID named in In-Reply-To and References of `messages`, in order, once each."""
    found: list[str] = []
    for message in messages:
        for name in ("In-Reply-To", "References"):
            for token in _ID.findall(header(message, name, 10000)):
                if token.isascii() and token not in found:
                    found.append(token)
    return found


# --- the body -----------------------------------------------------------------------------------------------

def parse(raw: bytes) -> Message:
    """The whole message parsed, or MimeError when its structure is too deep to parse."""
    try:
        return email.message_from_bytes(raw, policy=email.policy.compat32)
    except RecursionError:
        raise MimeError(f"the message's MIME structure is nested too deeply to read (more than {MAX_DEPTH} "
                        "levels)") from None


def _given_name(part: Message) -> str:
    """The file name the sender gave the part (sanitised: no path, printable, at most 200 characters), or ""."""
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except Exception:  # noqa: BLE001 - a malformed parameter is no name
        name = ""
    if isinstance(name, tuple):  # RFC 2231 value the library left undecoded
        name = email.utils.collapse_rfc2231_value(name)
    name = text_of(name).replace("\\", "/").rsplit("/", 1)[-1].strip(" .")
    return "".join(ch for ch in name if ch.isprintable())[:200]


def _filename(part: Message, number: int, media_type: str) -> str:
    name = _given_name(part)
    if name:
        return name
    extension = {"text/xml": ".xml", "application/xml": ".xml", "application/pdf": ".pdf",
                 "application/zip": ".zip", "text/plain": ".txt", "text/html": ".html"}.get(media_type, "")
    if not extension and media_type.startswith("image/"):
        extension = "." + media_type.split("/", 1)[1][:8]
    return f"attachment-{number}{extension or '.bin'}"


def decode(part: Message, what: str) -> bytes:
    """The part's bytes under its Content-Transfer-Encoding; damaged base64 is an error, not garbage."""
    payload = part.get_payload()
    if not isinstance(payload, str):
        raise MimeError(f"{what} is not a single part")
    encoding = text_of(part.get("Content-Transfer-Encoding", "")).lower()
    try:
        data = payload.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        # 8-bit bytes in the body ("Zoë" sent as 8bit UTF-8): compat32 hands such a payload back already decoded
        # with the part's charset, so take the bytes as they came (quoted-printable decoded as below)
        if encoding == "base64":
            raise MimeError(f"{what} is damaged: its base64 encoding is invalid or cut short") from None
        return part.get_payload(decode=True)
    if encoding == "base64":
        compact = re.sub(rb"\s+", b"", data)
        if len(compact) % 4 or not re.fullmatch(rb"[A-Za-z0-9+/]*={0,2}", compact):
            raise MimeError(f"{what} is damaged: its base64 encoding is invalid or cut short")
        try:
            return base64.b64decode(compact, validate=True)
        except binascii.Error:
            raise MimeError(f"{what} is damaged: its base64 encoding is invalid or cut short") from None
    if encoding == "quoted-printable":
        return quopri.decodestring(data)
    return data


def _charset_text(part: Message, data: bytes) -> str:
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def contents(message: Message) -> Contents:
    """The body text and attachments of `message` (an inner Direct message), walked without recursion."""
    found = Contents()
    stack: list[tuple[Message, int]] = [(message, 0)]
    count = 0
    texts: list[str] = []
    while stack:
        part, depth = stack.pop()
        count += 1
        if count > MAX_PARTS:
            raise MimeError(f"the message has more than {MAX_PARTS} MIME parts; referdesk does not read it")
        if depth > MAX_DEPTH:
            raise MimeError(f"the message's MIME structure is nested more than {MAX_DEPTH} levels deep")
        for defect in getattr(part, "defects", ()):
            for kind, words in _FATAL_DEFECTS.items():
                if isinstance(defect, kind):
                    raise MimeError(words)
        media_type = part.get_content_type()
        if part.is_multipart():
            children = part.get_payload()
            if not children:
                raise MimeError(_FATAL_DEFECTS[email_errors.MultipartInvariantViolationDefect])
            stack.extend((child, depth + 1) for child in reversed(children))
            continue
        if media_type.startswith("multipart/"):  # declared multipart, parsed as text: the boundary is broken
            raise MimeError(_FATAL_DEFECTS[email_errors.StartBoundaryNotFoundDefect])
        disposition = text_of(part.get("Content-Disposition", "")).split(";", 1)[0].strip().lower()
        number = len(found.pieces) + 1
        has_name = bool(_given_name(part))
        if media_type in ("text/plain", "text/html") and disposition != "attachment" and not has_name:
            text = _charset_text(part, decode(part, "the message text"))
            if media_type == "text/plain":
                texts.append(text)
            elif not found.html:
                found.html = text
            continue
        filename = _filename(part, number, media_type)
        found.pieces.append(Piece(filename, media_type, decode(part, f"the attachment {filename}")))
    found.text = "\n".join(t.strip("\r\n") for t in texts if t.strip())
    if found.text:
        found.html = ""
    return found
