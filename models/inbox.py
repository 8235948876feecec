"""The inbox: messages received (consultants' reports, delivery notifications, and what was quarantined), what
became of each, and the one thing staff do with a report nobody could match — attach it to a patient.

The TUI's inbox screen and any script read and act through these functions only; they return plain frozen
values, detached from the database, and refuse with an `InboxError` whose message says why in words for staff.

States (InboundMessage.state): `filed` (in a patient's chart, or a notification applied), `unfiled` (accepted,
acknowledged as processed, waiting in the to-be-filed list; `error` says why it could not be matched),
`rejected` (quarantined: not encrypted, not signed, untrusted, expired, revoked, tampered; `error` says which;
no MDN was sent), `failed` (accepted but could not be filed; the sender got a failed MDN), `new` (being
processed, or processing was interrupted).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
from dataclasses import asdict, dataclass

from peewee import JOIN, fn

from models import clock
from models.audit import record
from models.db import database
from models.documents import Attachment, file_document
from models.patients import Patient
from models.referral_history import HistoryError, get_referral, local_today, mark_received_refusal, \
    mark_report_received
from models.referrals import Document, InboundMessage, OutboxJob, Referral, ReferralEvent

STATES = ("new", "filed", "unfiled", "rejected", "failed")
KINDS = ("report", "notification", "other")
DEFAULT_LIMIT = 200
FINDINGS_KIND = "findings"  # a C-CDA's findings, kept as JSON beside it (transports/filing.py)
HELD = "held"  # an MDN composed but not yet due (transports/direct/acknowledge.py)
_PRIMARY_ORDER = ("ccda", "pdf", "report", "image", "message")
_DISPOSITION = re.compile(rb"^Disposition:[^;\r\n]*;\s*([A-Za-z-]+)", re.M)
_DATE = re.compile(rb"^Date:[^\r\n]*\r?\n", re.M)


class InboxError(ValueError):
    """A request the inbox cannot honour; the message says why, in words for staff."""


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    received_at: dt.datetime  # naive UTC, like every stored time
    channel: str  # file | smtp | imap
    from_address: str
    subject: str
    state: str
    error: str  # why rejected, failed, or left unfiled
    kind: str  # report | notification | other ("" when it could not be opened)
    mrn: str | None
    patient_name: str | None  # "Last, First"
    referral_id: int | None
    document_count: int

    def as_json(self) -> dict:
        data = asdict(self)
        data["received_at"] = self.received_at.isoformat()
        return data


@dataclass(frozen=True, slots=True)
class InboxDocument:
    id: int  # open it with documents.viewing.display_document(id)
    filename: str
    kind: str  # ccda | pdf | image | report | message
    media_type: str
    size: int
    title: str


@dataclass(frozen=True, slots=True)
class InboxFinding:
    document: str  # the C-CDA's file name
    severity: str  # error | warning | info
    message: str
    location: str


@dataclass(frozen=True, slots=True)
class InboxDetail:
    row: InboxRow
    documents: tuple[InboxDocument, ...]  # the patient's copies once filed, else the practice's
    findings: tuple[InboxFinding, ...]  # what reading the C-CDA(s) found wrong
    ccda_patient: str  # who the C-CDA says it is about, "Last, First · DOB MM/DD/YYYY · sex" ("" if none)
    message_id: str
    in_reply_to: str
    signer_fingerprint: str  # SHA-256 of the trusted signer's certificate ("" if not accepted)
    mdns: tuple[str, ...]  # the MDNs about it: "processed: done", "dispatched: held", …


# --- reading ----------------------------------------------------------------------------------------------

def _check_state(state: str | None) -> None:
    if state is not None and state not in STATES:
        raise InboxError(f"unknown state {state!r}; use one of: {', '.join(STATES)}")


def _document_counts(ids: list[int]) -> dict[int, int]:
    """Documents per inbound message: its practice copies (each received document has exactly one)."""
    counts: dict[int, int] = {}
    for start in range(0, len(ids), 500):
        query = (Document.select(Document.inbound, fn.COUNT(Document.id))
                 .where(Document.inbound.in_(ids[start:start + 500]), Document.owner == "practice",
                        Document.kind != FINDINGS_KIND)
                 .group_by(Document.inbound).tuples())
        counts.update({inbound: count for inbound, count in query})
    return counts


def _rows(query) -> list[InboxRow]:
    messages = list(query)
    counts = _document_counts([m.id for m in messages])
    rows = []
    for m in messages:
        patient = m.patient if m.patient_id is not None else None
        rows.append(InboxRow(id=m.id, received_at=m.received_at, channel=m.channel, from_address=m.from_address,
                             subject=m.subject, state=m.state, error=m.error, kind=m.kind,
                             mrn=patient.mrn if patient else None,
                             patient_name=f"{patient.last_name}, {patient.first_name}" if patient else None,
                             referral_id=m.referral_id, document_count=counts.get(m.id, 0)))
    return rows


def _select():
    fields = [f for f in InboundMessage._meta.sorted_fields if f.name != "raw"]  # never load the raw bytes
    return (InboundMessage.select(*fields, Patient.id, Patient.mrn, Patient.last_name, Patient.first_name)
            .join(Patient, JOIN.LEFT_OUTER, on=(InboundMessage.patient == Patient.id)))


def list_inbox(state: str | None = None, limit: int = DEFAULT_LIMIT, *, kind: str | None = None) -> list[InboxRow]:
    """Received messages newest first; `state` "unfiled" is the to-be-filed list, "rejected" the quarantine."""
    _check_state(state)
    if kind is not None and kind not in KINDS:
        raise InboxError(f"unknown kind {kind!r}; use one of: {', '.join(KINDS)}")
    if limit < 1:
        raise InboxError("limit must be at least 1")
    query = _select()
    if state is not None:
        query = query.where(InboundMessage.state == state)
    if kind is not None:
        query = query.where(InboundMessage.kind == kind)
    return _rows(query.order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc()).limit(limit))


def inbox_row(inbound_id: int) -> InboxRow:
    rows = _rows(_select().where(InboundMessage.id == inbound_id))
    if not rows:
        raise InboxError(f"no received message with id {inbound_id}")
    return rows[0]


def _documents(inbound_id: int, owner: str) -> list[Document]:
    fields = [f for f in Document._meta.sorted_fields if f.name != "content"]
    return list(Document.select(*fields).where(Document.inbound == inbound_id, Document.owner == owner,
                                               Document.kind != FINDINGS_KIND)
                .order_by(Document.id))


def _findings(inbound_id: int) -> tuple[list[InboxFinding], str]:
    findings, patient_line = [], ""
    for stored in (Document.select(Document.content).where(Document.inbound == inbound_id,
                                                           Document.owner == "practice",
                                                           Document.kind == FINDINGS_KIND).order_by(Document.id)):
        try:
            data = json.loads(bytes(stored.content).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        name = str(data.get("document", ""))
        for finding in data.get("findings", []):
            findings.append(InboxFinding(name, str(finding.get("severity", "")), str(finding.get("message", "")),
                                         str(finding.get("location", ""))))
        person = data.get("patient") or {}
        if not patient_line and (person.get("last_name") or person.get("first_name")):
            born = person.get("birth_date") or ""
            try:
                born = dt.date.fromisoformat(born[:10]).strftime("%m/%d/%Y") if born else "unknown"
            except ValueError:
                pass
            patient_line = (f"{person.get('last_name', '')}, {person.get('first_name', '')} · DOB {born}"
                            + (f" · {person['sex']}" if person.get("sex") else ""))
    return findings, patient_line


def _mdns(inbound_id: int) -> list[str]:
    found = []
    for job in (OutboxJob.select(OutboxJob.payload, OutboxJob.state)
                .where(OutboxJob.inbound == inbound_id, OutboxJob.kind == "mdn").order_by(OutboxJob.id)):
        match = _DISPOSITION.search(bytes(job.payload or b""))
        found.append(f"{match.group(1).decode() if match else 'MDN'}: {job.state}")
    return found


def inbox_detail(inbound_id: int) -> InboxDetail:
    """One received message: its row, its documents (described; open one with documents.viewing), what was found
    wrong in its C-CDA, and the MDNs sent about it."""
    row = inbox_row(inbound_id)
    extra = (InboundMessage.select(InboundMessage.message_id, InboundMessage.in_reply_to,
                                   InboundMessage.signer_fingerprint).where(InboundMessage.id == inbound_id).get())
    documents = _documents(inbound_id, "patient" if row.mrn is not None else "practice")
    if not documents and row.mrn is not None:  # e.g. a notification linked to a patient: nothing of its own
        documents = _documents(inbound_id, "practice")
    findings, patient_line = _findings(inbound_id)
    return InboxDetail(
        row=row,
        documents=tuple(InboxDocument(d.id, d.filename, d.kind, d.media_type, d.size, d.title) for d in documents),
        findings=tuple(findings), ccda_patient=patient_line, message_id=extra.message_id,
        in_reply_to=extra.in_reply_to, signer_fingerprint=extra.signer_fingerprint, mdns=tuple(_mdns(inbound_id)))


# --- acting -------------------------------------------------------------------------------------------------

def attach_refusal(row: InboxRow) -> str | None:
    """Why this message cannot be attached to a patient, or None when it can."""
    if row.state == "unfiled":
        return None
    if row.state == "filed" and row.mrn is not None:
        return f"message {row.id} is already filed to the chart of MRN {row.mrn}"
    words = {"filed": "was applied as a delivery notification", "rejected": "was rejected (quarantined)",
             "failed": "could not be filed and the sender was told so", "new": "is still being processed"}
    return (f"message {row.id} {words.get(row.state, 'is ' + row.state)}: only a message waiting in the "
            "to-be-filed list can be attached to a patient")


def _pick_referral(patient: Patient, referral_id: int | None, sender: str) -> int | None:
    if referral_id is not None:
        referral = Referral.select(Referral.id, Referral.patient).where(Referral.id == referral_id).first()
        if referral is None:
            raise InboxError(f"no referral with id {referral_id}")
        if referral.patient_id != patient.id:
            raise InboxError(f"referral {referral_id} is for another patient, not MRN {patient.mrn}")
        refusal = mark_received_refusal(get_referral(referral_id))
        if refusal:
            raise InboxError(refusal)
        return referral_id
    referral = (Referral.select(Referral.id).where(Referral.patient == patient.id,
                                                   Referral.direction == "transferring",
                                                   Referral.status.in_(("sent", "delivered")),
                                                   fn.LOWER(Referral.recipient) == sender.strip().lower())
                .order_by(Referral.created_at.desc(), Referral.id.desc()).first()) if sender else None
    return referral.id if referral else None


def _redated(payload: bytes, when: dt.datetime) -> bytes:
    """The held MDN with its Date set to the moment it is released (the first Date header of its head)."""
    head, sep, body = payload.partition(b"\r\n\r\n")
    stamp = email.utils.format_datetime(when.replace(tzinfo=dt.timezone.utc)).encode("ascii")
    return _DATE.sub(lambda m: b"Date: " + stamp + b"\r\n", head + b"\r\n", count=1)[:-2] + sep + body


def attach_to_patient(inbound_id: int, mrn: str, *, referral_id: int | None = None, username: str = "") -> InboxRow:
    """File a message from the to-be-filed list in the chart of patient `mrn`: the patient gets a copy of each of
    its documents; `referral_id` (else, when the message brought a report document, the patient's open referral
    sent to the message's sender, if any) is closed as report-received on the day the message arrived; the held
    *dispatched* MDN is released. All or nothing."""
    row = inbox_row(inbound_id)
    refusal = attach_refusal(row)
    if refusal:
        raise InboxError(refusal)
    patient = Patient.get_or_none(Patient.mrn == str(mrn).strip())
    if patient is None:
        raise InboxError(f"no patient with MRN {str(mrn).strip()!r}")
    # Staff may close a referral with any message; chosen for them only when a report document came with it.
    chosen = _pick_referral(patient, referral_id, row.from_address if row.kind == "report" else "")
    practice_copies = [Document.get_by_id(d.id) for d in _documents(inbound_id, "practice")]
    now = clock.now()
    received_on = min(clock.local(row.received_at).date(), local_today())
    with database.atomic():
        moved = (InboundMessage.update(state="filed", error="", patient=patient.id, referral=chosen)
                 .where(InboundMessage.id == inbound_id, InboundMessage.state == "unfiled").execute())
        if not moved:
            raise InboxError(f"message {inbound_id} changed meanwhile; nothing was done")
        copies = [file_document(Attachment(d.filename, d.media_type, bytes(d.content), kind=d.kind, title=d.title),
                                owner="patient", patient=patient.id, inbound=inbound_id) for d in practice_copies]
        closed = False
        if chosen is not None:
            primary = next((c for kind in _PRIMARY_ORDER for c in copies if c.kind == kind), None)
            try:
                mark_report_received(chosen, received_on, username=username,
                                     document_id=primary.id if primary else None)
            except HistoryError as exc:
                if referral_id is not None:
                    raise InboxError(str(exc)) from None
                InboundMessage.update(referral=None).where(InboundMessage.id == inbound_id).execute()
                chosen = None
            else:
                closed = True
                Document.update(referral=chosen).where(Document.id.in_([c.id for c in copies]),
                                                       Document.referral.is_null()).execute()
                ReferralEvent.create(referral=chosen, at=now, kind="note",
                                     detail=f"consultant's report received by Direct (inbound message {inbound_id}), "
                                            "filed by staff" + (f" ({username})" if username else ""))
        for job in OutboxJob.select().where(OutboxJob.inbound == inbound_id, OutboxJob.kind == "mdn",
                                            OutboxJob.state == HELD):
            OutboxJob.update(state="pending", due_at=now, payload=_redated(bytes(job.payload), now)).where(
                OutboxJob.id == job.id).execute()
        record("inbound.attach", username=username, patient_mrn=patient.mrn, object_type="inbound_message",
               object_id=str(inbound_id),
               detail=f"patient_id={patient.id}; referral_id={chosen or ''}; closed={closed}")
    return inbox_row(inbound_id)
