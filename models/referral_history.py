"""Referral history: what was sent, where it stands, and the three things staff may do about it afterwards
(mark the report received, resend a failed one, cancel one still waiting).

The TUI and `referdesk referrals` both read and act through these functions, so the rules about which
referral may be changed, and how, live in one place. Every change is one transaction: the referral, its event,
its outbox job and the audit record move together or not at all. Status guards are re-checked by the UPDATE
itself, so an outbox worker that picks a referral up at the same moment wins cleanly instead of racing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from peewee import fn

from models import clock
from models.addresses import format_fax
from models.audit import record_referral
from models.db import database
from models.patients import Patient
from models.referrals import STATUSES, Document, OutboxJob, Referral, ReferralEvent
from models.referring import new_message_id

#: Statuses still on their way: nothing final has happened yet.
OPEN_STATUSES = ("queued", "sending", "sent")
#: What the status filter accepts: every status, plus "open" for the three above.
STATUS_FILTERS = ("open", *STATUSES)
DEFAULT_LIMIT = 500


class HistoryError(ValueError):
    """A request the history cannot honour; the message says why, in words for staff."""


class ReferralNotFound(HistoryError):
    pass


@dataclass(frozen=True, slots=True)
class ReferralRow:
    """One referral as lists show it: display-ready, detached from the database."""

    id: int
    patient_id: int
    mrn: str
    patient_name: str  # "Last, First"
    direction: str
    recipient: str  # display form: fax numbers as (555) 555-0100
    recipient_name: str
    channel: str
    created_at: dt.datetime
    sent_at: dt.datetime | None
    status: str
    status_reason: str
    report_received_on: dt.date | None
    message_id: str

    def as_json(self) -> dict:
        data = asdict(self)
        for key in ("created_at", "sent_at", "report_received_on"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        return data


@dataclass(frozen=True, slots=True)
class EventRow:
    at: dt.datetime
    kind: str
    detail: str

    def as_json(self) -> dict:
        return {"at": self.at.isoformat(), "kind": self.kind, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class AttachmentRow:
    """A document sent or filed with the referral, described without its content."""

    id: int
    filename: str
    media_type: str
    size: int
    kind: str


@dataclass(frozen=True, slots=True)
class ReferralDetail:
    row: ReferralRow
    events: tuple[EventRow, ...]  # oldest first
    attachments: tuple[AttachmentRow, ...]
    reason: str  # the reason for referral, as the clinician wrote it
    urgency: str
    subject: str
    delivered_at: dt.datetime | None


# --- reading ----------------------------------------------------------------------------------------------

_ROW_FIELDS = (
    Referral.id, Referral.patient, Referral.direction, Referral.channel, Referral.recipient,
    Referral.recipient_name, Referral.created_at, Referral.sent_at, Referral.status, Referral.status_reason,
    Referral.report_received_on, Referral.message_id, Patient.id, Patient.mrn, Patient.last_name, Patient.first_name,
)


def display_recipient(channel: str, recipient: str) -> str:
    return format_fax(recipient) if channel == "efax" else recipient


def local_today() -> dt.date:
    """Today where the user is: a report that came in at 8 pm in Illinois came in "today", not tomorrow."""
    return clock.local(clock.now()).date()


def _row(ref: Referral) -> ReferralRow:
    patient = ref.patient
    return ReferralRow(
        id=ref.id,
        patient_id=patient.id,
        mrn=patient.mrn,
        patient_name=f"{patient.last_name}, {patient.first_name}",
        direction=ref.direction,
        recipient=display_recipient(ref.channel, ref.recipient),
        recipient_name=ref.recipient_name,
        channel=ref.channel,
        created_at=ref.created_at,
        sent_at=ref.sent_at,
        status=ref.status,
        status_reason=ref.status_reason,
        report_received_on=ref.report_received_on,
        message_id=ref.message_id or "",
    )


def _utc_start(day: dt.date) -> dt.datetime:
    """The stored (naive UTC) time at which the user's local `day` begins."""
    return dt.datetime.combine(day, dt.time()).astimezone(dt.timezone.utc).replace(tzinfo=None)


def parse_mdy(text: str) -> dt.date:
    """A date typed as MM/DD/YYYY (M/D/YYYY too), the way US staff write it; HistoryError says what is wrong."""
    value = text.strip()
    if not value:
        raise HistoryError("enter a date as MM/DD/YYYY")
    parts = value.split("/")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or len(parts[2]) != 4:
        raise HistoryError(f"{value!r} is not a date: use MM/DD/YYYY, e.g. 11/02/2026")
    try:
        return dt.date(int(parts[2]), int(parts[0]), int(parts[1]))
    except ValueError:
        raise HistoryError(f"{value!r} is not a date on the calendar: use MM/DD/YYYY") from None


def check_status_filter(status: str | None) -> None:
    if status is not None and status not in STATUS_FILTERS:
        raise HistoryError(f"unknown status {status!r}; use one of: {', '.join(STATUS_FILTERS)}")


def list_referrals(*, status: str | None = None, since: dt.date | None = None, until: dt.date | None = None,
                   patient_id: int | None = None, limit: int = DEFAULT_LIMIT) -> list[ReferralRow]:
    """Referrals newest first. `since`/`until` are the user's local dates, both included; `status` may be
    "open" (queued, sending or sent)."""
    check_status_filter(status)
    if since and until and since > until:
        raise HistoryError(f"the From date {since:%m/%d/%Y} is after the To date {until:%m/%d/%Y}")
    if limit < 1:
        raise HistoryError("limit must be at least 1")
    query = Referral.select(*_ROW_FIELDS).join(Patient)
    if status == "open":
        query = query.where(Referral.status.in_(OPEN_STATUSES))
    elif status is not None:
        query = query.where(Referral.status == status)
    if since is not None:
        query = query.where(Referral.created_at >= _utc_start(since))
    if until is not None:
        query = query.where(Referral.created_at < _utc_start(until + dt.timedelta(days=1)))
    if patient_id is not None:
        query = query.where(Referral.patient == patient_id)
    query = query.order_by(Referral.created_at.desc(), Referral.id.desc()).limit(limit)
    return [_row(ref) for ref in query]


def _get(referral_id: int) -> Referral:
    ref = Referral.select(*_ROW_FIELDS).join(Patient).where(Referral.id == referral_id).first()
    if ref is None:
        raise ReferralNotFound(f"no referral with id {referral_id}")
    return ref


def get_referral(referral_id: int) -> ReferralRow:
    return _row(_get(referral_id))


def events_by_referral(referral_ids: list[int]) -> dict[int, list[EventRow]]:
    """Every listed referral's events, oldest first, in one query per 500 ids (not one per referral)."""
    found: dict[int, list[EventRow]] = {rid: [] for rid in referral_ids}
    for start in range(0, len(referral_ids), 500):
        chunk = referral_ids[start:start + 500]
        query = (ReferralEvent.select(ReferralEvent.referral, ReferralEvent.at, ReferralEvent.kind,
                                      ReferralEvent.detail)
                 .where(ReferralEvent.referral.in_(chunk))
                 .order_by(ReferralEvent.at, ReferralEvent.id))
        for event in query:
            found[event.referral_id].append(EventRow(event.at, event.kind, event.detail))
    return found


def referral_detail(referral_id: int) -> ReferralDetail:
    """The referral, its events oldest first and its attachments (described, their content left unread)."""
    row = get_referral(referral_id)
    extra = (Referral.select(Referral.reason, Referral.urgency, Referral.subject, Referral.delivered_at)
             .where(Referral.id == referral_id).get())
    documents = (Document.select(Document.id, Document.filename, Document.media_type, Document.size, Document.kind)
                 # the patient's copy; the practice keeps an identical one of everything sent
                 .where(Document.referral == referral_id, Document.owner == "patient",
                        Document.kind != "message")  # the message text is filed, not attached
                 .order_by(Document.created_at, Document.id))
    return ReferralDetail(
        row=row,
        events=tuple(events_by_referral([referral_id])[referral_id]),
        attachments=tuple(AttachmentRow(d.id, d.filename, d.media_type, d.size, d.kind) for d in documents),
        reason=extra.reason,
        urgency=extra.urgency,
        subject=extra.subject,
        delivered_at=extra.delivered_at,
    )


# --- what may be done: a refusal in words, or None ---------------------------------------------------------


def mark_received_refusal(row: ReferralRow) -> str | None:
    """Why the consultant's report cannot be marked received for this referral, or None when it can."""
    if row.direction != "transferring":
        return (f"referral {row.id} is one we received: a consultation report comes back only for referrals "
                "we sent")
    if row.status in ("sent", "delivered"):
        return None
    if row.status == "report-received":
        when = f" on {row.report_received_on:%m/%d/%Y}" if row.report_received_on else ""
        return f"referral {row.id} already has its report (received{when})"
    if row.status == "failed":
        return (f"referral {row.id} failed and never reached the recipient, so no report can come back; "
                "resend it first")
    if row.status == "cancelled":
        return f"referral {row.id} was cancelled, so no report is expected"
    return f"referral {row.id} has not been sent yet (it is {row.status}); a report can only follow once it is"


def resend_refusal(row: ReferralRow) -> str | None:
    if row.status == "failed":
        return None
    if row.status == "cancelled":
        return f"referral {row.id} was cancelled; make a new referral to send it again"
    if row.status in OPEN_STATUSES:
        return f"referral {row.id} is still {row.status}: only a failed referral can be resent"
    return f"referral {row.id} was {row.status}: only a failed referral can be resent"


def cancel_refusal(row: ReferralRow) -> str | None:
    if row.status == "queued":
        return None
    if row.status == "cancelled":
        return f"referral {row.id} is already cancelled"
    if row.status == "sending":
        return f"referral {row.id} is being sent right now and can no longer be cancelled"
    return f"referral {row.id} is {row.status}: only a referral still queued can be cancelled"


# --- acting ----------------------------------------------------------------------------------------------


def _guarded_update(referral_id: int, expected: tuple[str, ...], **changes) -> None:
    """Apply `changes` only if the referral is still in an `expected` status: a worker may have moved it since
    it was read, and then the action must not happen."""
    updated = (Referral.update(**changes)
               .where(Referral.id == referral_id, Referral.status.in_(expected)).execute())
    if not updated:
        current = Referral.get_by_id(referral_id).status
        raise HistoryError(f"referral {referral_id} changed meanwhile (it is now {current}); nothing was done")


def _audit(now: dt.datetime, username: str, action: str, referral_id: int, detail: str = "") -> None:
    record_referral(action, referral_id, username=username, detail=detail)


def mark_report_received(referral_id: int, on: dt.date, *, username: str = "",
                         document_id: int | None = None) -> ReferralRow:
    """Close the loop on a referral we sent: the consultant's report arrived on `on` (optionally filed as
    `document_id`, which is then linked to the referral)."""
    row = get_referral(referral_id)
    refusal = mark_received_refusal(row)
    if refusal:
        raise HistoryError(refusal)
    today = local_today()
    if on > today:
        raise HistoryError(f"the report date {on:%m/%d/%Y} is in the future; use today ({today:%m/%d/%Y}) "
                           "or the day it arrived")
    created_on = clock.local(row.created_at).date()
    if on < created_on:
        raise HistoryError(f"the report date {on:%m/%d/%Y} is before the referral was made "
                           f"({created_on:%m/%d/%Y})")
    document = None
    if document_id is not None:
        document = Document.select(Document.id, Document.patient, Document.referral).where(
            Document.id == document_id).first()
        if document is None:
            raise HistoryError(f"no document with id {document_id}")
        if document.patient_id not in (None, row.patient_id):
            raise HistoryError(f"document {document_id} is in another patient's chart")
        if document.referral_id not in (None, referral_id):
            raise HistoryError(f"document {document_id} already belongs to referral {document.referral_id}")
    now = clock.now()
    detail = f"report dated {on:%m/%d/%Y} marked received" + (f" by {username}" if username else "")
    if document is not None:
        detail += f"; filed as document {document_id}"
    with database.atomic():
        _guarded_update(referral_id, ("sent", "delivered"), status="report-received", report_received_on=on,
                        status_reason="")
        if document is not None:
            Document.update(referral=referral_id).where(Document.id == document_id).execute()
        ReferralEvent.create(referral=referral_id, at=now, kind="report-received", detail=detail)
        _audit(now, username, "referral.report_received", referral_id,
               f"document_id={document_id}" if document is not None else "")
    return get_referral(referral_id)


def resend_referral(referral_id: int, *, username: str = "") -> ReferralRow:
    """Queue a failed referral again. It goes as a new message with a fresh Message-ID, so a late answer to
    the failed one cannot be mistaken for an answer to this one; the old id stays in the audit record."""
    row = get_referral(referral_id)
    refusal = resend_refusal(row)
    if refusal:
        raise HistoryError(refusal)
    now = clock.now()
    with database.atomic():
        _guarded_update(referral_id, ("failed",), status="queued", status_reason="", message_id=new_message_id(),
                        sent_at=None, delivered_at=None)
        job = OutboxJob.create(referral=referral_id, channel=row.channel, due_at=now, created_at=now)
        ReferralEvent.create(referral=referral_id, at=now, kind="queued",
                             detail=f"resent by {username}" if username else "resent")
        _audit(now, username, "referral.resend", referral_id,
               f"job_id={job.id}; previous_message_id={row.message_id}")
    return get_referral(referral_id)


def cancel_referral(referral_id: int, *, username: str = "") -> ReferralRow:
    """Stop a referral no worker has picked up yet. Its pending outbox jobs are cancelled with it; a job a
    worker has already claimed means sending has begun, and then cancelling is refused."""
    row = get_referral(referral_id)
    refusal = cancel_refusal(row)
    if refusal:
        raise HistoryError(refusal)
    now = clock.now()
    with database.atomic():
        _guarded_update(referral_id, ("queued",), status="cancelled")
        if OutboxJob.select().where(OutboxJob.referral == referral_id, OutboxJob.state == "claimed").exists():
            raise HistoryError(f"referral {referral_id} has just been picked up for sending and can no longer "
                               "be cancelled")
        jobs = (OutboxJob.update(state="cancelled")
                .where(OutboxJob.referral == referral_id, OutboxJob.state == "pending").execute())
        ReferralEvent.create(referral=referral_id, at=now, kind="cancelled",
                             detail=f"cancelled by {username}" if username else "cancelled by staff")
        _audit(now, username, "referral.cancel", referral_id, f"jobs_cancelled={jobs}")
    return get_referral(referral_id)


def change_stamp() -> int:
    """Moves whenever any referral gets an event: lets a screen reload only when something happened."""
    return ReferralEvent.select(fn.MAX(ReferralEvent.id)).scalar() or 0
