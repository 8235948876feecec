"""Making a referral: what the user chose, checked, then stored with its documents and its outbox job in one
transaction, so a referral is either wholly queued or not there at all. Sending is the transports' job."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import peewee as pw

from models import clock
from models.addresses import AddressError, check_direct_address, check_fax_number
from models.audit import record
from models.contacts import Contact
from models.db import database, database_problem
from models.documents import Attachment, file_document
from models.patients import Note, Patient
from models.practice import Practice, User
from models.referrals import CHANNELS, DIRECTIONS, Document, OutboxJob, Referral, ReferralEvent
from models.redact import remember_patient
from models.safe_text import one_line

#: The Summary of Care items, in the order the dialog lists them. All are sent unless the user unticks them.
SUMMARY_OF_CARE: list[tuple[str, str]] = [
    ("problems", "Problems"),
    ("medications", "Medications"),
    ("allergies", "Allergies"),
    ("immunizations", "Immunizations"),
    ("vital_signs", "Vital signs"),
    ("results", "Results"),
    ("procedures", "Procedures"),
    ("smoking_status", "Smoking status"),
    ("goals", "Goals"),
    ("health_concerns", "Health concerns"),
    ("care_team", "Care team"),
    ("assessment_plan", "Assessment and plan"),
    ("reason_for_referral", "Reason for referral"),
]
SECTION_KEYS = {key for key, _ in SUMMARY_OF_CARE}
URGENCIES = ("routine", "urgent", "stat")


class ReferralError(ValueError):
    """A referral that cannot be made as asked; the message says why and what to do."""


@dataclass
class ReferralDraft:
    """Everything the user decided, before anything is stored."""

    patient_id: int
    note_id: int | None
    channel: str
    direction: str = "transferring"
    include_note: bool = True
    excluded_sections: tuple[str, ...] = ()
    reason: str = ""
    urgency: str = "routine"
    recipient: str = ""
    recipient_name: str = ""
    contact_id: int | None = None
    subject: str = ""
    message: str = ""
    username: str = ""
    extra: dict = field(default_factory=dict)


def sendable_note(note_id: int) -> Note:
    """The note, if it may be sent; ReferralError says why not (only signed notes leave the practice)."""
    note = Note.get_or_none(Note.id == note_id)
    if note is None:
        raise ReferralError(f"no note with id {note_id}")
    if not note.signed:
        raise ReferralError(
            f"this note is not signed: only signed notes can be sent. Ask {note.author.display_name} to sign it."
        )
    return note


def default_subject(patient: Patient, direction: str) -> str:
    what = "Referral" if direction == "transferring" else "Consultation report"
    return f"{what}: {patient.last_name}, {patient.first_name} (DOB {patient.birth_date:%m/%d/%Y})"


def default_message(patient: Patient, direction: str, reason: str, channel: str = "direct") -> str:
    """The message a user starts from. A fax carries it on the cover sheet, so it speaks of the pages that
    follow and asks for the report by fax; Direct speaks of the attached document and asks for a reply."""
    practice = Practice.select().first()
    sender = practice.name if practice else "our practice"
    what = "the enclosed referral" if channel == "efax" else "the attached Transition of Care document"
    if direction == "transferring":
        body = f"Please see {what} for {patient.first_name} {patient.last_name}, referred to you by {sender}."
        if reason.strip():
            body += f"\n\nReason for referral: {reason.strip()}"
        if channel == "efax" and practice is not None and practice.fax:
            return body + f"\n\nPlease fax your consultation report back to {practice.fax}."
        return body + "\n\nPlease send your consultation report back to this address."
    return (f"Please find {'enclosed' if channel == 'efax' else 'attached'} our report on {patient.first_name} "
            f"{patient.last_name}, whom you referred to {sender}.")


def check_recipient(channel: str, recipient: str) -> str:
    """The recipient in its stored form for the channel; ReferralError for anything malformed."""
    try:
        if channel == "direct":
            return check_direct_address(recipient)
        if channel == "efax":
            return check_fax_number(recipient)
    except AddressError as exc:
        raise ReferralError(str(exc)) from exc
    if not recipient.strip():
        raise ReferralError("choose a folder, or printer:QUEUE")
    return recipient.strip()


def _validate(draft: ReferralDraft) -> tuple[Patient, Note | None, str]:
    if draft.channel not in CHANNELS:
        raise ReferralError(f"unknown channel {draft.channel!r}; use one of {', '.join(CHANNELS)}")
    if draft.direction not in DIRECTIONS:
        raise ReferralError(f"unknown direction {draft.direction!r}; use transferring or receiving")
    if draft.urgency not in URGENCIES:
        raise ReferralError(f"unknown urgency {draft.urgency!r}; use one of {', '.join(URGENCIES)}")
    unknown = set(draft.excluded_sections) - SECTION_KEYS
    if unknown:
        raise ReferralError(f"unknown Summary of Care sections: {', '.join(sorted(unknown))}")
    patient = Patient.get_or_none(Patient.id == draft.patient_id)
    if patient is None:
        raise ReferralError(f"no patient with id {draft.patient_id}")
    note = sendable_note(draft.note_id) if draft.note_id is not None else None
    if note is not None and note.patient_id != patient.id:
        raise ReferralError("that note belongs to another patient")
    return patient, note, check_recipient(draft.channel, draft.recipient)


def new_message_id() -> str:
    practice = Practice.select().first()
    domain = practice.direct_address.split("@")[-1] if practice and "@" in practice.direct_address else "referdesk.invalid"
    return f"<{uuid.uuid4().hex}@{domain}>"


def create_referral(draft: ReferralDraft, attachments: list[Attachment]) -> Referral:
    """Store the referral, its attachments (in the patient's and the practice's Documents) and its outbox job,
    all or nothing."""
    patient, note, recipient = _validate(draft)
    remember_patient(patient)  # from here on, this process's log lines never show who it is (models/redact.py)
    now = clock.now()
    user = User.get_or_none(User.username == draft.username) if draft.username else None
    try:
        return _store_referral(draft, attachments, patient, note, recipient, user, now)
    except pw.OperationalError as exc:  # disk full, locked too long: rolled back, nothing of it was kept
        problem = database_problem(exc)
        if problem is None:
            raise
        raise ReferralError(f"the referral could not be stored: {problem}") from exc


def _store_referral(draft: ReferralDraft, attachments: list[Attachment], patient: Patient, note: Note | None,
                    recipient: str, user, now) -> Referral:
    with database.atomic():
        referral = Referral.create(
            patient=patient,
            note=note,
            direction=draft.direction,
            channel=draft.channel,
            recipient=recipient,
            recipient_name=draft.recipient_name.strip(),
            contact=Contact.get_or_none(Contact.id == draft.contact_id) if draft.contact_id else None,
            reason=draft.reason.strip(),
            urgency=draft.urgency,
            # A subject is a mail header: one line, no control characters, whatever a name or the user typed.
            subject=one_line(draft.subject.strip() or default_subject(patient, draft.direction), 255),
            message=draft.message,
            include_note=draft.include_note,
            excluded_sections=json.dumps(sorted(draft.excluded_sections)),
            status="queued",
            message_id=new_message_id(),
            created_by=user,
            created_at=now,
        )
        # Filed twice, as the practice keeps its own record of what left it: the patient's chart and the
        # practice's Documents each get a copy, both linked to the referral (whose status says if it went).
        for attachment in (*attachments, _message_copy(referral, now)):
            for owner in ("patient", "practice"):
                file_document(attachment, owner=owner, patient=patient, referral=referral)
        ReferralEvent.create(referral=referral, at=now, kind="queued",
                             detail=f"{len(attachments)} attachment(s), waiting for the {draft.channel} worker")
        OutboxJob.create(referral=referral, channel=draft.channel, due_at=now, created_at=now,
                         recipient=recipient if draft.channel == "efax" else "",
                         payload=_job_options(draft))
        record("referral.create", username=draft.username, patient_mrn=patient.mrn, object_type="referral",
               object_id=str(referral.id), detail=f"channel={draft.channel}")
    return referral


def _job_options(draft: ReferralDraft) -> bytes | None:
    """What the worker needs beyond the referral itself: for print, the CUPS queue (if any)."""
    if draft.channel != "print":
        return None
    printer = str((draft.extra or {}).get("printer") or "").strip()
    return json.dumps({"printer": printer}).encode() if printer else None


def _message_copy(referral: Referral, now) -> Attachment:
    """The words that went with the attachments, kept with them: who it was for, subject, and the text."""
    text = (f"To: {referral.recipient_name + ' ' if referral.recipient_name else ''}<{referral.recipient}>\n"
            f"Via: {CHANNEL_NAMES[referral.channel]}\nDate: {now:%Y-%m-%d %H:%M} UTC\n"
            f"Subject: {referral.subject}\nMessage-ID: {referral.message_id}\n\n{referral.message}\n")
    return Attachment(filename=f"message-{referral.id}.txt", media_type="text/plain; charset=utf-8",
                      content=text.encode("utf-8"), kind="message", title=f"Message: {referral.subject}"[:200])


def suggested_reason(patient_id: int) -> str:
    """The reason the chart already gives: the latest planned referral, if any."""
    from models.clinical import PlanItem

    item = (
        PlanItem.select()
        .where(PlanItem.patient == patient_id, PlanItem.description.startswith("Referral to"))
        .order_by(PlanItem.planned_on.desc())
        .first()
    )
    return item.description if item else ""


CHANNEL_NAMES = {"direct": "Direct", "efax": "eFax", "print": "print"}


def referral_outcome(referral_id: int) -> tuple[str, str]:
    """What to tell the user about a referral just made, and its kind: sent, queued or failed. Queued is never
    called sent: a fax handed to its provider is "Faxing" until the provider confirms it."""
    from models.addresses import format_fax

    referral = Referral.get_by_id(referral_id)
    to = format_fax(referral.recipient) if referral.channel == "efax" else referral.recipient
    if referral.channel == "print":
        if referral.status in ("delivered", "report-received"):
            home = str(Path.home())
            detail = _last_detail(referral, "delivered").replace(f" in {home}/", " in ~/")  # shorter to read
            return f"Saved — referral #{referral.id}: {detail}", "sent"
        if referral.status == "failed":
            return f"Not saved — referral #{referral.id}: {referral.status_reason}", "failed"
    if referral.channel == "efax":
        if referral.status in ("delivered", "report-received"):
            return (f"Successfully Sent — fax to {to} delivered "
                    f"({_last_detail(referral, 'delivered').removeprefix('fax delivered by ')}).", "sent")
        if referral.status == "sent":
            return f"Faxing — referral #{referral.id} to {to}: waiting for the fax service to confirm it…", "queued"
    documents = referral.documents.where(Document.owner == "patient", Document.kind != "message").count()
    if referral.status in ("sent", "delivered", "report-received"):
        return f"Successfully Sent — referral #{referral.id} to {to}.", "sent"
    if referral.status == "failed":
        return f"Not sent — referral #{referral.id}: {referral.status_reason}", "failed"
    if referral.status == "sending":
        return f"Sending — referral #{referral.id} to {to}…", "queued"
    if referral.status == "queued" and referral.status_reason:  # a try failed and another is due
        return (f"Queued — referral #{referral.id} is stored and will be retried: {referral.status_reason}",
                "queued")
    return (f"Queued — referral #{referral.id} and {documents} document(s) are stored; it is sent when the "
            f"{CHANNEL_NAMES[referral.channel]} outbox worker runs.", "queued")


def _last_detail(referral: Referral, kind: str) -> str:
    event = (ReferralEvent.select(ReferralEvent.detail).where(ReferralEvent.referral == referral.id,
                                                              ReferralEvent.kind == kind)
             .order_by(ReferralEvent.id.desc()).first())
    return event.detail if event else kind


def faxed_before(number: str) -> bool:
    """Has a fax to this number (stored form) ever gone through? If not, the user confirms the number before
    the first one: a mistyped digit sends a patient's record to a stranger's machine."""
    return (Referral.select(Referral.id)
            .where(Referral.channel == "efax", Referral.recipient == number,
                   Referral.status.in_(("delivered", "report-received")))
            .exists())
