"""One inbound message through the pipeline: stored raw first (so nothing is lost if a later step fails),
opened, and applied. Idempotent by Message-ID: the same message fed twice changes nothing the second time.

This version handles what the sending side needs: delivery notifications (MDNs and DSNs), plain or S/MIME.
An S/MIME notification is opened with the practice's key and must carry a valid signature from a certificate
trusted for its sender; a plain one is accepted as a HISP's own DSN/MDN (HISPs send those unencrypted).
Consult reports and other clinical messages are the receiving pipeline's job and are rejected here, kept.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from email.message import Message

from models import clock
from models.delivery import record_notification
from models.referrals import InboundMessage
from transports.direct.notifications import parse_notification, read_message

MAX_BYTES = 50 * 1024 * 1024
SMIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")


@dataclass(frozen=True)
class ReceiveOutcome:
    outcome: str  # accepted | rejected | duplicate
    reason: str
    message_id: str
    matched_referral: int | None = None

    def as_json(self) -> dict:
        return {"outcome": self.outcome, "reason": self.reason, "message_id": self.message_id,
                "matched_referral": self.matched_referral}


def _address(value: str | None) -> str:
    return email.utils.parseaddr(value or "")[1]


def _store(raw: bytes, message: Message | None) -> InboundMessage:
    get = (lambda name: str(message.get(name, "") or "")) if message is not None else (lambda name: "")
    return InboundMessage.create(message_id=get("Message-ID").strip()[:250], in_reply_to=get("In-Reply-To")[:250],
                                 from_address=_address(get("From"))[:250], to_address=_address(get("To"))[:250],
                                 subject=get("Subject")[:250], received_at=clock.now(), raw=raw)


def _settle(row: InboundMessage, outcome: ReceiveOutcome) -> ReceiveOutcome:
    InboundMessage.update(state="filed" if outcome.outcome == "accepted" else "rejected",
                          error="" if outcome.outcome == "accepted" else outcome.reason,
                          referral=outcome.matched_referral).where(InboundMessage.id == row.id).execute()
    return outcome


def _open_smime(raw: bytes, message: Message, opener) -> tuple[Message | None, str]:
    """The inner message of an S/MIME one, or why it cannot be accepted."""
    if opener is None:
        return None, "an encrypted message arrived but Direct is not set up here (no key to open it)"
    return opener(raw, message)


def receive_message(raw: bytes, *, opener=None) -> ReceiveOutcome:
    """Process one RFC 5322 message. `opener(raw, message) -> (inner Message | None, reason)` decrypts and
    checks an S/MIME message (transports.direct.receiving builds one from the practice's identity)."""
    if len(raw) > MAX_BYTES:
        row = _store(raw[:0], None)
        return _settle(row, ReceiveOutcome("rejected", f"message too large ({len(raw) // 1024 // 1024} MB; "
                                                       f"the limit is {MAX_BYTES // 1024 // 1024} MB)", ""))
    message = read_message(raw)
    message_id = str(message.get("Message-ID", "") or "").strip()
    if message_id:
        earlier = (InboundMessage.select().where(InboundMessage.message_id == message_id,
                                                 InboundMessage.state == "filed").first())
        if earlier is not None:
            return ReceiveOutcome("duplicate", "this message was processed before; nothing changed", message_id,
                                  earlier.referral_id)
    row = _store(raw, message)
    if not message_id:
        return _settle(row, ReceiveOutcome("rejected", "the message has no Message-ID", ""))
    inner = message
    if message.get_content_type() in SMIME_TYPES:
        inner, reason = _open_smime(raw, message, opener)
        if inner is None:
            return _settle(row, ReceiveOutcome("rejected", reason, message_id))
    notification = parse_notification(inner)
    if notification is None:
        return _settle(row, ReceiveOutcome(
            "rejected", "not a delivery notification; clinical messages are not received by this version "
                        "(kept in the inbound store)", message_id))
    if not notification.original_message_id:
        return _settle(row, ReceiveOutcome("rejected", "the notification does not say which message it is about",
                                           message_id))
    result = record_notification(notification.original_message_id, notification.kind,
                                 sender=notification.reporter or _address(inner.get("From")),
                                 detail=notification.detail)
    if result.effect == "unmatched":
        return _settle(row, ReceiveOutcome("rejected", f"a {notification.kind} notification about "
                                                       f"{notification.original_message_id}, which is not a "
                                                       "message we sent", message_id))
    reason = {"delivered": "delivery confirmed: the referral is delivered",
              "failed": "delivery failed: the referral is marked failed",
              "recorded": f"{notification.kind} notification recorded",
              "late": f"{notification.kind} notification arrived after the referral settled; recorded",
              "duplicate": f"{notification.kind} notification already recorded"}[result.effect]
    return _settle(row, ReceiveOutcome("accepted", reason, message_id, result.referral_id))
