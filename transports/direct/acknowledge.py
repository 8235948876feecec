"""The MDNs referdesk owes the sender of a message it accepted (STANDARDS.md "Delivery notification"): to whom,
about which message, and whether the sender asked to hear of final delivery; composed by
transports/direct/mdn.py and queued in the outbox (models.outbox.queue_mdn), which seals and sends them.

Only messages that passed the trust check are acknowledged, and never an MDN or DSN.
A *dispatched* MDN for a message nobody could file yet is composed now and queued **held** (OutboxJob state
"held", which no worker claims); models.inbox.attach_to_patient releases it once staff file the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from models import clock
from models.outbox import queue_mdn
from models.referrals import OutboxJob
from models.referring import new_message_id
from transports.direct.mdn import compose_mdn
from transports.mime_parts import address, header, message_id

HELD = "held"
_FINAL = re.compile(r"x-direct-final-destination-delivery\s*=\s*(?:optional|required)\s*,\s*true", re.I)


@dataclass(frozen=True)
class MdnTarget:
    recipient: str  # Disposition-Notification-To, else From
    practice_address: str  # the MDN's From and Final-Recipient
    original_message_id: str
    original_subject: str
    requested: bool  # Disposition-Notification-To was present
    final_destination: bool  # X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true (or required,true) asked


def target_for(inner: Message, outer: Message, *, practice_address: str) -> MdnTarget | None:
    """Where the MDNs about this message go; the signed (inner) headers win over the envelope's. None when there
    is nobody to send them to."""

    def first(getter, name: str) -> str:
        return getter(inner, name) or getter(outer, name)

    notify_to = first(address, "Disposition-Notification-To")
    sender = first(address, "From")
    recipient = notify_to or sender
    if not recipient:
        return None
    options = first(header, "Disposition-Notification-Options")
    to = practice_address or first(address, "To")
    return MdnTarget(recipient=recipient, practice_address=to or recipient,
                     original_message_id=first(message_id, "Message-ID"),
                     original_subject=first(header, "Subject")[:150],
                     requested=bool(notify_to), final_destination=bool(_FINAL.search(options)))


def compose(target: MdnTarget, disposition: str, *, failure: str = "") -> bytes:
    return compose_mdn(disposition=disposition, practice_address=target.practice_address, to=target.recipient,
                       original_message_id=target.original_message_id, original_subject=target.original_subject,
                       message_id=new_message_id(), date=clock.now(),
                       final_destination=disposition == "dispatched" and target.final_destination,
                       failure=failure)


def queue(inbound_id: int, target: MdnTarget, disposition: str, *, failure: str = "",
          held: bool = False) -> OutboxJob:
    """Queue one MDN (call inside the transaction that records what it reports)."""
    job = queue_mdn(inbound_id, target.recipient, compose(target, disposition, failure=failure))
    if held:
        OutboxJob.update(state=HELD).where(OutboxJob.id == job.id).execute()
    return job
