"""Filing and finding documents: what was sent or received, in a patient's chart or the practice's files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from models import clock
from models.redact import remember_patient
from models.referrals import Document

#: Largest document referdesk files (a C-CDA with images, or a scanned report, stays well below this).
MAX_DOCUMENT_BYTES = 25 * 1024 * 1024


class DocumentError(ValueError):
    pass


@dataclass(frozen=True)
class Attachment:
    """A file about to be sent or filed: what the documents layer builds and the models layer stores."""

    filename: str
    media_type: str
    content: bytes
    kind: str = "other"  # ccda | xdm | note | note-pdf | fax-cover | report | other
    title: str = ""

    @property
    def size(self) -> int:
        return len(self.content)


def file_document(attachment: Attachment, *, owner: str, patient=None, referral=None, inbound=None) -> Document:
    """Store `attachment` for its owner; `inbound` links a received document to the InboundMessage it came in."""
    if owner not in ("patient", "practice"):
        raise DocumentError(f"unknown document owner {owner!r}")
    if owner == "patient" and patient is None:
        raise DocumentError("a patient document needs its patient")
    if attachment.size > MAX_DOCUMENT_BYTES:
        raise DocumentError(
            f"{attachment.filename} is {attachment.size / 1_048_576:.1f} MB; the limit is "
            f"{MAX_DOCUMENT_BYTES // 1_048_576} MB"
        )
    if hasattr(patient, "mrn"):
        remember_patient(patient)  # a received report's patient: kept out of this process's logs
    return Document.create(
        owner=owner,
        patient=patient,
        referral=referral,
        inbound=inbound,
        kind=attachment.kind,
        title=attachment.title or attachment.filename,
        filename=attachment.filename,
        media_type=attachment.media_type,
        content=attachment.content,
        size=attachment.size,
        sha256=hashlib.sha256(attachment.content).hexdigest(),
        created_at=clock.now(),
    )


def list_documents(*, patient_id: int | None = None, owner: str | None = None) -> list[Document]:
    """Documents newest first, without their content (loaded only when one is opened)."""
    fields = [f for f in Document._meta.sorted_fields if f.name != "content"]
    query = Document.select(*fields)
    if patient_id is not None:
        query = query.where(Document.patient == patient_id)
    if owner is not None:
        query = query.where(Document.owner == owner)
    return list(query.order_by(Document.created_at.desc(), Document.id.desc()))


def get_document(document_id: int) -> Document:
    document = Document.get_or_none(Document.id == document_id)
    if document is None:
        raise DocumentError(f"no document with id {document_id}")
    return document


def referral_files(referral_id: int, kinds: tuple[str, ...] | None = None) -> list[Document]:
    """What a referral carried, as filed in the patient's chart (the bytes a transport sends), oldest first;
    the message text kept beside them is not one of them."""
    query = Document.select().where(Document.referral == referral_id, Document.owner == "patient",
                                    Document.kind != "message")
    if kinds is not None:
        query = query.where(Document.kind.in_(kinds))
    files = list(query.order_by(Document.id))
    if files:  # the worker about to send them: whatever it logs about this send never names the patient
        from models.patients import Patient

        remember_patient(Patient.get_or_none(Patient.id == files[0].patient_id))
    return files
