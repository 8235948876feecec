"""Reading delivery notifications: MDNs (RFC 3798, `multipart/report; report-type=disposition-notification`)
and DSNs (RFC 3464, `report-type=delivery-status`), as HISPs send them back about our messages.

Only the facts that move a referral are taken: which message it is about, and processed / dispatched /
failed. A DSN names the original message in different places depending on the HISP (an Original-Message-ID
style field, the returned headers, In-Reply-To), so all of them are tried.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import Message

_FIELD = re.compile(r"^([A-Za-z0-9-]+)\s*:\s*(.*)$")
_ORIGINAL_ID = re.compile(r"(?:^|-)original-message-id$", re.I)


@dataclass(frozen=True)
class Notification:
    kind: str  # processed | dispatched | failed | dsn-failed | dsn-delayed | dsn-delivered
    original_message_id: str
    reporter: str  # who says so (Final-Recipient / Reporting-MTA)
    detail: str  # the disposition or status line, and any diagnostic, for the event log
    final_destination: bool = False  # X-DIRECT-FINAL-DESTINATION-DELIVERY present (dispatched to the user)


def _fields(payload: str) -> dict[str, str]:
    """Header-style fields of a report part (continuation lines folded in); the first occurrence wins except
    for per-recipient DSN fields, where the last block is the one that matters and they are all the same."""
    fields: dict[str, str] = {}
    last = None
    for line in payload.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and last:
            fields[last] += " " + line.strip()
            continue
        match = _FIELD.match(line)
        if match:
            last = match.group(1).lower()
            fields.setdefault(last, match.group(2).strip())
    return fields


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:  # message/* parts parse into sub-messages
        inner = part.get_payload()
        if isinstance(inner, list):
            return "\n".join(str(p) for p in inner)
        return str(inner or "")
    return payload.decode("utf-8", "replace")


def _angle(value: str) -> str:
    value = value.strip()
    if value and not value.startswith("<"):
        value = f"<{value}>"
    return value


def _original_id(message: Message, fields: dict[str, str]) -> str:
    for name, value in fields.items():
        if _ORIGINAL_ID.search(name) and value:
            return _angle(value)
    for part in message.walk():
        if part.get_content_type() in ("text/rfc822-headers", "message/rfc822", "message/rfc822-headers"):
            returned = _fields(_part_text(part))
            if returned.get("message-id"):
                return _angle(returned["message-id"])
    for header in ("In-Reply-To", "References"):
        if message.get(header):
            return _angle(str(message[header]).split()[0])
    if fields.get("original-envelope-id"):
        return _angle(fields["original-envelope-id"])
    return ""


def parse_notification(message: Message) -> Notification | None:
    """The notification `message` carries, or None when it is not an MDN or DSN."""
    if message.get_content_type() != "multipart/report":
        return None
    report_type = (message.get_param("report-type") or "").lower()
    wanted = {"disposition-notification": "message/disposition-notification",
              "delivery-status": "message/delivery-status"}.get(report_type)
    if wanted is None:
        return None
    part = next((p for p in message.walk() if p.get_content_type() == wanted), None)
    if part is None:
        return None
    fields = _fields(_part_text(part))
    original = _original_id(message, fields)
    if report_type == "disposition-notification":
        disposition = fields.get("disposition", "")
        kind = disposition.rsplit(";", 1)[-1].strip().lower().split("/")[0] if ";" in disposition else ""
        if kind in ("processed", "dispatched"):
            pass
        elif kind in ("failed", "failure", "error", "denied", "deleted"):
            kind = "failed"
        else:
            return None
        detail = disposition
        if fields.get("failure") or fields.get("error"):
            detail += f" — {fields.get('failure') or fields.get('error')}"
        reporter = fields.get("final-recipient", "").split(";")[-1].strip()
        return Notification(kind, original, reporter, detail,
                            "x-direct-final-destination-delivery" in fields)
    action = fields.get("action", "").lower()
    kind = {"failed": "dsn-failed", "delayed": "dsn-delayed", "delivered": "dsn-delivered",
            "relayed": "dsn-delivered", "expanded": "dsn-delivered"}.get(action)
    if kind is None:
        return None
    status = fields.get("status", "")
    diagnostic = fields.get("diagnostic-code", "").split(";", 1)[-1].strip()
    detail = " ".join(x for x in (f"status {status}" if status else "", diagnostic) if x)
    reporter = fields.get("final-recipient", fields.get("reporting-mta", "")).split(";")[-1].strip()
    return Notification(kind, original, reporter, detail)


def read_message(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)
