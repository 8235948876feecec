"""Composing the MDNs referdesk sends about messages it received (RFC 3798 and the Direct Implementation Guide
for Delivery Notification): *processed* once a message is accepted, then *dispatched* once it is filed for the
user (with an empty X-DIRECT-FINAL-DESTINATION-DELIVERY field when the sender asked for it), or *failed*.

An MDN never asks for an MDN back (no Disposition-Notification-To), and is signed and encrypted like any Direct
message when it is sent (transports/direct/smime.seal_inner).
"""

from __future__ import annotations

import datetime as dt

from transports.direct.mime import CRLF, angle_id, boundary_for, header, mail_date, multipart

DISPOSITIONS = ("processed", "dispatched", "failed")
REPORTING_UA = "referdesk; Direct receiving"
WORDS = {"processed": "was received and accepted by the recipient's system",
         "dispatched": "was delivered to the recipient",
         "failed": "could not be delivered to the recipient"}


def compose_mdn(*, disposition: str, practice_address: str, to: str, original_message_id: str,
                original_subject: str, message_id: str, date: dt.datetime, final_destination: bool = False,
                failure: str = "") -> bytes:
    """The inner MDN message (CRLF, ASCII headers). `failure` says why, for a *failed* disposition."""
    if disposition not in DISPOSITIONS:
        raise ValueError(f"unknown disposition {disposition!r}")
    human = (f"Your message {original_message_id} {WORDS[disposition]}."
             + (f" Reason: {failure}" if failure else "")).encode("ascii", "replace")
    fields = [
        header("Reporting-UA", REPORTING_UA),
        header("Original-Recipient", f"rfc822;{practice_address}"),
        header("Final-Recipient", f"rfc822;{practice_address}"),
        header("Original-Message-ID", angle_id(original_message_id)),
        header("Disposition", f"automatic-action/MDN-sent-automatically;{disposition}"),
    ]
    if disposition == "dispatched" and final_destination:
        fields.append(b"X-DIRECT-FINAL-DESTINATION-DELIVERY:" + CRLF)
    if failure:
        fields.append(header("Failure", failure.encode("ascii", "replace").decode()[:500]))
    report = header("Content-Type", "message/disposition-notification") + CRLF + b"".join(fields)
    text = header("Content-Type", "text/plain; charset=us-ascii") + CRLF + human + CRLF
    boundary = boundary_for("mdn", text, report)
    content_type, body = multipart("report", boundary, [text, report],
                                   extra_params="report-type=disposition-notification")
    subject = f"{disposition.capitalize()}: {original_subject}"[:200].encode("ascii", "replace").decode()
    return (header("From", practice_address) + header("To", to) + header("Subject", subject)
            + header("Date", mail_date(date)) + header("Message-ID", angle_id(message_id))
            + header("In-Reply-To", angle_id(original_message_id)) + header("MIME-Version", "1.0")
            + content_type + CRLF + body)
