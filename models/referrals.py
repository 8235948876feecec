"""Referrals, every step of their delivery, the documents sent and received, and the outbox that sends them."""

from __future__ import annotations

import peewee as pw

from models.db import BaseModel
from models.patients import Note, Patient
from models.practice import User
from models.contacts import Contact

#: Referral statuses in the order a delivery moves through them (ARCHITECTURE.md "Referral statuses").
STATUSES = ("queued", "sending", "sent", "delivered", "report-received", "failed", "cancelled")
DIRECTIONS = ("transferring", "receiving")
CHANNELS = ("direct", "efax", "print")


class Referral(BaseModel):
    patient = pw.ForeignKeyField(Patient, backref="referrals", on_delete="RESTRICT")
    note = pw.ForeignKeyField(Note, null=True, backref="referrals", on_delete="SET NULL")
    direction = pw.CharField(default="transferring")
    channel = pw.CharField()
    recipient = pw.CharField()  # Direct address, fax number or folder/printer
    recipient_name = pw.CharField(default="")
    contact = pw.ForeignKeyField(Contact, null=True, backref="referrals", on_delete="SET NULL")
    reason = pw.TextField(default="")
    urgency = pw.CharField(default="routine")  # routine | urgent | stat
    subject = pw.CharField(default="")
    message = pw.TextField(default="")
    include_note = pw.BooleanField(default=True)
    excluded_sections = pw.TextField(default="[]")  # JSON list of Summary of Care section keys left out
    status = pw.CharField(default="queued", index=True)
    status_reason = pw.TextField(default="")
    message_id = pw.CharField(null=True, unique=True)
    created_by = pw.ForeignKeyField(User, null=True, backref="referrals", on_delete="SET NULL")
    created_at = pw.DateTimeField(index=True)
    sent_at = pw.DateTimeField(null=True)
    delivered_at = pw.DateTimeField(null=True)
    report_received_on = pw.DateField(null=True)


class ReferralEvent(BaseModel):
    referral = pw.ForeignKeyField(Referral, backref="events", on_delete="CASCADE")
    at = pw.DateTimeField()
    kind = pw.CharField()  # a status, or: mdn-processed, mdn-dispatched, mdn-late, note
    detail = pw.TextField(default="")


class InboundMessage(BaseModel):
    """A message as it arrived (raw bytes first, so nothing is lost), then what became of it."""

    message_id = pw.CharField(default="", index=True)
    in_reply_to = pw.CharField(default="")
    from_address = pw.CharField(default="")
    to_address = pw.CharField(default="")
    subject = pw.CharField(default="")
    received_at = pw.DateTimeField()
    raw = pw.BlobField()
    state = pw.CharField(default="new", index=True)  # new | filed | unfiled | rejected | failed
    error = pw.TextField(default="")  # why rejected (quarantined) or failed, in words for staff
    kind = pw.CharField(default="")  # report | notification | other
    channel = pw.CharField(default="")  # file | smtp | imap
    signer_fingerprint = pw.CharField(default="")  # SHA-256 of the trusted signer's certificate
    mdn_requested = pw.BooleanField(default=False)  # Disposition-Notification-To was present
    final_delivery_requested = pw.BooleanField(default=False)  # X-DIRECT-FINAL-DESTINATION-DELIVERY asked
    processed_at = pw.DateTimeField(null=True)
    referral = pw.ForeignKeyField(Referral, null=True, backref="inbound", on_delete="SET NULL")
    patient = pw.ForeignKeyField(Patient, null=True, backref="inbound", on_delete="SET NULL")


class Document(BaseModel):
    """A file kept for the practice (owner 'practice') or in a patient's chart (owner 'patient')."""

    owner = pw.CharField(default="patient")  # patient | practice
    patient = pw.ForeignKeyField(Patient, null=True, backref="documents", on_delete="RESTRICT")
    referral = pw.ForeignKeyField(Referral, null=True, backref="documents", on_delete="SET NULL")
    inbound = pw.ForeignKeyField(InboundMessage, null=True, backref="documents", on_delete="SET NULL")
    kind = pw.CharField(default="")  # ccda | xdm | note-pdf | fax-cover | report | other
    title = pw.CharField()
    filename = pw.CharField()
    media_type = pw.CharField()
    content = pw.BlobField()
    size = pw.IntegerField()
    sha256 = pw.CharField(max_length=64)
    created_at = pw.DateTimeField()


class OutboxJob(BaseModel):
    """Work for a transport worker. Claimed atomically with a lease, so a crashed worker's job comes back.
    `kind` referral: send the referral; mdn: send `payload` (an MDN composed when it was due) to `recipient`
    about `inbound`. A fax job keeps its destination in `recipient` (one fax in flight per number) and its
    options and send count as JSON in `payload`; a print job its options there."""

    kind = pw.CharField(default="referral")
    referral = pw.ForeignKeyField(Referral, null=True, backref="jobs", on_delete="CASCADE")
    inbound = pw.ForeignKeyField(InboundMessage, null=True, backref="jobs", on_delete="CASCADE")
    recipient = pw.CharField(default="")
    payload = pw.BlobField(null=True)
    channel = pw.CharField()
    # pending | claimed | waiting (handed to a provider that reports later: polled when due) | done | failed
    state = pw.CharField(default="pending", index=True)
    attempts = pw.IntegerField(default=0)
    due_at = pw.DateTimeField(index=True)
    lease_until = pw.DateTimeField(null=True)
    claimed_by = pw.CharField(default="")
    external_id = pw.CharField(default="", index=True)  # the provider's id for what was handed over (a fax id)
    last_error = pw.TextField(default="")
    created_at = pw.DateTimeField()


class AuditEvent(BaseModel):
    """Who did what to which record. Holds ids and actions only, never PHI. Append-only and hash-chained:
    written only through models.audit.record (see there)."""

    at = pw.DateTimeField(index=True)
    username = pw.CharField(default="")
    action = pw.CharField()
    object_type = pw.CharField(default="")
    object_id = pw.CharField(default="")
    detail = pw.TextField(default="")
    patient_mrn = pw.CharField(default="", index=True)  # the patient the action concerned, by MRN only
    outcome = pw.CharField(default="ok")  # ok, or what went wrong / the verdict (failed, untrusted, …)
    prev_hash = pw.CharField(max_length=64, default="")  # the hash of the row before (models.audit.GENESIS first)
    hash = pw.CharField(max_length=64, default="")  # SHA-256 over prev_hash and this row's values
