"""Reading the report an email-to-fax gateway mails back after dialling: which fax, how it went, whether to retry.

Gateways word these freely, so the reading is lenient, in this order:

* Which fax: In-Reply-To, else References, else a `Message-ID:` / `Original-Message-ID:` / `X-Fax-Reference:`
  field in the report's headers or text, else the Message-ID of an attached copy of our email (message/rfc822
  or text/rfc822-headers). A report that names no fax is not one (None): it could not be matched anyway.
* The outcome: a `Status:` (or Result/Fax Status/Delivery Status/Outcome) field, else the Subject, else the
  first telling phrase of the text. "Success", "delivered", "successfully sent", "completed" are SUCCESS;
  "failed", "unsuccessful", "could not be delivered", "not sent" are FAILURE (a negation wins over the success
  word inside it); "partial", or "Pages: 2 of 5" short of the total, is PARTIAL. It must say "fax" somewhere
  (subject, text or sender), so an ordinary reply to one of our emails is not taken for a report.
* Pages: `Pages: N` (or `Pages sent: N of M`), else "N pages". Reason: `Reason:` / `Error:` / `Failure reason:`,
  else the line that said it failed. Number: `Number:` / `Fax number:` / `Recipient:` / `To:` field, else a
  `<digits>@` address; digits only, "" when none.
* Retry: busy, no answer, line error, communication error, timeout... are transient; a bad, unallocated or
  not-in-service number, not a fax machine, a document the gateway cannot convert... are permanent, and so is
  anything not recognised: never keep dialling a number that may be wrong. A PARTIAL got through to a fax
  machine, so unless its reason says otherwise it is worth resending.
* A bounce (multipart/report DSN, Action: failed) for a `<digits>@domain` recipient is a FAILURE too.

Never raises: input is capped (MAX_REPORT_BYTES, MAX_PARTS, MAX_TEXT) and anything malformed is None.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser

from transports.efax.base import FAILURE, PARTIAL, SUCCESS, FaxStatus
from transports.mime_parts import header, message_id, referenced_ids

MAX_REPORT_BYTES = 512 * 1024  # reports are a few KB; one that quotes our whole email (PDF and all) is cut here
MAX_PARTS = 50
MAX_TEXT = 64 * 1024

_ID = re.compile(r"<[!-;=?-~]{1,250}>")  # printable ASCII without < > or space
_FIELD = re.compile(r"^[ \t>*\-]*([A-Za-z][A-Za-z .\-]{0,38}?)[ \t]*[:=](.*)$", re.M)
# Field names, most specific first (the first one present is used).
_STATUS_FIELDS = ("fax status", "transmission status", "delivery status", "job status", "status", "fax result",
                  "transmission result", "result", "outcome")
_PAGE_FIELDS = ("pages sent", "pages transmitted", "pages delivered", "pages", "page count", "number of pages",
                "page")
_TOTAL_FIELDS = ("total pages", "pages total", "document pages")
_REASON_FIELDS = ("failure reason", "reason for failure", "reason", "error message", "error description", "error",
                  "failure cause", "cause", "failure")
_NUMBER_FIELDS = ("fax number", "recipient fax", "to fax", "recipient number", "destination number",
                  "remote number", "called number", "number", "fax no", "fax", "recipient", "destination", "sent to",
                  "to")
_ID_FIELDS = ("x-fax-reference", "fax reference", "original-message-id", "original message-id",
              "original message id", "message-id", "reference")

_FAILURE = (r"\bfail(?:ed|ure|s)?\b|\bunsuccessful(?:ly)?\b|\bundeliver(?:able|ed)\b|\bnot\s+(?:been\s+)?"
            r"(?:successfully\s+)?(?:sent|delivered|transmitted|completed)\b|\b(?:could|can)\s*not\s+(?:be\s+)?"
            r"(?:sent|delivered|transmitted|completed|send|deliver|transmit|complete)\b|\bcouldn't\b|\bunable\s+to\b"
            r"|\berror\b")
_SUCCESS = (r"\bsuccess(?:ful(?:ly)?)?\b|\bdelivered\b(?!-)|\b(?:was|were|been|has|have)\s+(?:sent|transmitted|"
            r"completed)\b|\bsent\s+(?:successfully|ok)\b")
# In a Status field or the Subject short words are safe ("Status: Sent", "Subject: Fax completed") and any
# failure word outweighs them ("Fax sent notification: failed"); in running text they are not ("Sent: Mon, 2 Nov"
# is a date line), so a text line is read with the narrower pattern and its first telling phrase counts. At one
# position the failure wording is tried first, so "not successfully sent" is a failure.
_OUTCOME_TERSE = re.compile(rf"(?P<partial>\bpartial(?:ly)?\b)|(?P<failure>{_FAILURE})|(?P<success>{_SUCCESS}"
                            r"|\bsent\b|\btransmitted\b|\bcompleted?\b|\bok\b|\bdone\b)", re.I)
_OUTCOME_TEXT = re.compile(rf"(?P<partial>\bpartial(?:ly)?\b)|(?P<failure>{_FAILURE})|(?P<success>{_SUCCESS})",
                           re.I)
# Permanent is checked first: when a report mentions both, do not risk re-dialling a wrong number.
_PERMANENT = re.compile(
    r"\b(?:invalid|bad|wrong|unallocated|unassigned|incorrect|disconnected)\s+(?:fax\s+|phone\s+|destination\s+)?"
    r"(?:number|no\b)|\bnot\s+in\s+service\b|\bout\s+of\s+service\b|\bno\s+longer\s+in\s+service\b"
    r"|\bnot\s+a\s+fax\b|\bno\s+fax\s+(?:tone|machine|detected)|\bvoice\s+(?:answer|line|detected)|\bhuman\s+answer"
    r"|\bconver(?:sion|t)\b|\bunsupported\b|\bcorrupt|\bunreadable\b|\bencrypted\s+(?:pdf|document|file)"
    r"|\bno\s+(?:attachment|document)\b|\btoo\s+(?:large|many\s+pages)\b|\bblock(?:ed|list)|\bblacklist"
    r"|\bdo\s+not\s+fax\b|\bopted?\s+out\b|\brejected\b|\brefused\b",
    re.I)
_TRANSIENT = re.compile(
    r"\bbusy\b|\bno[\s-]+answer\b|\bnot\s+answered\b|\bring[\s-]+no[\s-]+answer\b|\bline\s+(?:error|busy|problem|"
    r"failure|noise|dropped)\b|\bcommunication\s+(?:error|failure)\b|\bcomm(?:s)?\s+error\b|\btime[\s-]?out\b"
    r"|\btimed\s+out\b|\b(?:call|connection)\s+(?:dropped|lost|interrupted)\b|\bno\s+carrier\b|\bno\s+dial\s*tone\b"
    r"|\bdisconnect(?:ed)?\b|\bcongest|\bnetwork\s+(?:error|failure|problem)\b|\btemporar(?:y|ily)\b"
    r"|\btry\s+again\b|\bhung\s+up\b",
    re.I)
_FAX_WORD = re.compile(r"fax", re.I)
_PAGES_OF = re.compile(r"^\s*(\d{1,4})(?:\s*(?:of|/)\s*(\d{1,4}))?\b")
_N_PAGES = re.compile(r"\b(\d{1,4})\s+pages?\b", re.I)
_FAX_ADDRESS = re.compile(r"(?<![\w.+-])\+?(\d{7,15})@[A-Za-z0-9.-]+")
# Tags are bounded in length so text full of "<" cannot make the substitution quadratic.
_LINE_TAGS = re.compile(r"<(?:br|/p|/tr|/div|/li|/h\d|/table)\b[^<>]{0,500}>", re.I)
_TAG = re.compile(r"<[^<>]{0,500}>")


@dataclass(frozen=True)
class GatewayReport:
    fax_id: str  # the Message-ID of our fax email, <...>
    status: FaxStatus
    number: str  # the dialled number as the gateway reports it, digits only; "" when it does not say


def parse_gateway_report(raw: bytes) -> GatewayReport | None:
    """The fax report `raw` carries, or None when it is not recognisably one (or cannot be read at all)."""
    try:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            return None
        message = email.message_from_bytes(bytes(raw[:MAX_REPORT_BYTES]), policy=email.policy.compat32)
        return _bounce(message) if message.get_content_type() == "multipart/report" else _report(message)
    except Exception:  # noqa: BLE001 - damaged input of any kind (RecursionError included) is "not a report"
        return None


def _report(message: Message) -> GatewayReport | None:
    subject = header(message, "Subject", 500)
    texts, attached = _texts(message)
    text = "\n".join(texts)[:MAX_TEXT]
    if not (_FAX_WORD.search(subject) or _FAX_WORD.search(text) or _FAX_WORD.search(header(message, "From"))):
        return None
    fields = _fields(text)
    fax_id = _fax_id(message, fields, attached)
    if not fax_id:
        return None
    state, said = _state(fields, subject, text)
    if state is None:
        return None
    pages, total = _pages(fields, text)
    if state != PARTIAL and pages is not None and total is not None and 0 < pages < total:
        state = PARTIAL
    reason = _clean(next((fields[k] for k in _REASON_FIELDS if fields.get(k)), ""))
    if state == SUCCESS:
        return GatewayReport(fax_id, FaxStatus(SUCCESS, pages=pages), _number(fields, text, attached))
    verdict = _transient(f"{reason} {said}")
    reason = reason or _clean(said)
    transient = (verdict is not False) if state == PARTIAL else bool(verdict)
    return GatewayReport(fax_id, FaxStatus(state, reason=reason, transient=transient, pages=pages),
                         _number(fields, text, attached))


def _texts(message: Message) -> tuple[list[str], list[Message]]:
    """The report's own text parts (plain preferred over HTML) and any attached copies of our email's headers.
    An attached email is not read for text: its words are ours (or anyone's), not the gateway's verdict."""
    plain: list[str] = []
    markup: list[str] = []
    attached: list[Message] = []
    stack, seen = [message], 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        kind = part.get_content_type()
        payload = part.get_payload()
        if kind == "message/rfc822":
            attached.extend(m for m in (payload if isinstance(payload, list) else []) if isinstance(m, Message))
        elif part.is_multipart():
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
        elif kind in ("text/rfc822-headers", "message/rfc822-headers"):
            attached.append(BytesHeaderParser(policy=email.policy.compat32).parsebytes(_payload(part)[:MAX_TEXT]))
        elif kind in ("text/plain", "text/html"):
            data = _payload(part)
            try:
                body = data.decode(part.get_content_charset() or "utf-8", "replace")
            except LookupError:
                body = data.decode("utf-8", "replace")
            (plain if kind == "text/plain" else markup).append(body[:MAX_TEXT])
    if not plain:
        plain = [html.unescape(_TAG.sub(" ", _LINE_TAGS.sub("\n", m))) for m in markup]
    return [t.replace("\r\n", "\n").replace("\r", "\n") for t in plain], attached


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""


def _fields(text: str) -> dict[str, str]:
    """`Name: value` lines, names lower-cased with spaces collapsed; the first occurrence wins."""
    found: dict[str, str] = {}
    for match in _FIELD.finditer(text):
        found.setdefault(" ".join(match.group(1).lower().rstrip(" .").split()), match.group(2).strip())
    return found


def _fax_id(message: Message, fields: dict[str, str], attached: list[Message]) -> str:
    for candidate in referenced_ids(message):
        if _ID.fullmatch(candidate):
            return candidate
    for name in ("X-Fax-Reference", "Original-Message-ID"):
        found = message_id(message, name)
        if found:
            return found
    for name in _ID_FIELDS:
        found = _ID.search(fields.get(name, ""))
        if found:
            return found.group(0)
    for copy in attached:
        found = message_id(copy)
        if found:
            return found
    return ""


def _state(fields: dict[str, str], subject: str, text: str) -> tuple[str | None, str]:
    """(state, the words that said so): the Status field, else the Subject, else the first telling line."""
    for name in _STATUS_FIELDS:
        value = fields.get(name)
        if value:
            state = _outcome(value)
            if state:
                return state, value
    state = _outcome(subject)
    if state:
        return state, subject
    for line in text.split("\n"):
        state = _first_outcome(line)
        if state:
            return state, line
    return None, ""


_STATES = {"partial": PARTIAL, "failure": FAILURE, "success": SUCCESS}


def _outcome(words: str) -> str | None:
    """Terse words (a Status value, a Subject): partial, else failure, else success, wherever they stand."""
    said = {match.lastgroup for match in _OUTCOME_TERSE.finditer(words)}
    return next((_STATES[kind] for kind in _STATES if kind in said), None)


def _first_outcome(line: str) -> str | None:
    """Running text: the first telling phrase of the line."""
    match = _OUTCOME_TEXT.search(line)
    return _STATES[match.lastgroup] if match and match.lastgroup else None


def _pages(fields: dict[str, str], text: str) -> tuple[int | None, int | None]:
    """(pages sent, pages in the document): "Pages: 2 of 5", "Pages sent: 2" + "Total pages: 5", "3 pages"."""
    total = next((int(m.group(1)) for m in (_PAGES_OF.match(fields.get(k, "")) for k in _TOTAL_FIELDS) if m), None)
    for name in _PAGE_FIELDS:
        match = _PAGES_OF.match(fields.get(name, ""))
        if match:
            return int(match.group(1)), int(match.group(2)) if match.group(2) else total
    match = _N_PAGES.search(text)
    return (int(match.group(1)), total) if match else (None, total)


def _transient(reason: str) -> bool | None:
    """True / False when the words say which; None when they are not recognised."""
    if _PERMANENT.search(reason):
        return False
    if _TRANSIENT.search(reason):
        return True
    return None


def _number(fields: dict[str, str], text: str, attached: list[Message]) -> str:
    for name in _NUMBER_FIELDS:
        value = fields.get(name, "")
        at = _FAX_ADDRESS.search(value)
        if at:
            return at.group(1)
        if value and re.fullmatch(r"[+\d\s().\-/]{7,30}", value):
            digits = re.sub(r"\D", "", value)
            if 7 <= len(digits) <= 15:
                return digits
    for source in [text] + [header(copy, "To", 1000) for copy in attached]:
        at = _FAX_ADDRESS.search(source)
        if at:
            return at.group(1)
    return ""


def _clean(text: str) -> str:
    """The provider's words, one printable line, short enough for an event log."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[:200]


def _bounce(message: Message) -> GatewayReport | None:
    """A DSN saying our fax email never reached the gateway's dialler (e.g. "550 5.1.1 not a fax number")."""
    from transports.direct.notifications import parse_notification

    notification = parse_notification(message)
    if notification is None or notification.kind != "dsn-failed":
        return None
    at = _FAX_ADDRESS.fullmatch(notification.reporter.strip())
    fax_id = notification.original_message_id
    if at is None or not _ID.fullmatch(fax_id):
        return None
    reason = _clean(notification.detail)
    return GatewayReport(fax_id, FaxStatus(FAILURE, reason=reason, transient=bool(_transient(reason))),
                         at.group(1))
