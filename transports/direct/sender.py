"""Sending one queued referral by Direct: re-verify the recipient, seal what was stored at Send, hand it to
the HISP.

The message is rebuilt from the referral's stored Documents, with the Message-ID and Date fixed when the
referral was made, so a retry after a crash sends the same message (not a re-rendered one). The outcome is a
plain value; the outbox worker turns it into ReferralEvents.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from dataclasses import dataclass
from typing import Mapping

from cryptography.hazmat.primitives.asymmetric import rsa

from models.config import Config
from models.redact import remember_patient
from models.referrals import Document, Referral
from transports.direct.identity import DirectSetupError, Identity, load_identity
from transports.direct.recipient import DirectSettings, check_recipient
from transports.direct.setup import DEFAULT_P12_PASSWORD_ENV, direct_settings_missing, passphrase_from_env
from transports.direct.smime import Part, seal_message
from transports.direct.smtp_send import (PermanentSendError, SmtpConnection, SmtpSettings, TransientSendError,
                                         send_message)

# Verdicts that waiting may change (DNS outage); every other non-verified verdict fails the referral.
RETRYABLE_VERDICTS = ("dns-error",)
MEDIA_TYPES = {"ccda": "text/xml", "xdm": "application/zip", "note-pdf": "application/pdf"}


class DirectNotReady(Exception):
    """Direct is not set up well enough to send (missing settings, unreadable certificate)."""


@dataclass(frozen=True)
class SendOutcome:
    state: str  # sent | retry | failed
    detail: str


@dataclass
class DirectContext:
    """Everything a worker needs to send by Direct, loaded once: the practice's identity (the key stays in
    memory only), recipient-verification settings and the HISP's SMTP settings."""

    address: str
    identity: Identity
    trust: DirectSettings
    smtp: SmtpSettings
    env: Mapping[str, str]

    @classmethod
    def from_config(cls, config: Config, env: Mapping[str, str] | None = None) -> "DirectContext":
        env = os.environ if env is None else env
        missing = direct_settings_missing(config)
        if missing:
            raise DirectNotReady(f"Direct is not set up ({', '.join(missing)} missing): run referdesk setup direct")
        direct = config.section("direct")
        password = passphrase_from_env(str(direct.get("password_env") or DEFAULT_P12_PASSWORD_ENV), env)
        try:
            identity = load_identity(str(direct["certificate"]), password)
        except DirectSetupError as exc:
            raise DirectNotReady(f"the practice's Direct certificate cannot be used: {exc}") from exc
        try:
            smtp = SmtpSettings.from_config(config.section("smtp"))
            trust = DirectSettings.from_config(config)
        except ValueError as exc:
            raise DirectNotReady(str(exc)) from exc
        return cls(str(direct["address"]).strip(), identity, trust, smtp, env)


def _attachments(referral: Referral) -> tuple[str, list[Part]]:
    """The message text and the files exactly as stored when the user pressed Send."""
    documents = (Document.select().where(Document.referral == referral.id, Document.owner == "patient",
                                         Document.kind.in_(("note", "ccda", "xdm", "note-pdf")))
                 .order_by(Document.id))
    parts = [Part(doc.filename, MEDIA_TYPES.get(doc.kind, doc.media_type.split(";")[0].strip()), bytes(doc.content))
             for doc in documents]
    return referral.message or referral.subject, parts


def _load(referral_id: int) -> Referral:
    """The referral (on a thread: a database round trip must not stall the other messages in flight)."""
    referral = Referral.get_by_id(referral_id)
    remember_patient(referral.patient)  # whatever a server answers about this message, logs show no PHI of it
    return referral


async def send_referral(referral_id: int, context: DirectContext,
                        connection: SmtpConnection | None = None) -> SendOutcome:
    """`connection`: an open session to reuse (a worker's batch); else one is opened for this message."""
    referral = await asyncio.to_thread(_load, referral_id)
    verdict = await asyncio.to_thread(check_recipient, referral.recipient, context.trust)
    if verdict.state != "verified":
        state = "retry" if verdict.state in RETRYABLE_VERDICTS else "failed"
        return SendOutcome(state, f"{verdict.state}: {verdict.reason}")
    certificates = [c for c in verdict.certificates if isinstance(c.public_key(), rsa.RSAPublicKey)]
    if not certificates:  # EC key agreement (ECDH) is not implemented for sending
        return SendOutcome("failed", "the recipient's Direct certificate has an EC key; referdesk can only "
                                     "encrypt to RSA certificates — ask the recipient for an RSA certificate")
    text, parts = await asyncio.to_thread(_attachments, referral)
    raw = await asyncio.to_thread(
        seal_message, sender=context.address, recipients=[referral.recipient], subject=referral.subject,
        text=text, attachments=parts, message_id=referral.message_id,
        date=referral.created_at.replace(tzinfo=dt.timezone.utc),
        identity=context.identity, recipient_certs=certificates)
    try:
        if connection is None:
            receipt = await send_message(raw, mail_from=context.address, rcpt_to=[referral.recipient],
                                         settings=context.smtp, env=context.env)
        else:
            receipt = await connection.send(raw, mail_from=context.address, rcpt_to=[referral.recipient])
    except TransientSendError as exc:
        return SendOutcome("retry", str(exc))
    except PermanentSendError as exc:
        return SendOutcome("failed", str(exc))
    if receipt.rejected:
        code, message = next(iter(receipt.rejected.values()))
        return SendOutcome("failed", f"the HISP refused the recipient: {code} {message}")
    return SendOutcome("sent", f"accepted by {context.smtp.host}: {receipt.code} {receipt.message}".strip()
                       + f"; certificate {verdict.fingerprint[:16]}… ({verdict.binding}-bound)")


async def send_mdn(job_id: int, context: DirectContext, connection: SmtpConnection | None = None) -> SendOutcome:
    """An MDN job: the notification composed when it was due, sealed to its recipient now."""
    import email
    import email.policy
    import email.utils

    from models.referrals import OutboxJob
    from transports.direct.smime import seal_inner

    job = OutboxJob.get_by_id(job_id)
    inner = bytes(job.payload)
    headers = email.message_from_bytes(inner.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=email.policy.compat32)
    verdict = await asyncio.to_thread(check_recipient, job.recipient, context.trust)
    if verdict.state != "verified":
        state = "retry" if verdict.state in RETRYABLE_VERDICTS else "failed"
        return SendOutcome(state, f"{verdict.state}: {verdict.reason}")
    certificates = [c for c in verdict.certificates if isinstance(c.public_key(), rsa.RSAPublicKey)]
    if not certificates:
        return SendOutcome("failed", "the sender's Direct certificate has an EC key; referdesk can only encrypt "
                                     "to RSA certificates")
    date = email.utils.parsedate_to_datetime(headers["Date"])
    raw = await asyncio.to_thread(
        seal_inner, inner, sender=context.address, recipients=[job.recipient], subject=str(headers["Subject"]),
        message_id=str(headers["Message-ID"]), date=date, identity=context.identity, recipient_certs=certificates)
    try:
        if connection is None:
            await send_message(raw, mail_from=context.address, rcpt_to=[job.recipient], settings=context.smtp,
                               env=context.env)
        else:
            await connection.send(raw, mail_from=context.address, rcpt_to=[job.recipient])
    except TransientSendError as exc:
        return SendOutcome("retry", str(exc))
    except PermanentSendError as exc:
        return SendOutcome("failed", str(exc))
    return SendOutcome("sent", f"MDN accepted by {context.smtp.host}")
