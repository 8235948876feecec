"""Turning a received message's contents into Documents: its C-CDAs (read with documents.ccda_reader, their
findings kept), the documents inside IHE XDM packages, PDFs, images and anything else attached, plus the
message text itself.

`prepare` is pure (no database): it decides what will be filed and refuses, with one sentence, what must not be
(an attachment over the document size limit, a package that cannot be read completely, too many documents) —
refusing the whole message rather than filing part of it, so nothing goes missing silently. `store` writes the
practice's copy of every document (always) and the patient's copy (when the patient is known), inside the
caller's transaction.

A C-CDA's findings are kept as a practice-owned JSON document of kind "findings" next to it (linked to the same
inbound message), so the inbox shows them without re-reading the C-CDA and without a schema change.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from documents.ccda_reader import Summary, read_summary
from documents.xdm_read import media_type_for, unpack
from models.documents import MAX_DOCUMENT_BYTES, Attachment, file_document
from models.referrals import Document
from transports.matching import Demographics
from transports.mime_parts import Contents

MAX_DOCUMENTS = 50
MAX_TOTAL_BYTES = 100 * 1024 * 1024
FINDINGS_KIND = "findings"
MESSAGE_KIND = "message"
XML_TYPES = ("text/xml", "application/xml")
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/x-zip")
_PRIMARY_ORDER = ("ccda", "pdf", "report", "image", MESSAGE_KIND)


class FilingError(ValueError):
    """Why a message's documents cannot be filed, in one sentence (also sent back in the failed MDN)."""


@dataclass
class CcdaRead:
    index: int  # position of the C-CDA in Prepared.documents
    summary: Summary


@dataclass
class Prepared:
    documents: list[Attachment] = field(default_factory=list)
    ccdas: list[CcdaRead] = field(default_factory=list)

    @property
    def demographics(self) -> Demographics | None:
        """The patient the first C-CDA that names one (last name, first name, birth date) is about."""
        for read in self.ccdas:
            patient = read.summary.patient
            found = Demographics.of(patient.last_name, patient.first_name, patient.birth_date)
            if found is not None:
                return found
        return None

    @property
    def kind(self) -> str:
        """InboundMessage.kind: "report" when something besides the message text came, else "other"."""
        return "report" if any(a.kind != MESSAGE_KIND for a in self.documents) else "other"


@dataclass
class Filed:
    practice_ids: list[int] = field(default_factory=list)
    patient_ids: list[int] = field(default_factory=list)
    primary_patient_id: int | None = None  # the patient's copy of the C-CDA (else the first document)


def _mb(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB"


def _looks_like_cda(content: bytes) -> bool:
    head = content[:65536]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 (with its BOM): read, not filed unread as a report
        head = head.decode("utf-16", "ignore").encode("utf-8")
    return b"<ClinicalDocument" in head or b":ClinicalDocument" in head


def _is_xml(media_type: str, filename: str, content: bytes) -> bool:
    if media_type in XML_TYPES or filename.lower().endswith(".xml"):
        return True
    return media_type in ("text/plain", "application/octet-stream") and content.lstrip()[:5] in (b"<?xml", b"<Clin")


class _Builder:
    def __init__(self) -> None:
        self.prepared = Prepared()
        self.total = 0

    def add(self, attachment: Attachment) -> int:
        if len(self.prepared.documents) >= MAX_DOCUMENTS:
            raise FilingError(f"the message carries more than {MAX_DOCUMENTS} documents; referdesk files up to "
                              f"{MAX_DOCUMENTS} per message")
        if attachment.size > MAX_DOCUMENT_BYTES:
            raise FilingError(f"the attachment {attachment.filename} is {_mb(attachment.size)}; the limit is "
                              f"{MAX_DOCUMENT_BYTES // 1_048_576} MB per document")
        self.total += attachment.size
        if self.total > MAX_TOTAL_BYTES:
            raise FilingError(f"the message's documents come to more than {MAX_TOTAL_BYTES // 1_048_576} MB")
        self.prepared.documents.append(attachment)
        return len(self.prepared.documents) - 1

    def document(self, filename: str, media_type: str, content: bytes, *, from_package: str = "") -> None:
        if media_type == "application/octet-stream" or not media_type:
            media_type = media_type_for(filename, content)
        if media_type in ZIP_TYPES or (not from_package and content.startswith(b"PK\x03\x04")
                                       and filename.lower().endswith(".zip")):
            if from_package:  # a package inside a package is kept as it is, never inflated
                self.add(Attachment(filename, media_type, content, kind="report"))
            else:
                self.package(filename, content)
            return
        if _is_xml(media_type, filename, content):
            summary = read_summary(content)
            cda = _looks_like_cda(content)
            title = (summary.title or summary.document_type.name) if cda else ""
            index = self.add(Attachment(filename, media_type, content, kind="ccda" if cda else "report",
                                        title=(title or filename)[:200]))
            if cda:
                self.prepared.ccdas.append(CcdaRead(index, summary))
            return
        if media_type == "application/pdf" or content.startswith(b"%PDF-"):
            self.add(Attachment(filename, "application/pdf", content, kind="pdf"))
        elif media_type.startswith("image/"):
            self.add(Attachment(filename, media_type, content, kind="image"))
        else:
            self.add(Attachment(filename, media_type, content, kind="report"))

    def package(self, filename: str, content: bytes) -> None:
        unpacked = unpack(content)
        if unpacked.problems:
            shown = "; ".join(unpacked.problems[:3]) + ("; …" if len(unpacked.problems) > 3 else "")
            raise FilingError(f"the package {filename} cannot be filed completely: {shown}")
        for document in unpacked.documents:
            self.document(document.filename, document.media_type, document.content, from_package=filename)


def prepare(contents: Contents) -> Prepared:
    """What will be filed from `contents`, in order: the message text, then each attachment (packages
    unpacked)."""
    builder = _Builder()
    if contents.text.strip():
        builder.add(Attachment("message.txt", "text/plain; charset=utf-8", contents.text.encode("utf-8"),
                               kind=MESSAGE_KIND, title="Message text"))
    elif contents.html.strip():
        builder.add(Attachment("message.html", "text/html; charset=utf-8", contents.html.encode("utf-8"),
                               kind=MESSAGE_KIND, title="Message text"))
    for piece in contents.pieces:
        builder.document(piece.filename, piece.media_type, piece.content)
    return builder.prepared


def primary_index(prepared: Prepared) -> int | None:
    """The document a closed referral points at: the C-CDA, else a PDF, else the first document."""
    for kind in _PRIMARY_ORDER:
        for index, attachment in enumerate(prepared.documents):
            if attachment.kind == kind:
                return index
    return None


def findings_document(read: CcdaRead, attachment: Attachment) -> Attachment:
    summary = read.summary
    body = {"document": attachment.filename, "title": summary.title,
            "document_type": asdict(summary.document_type), "patient": asdict(summary.patient),
            "findings": [asdict(f) for f in summary.findings]}
    return Attachment(f"{attachment.filename}.findings.json", "application/json",
                      json.dumps(body, indent=1, ensure_ascii=False).encode("utf-8"), kind=FINDINGS_KIND,
                      title=f"Findings: {attachment.filename}"[:200])


def store(prepared: Prepared, *, inbound_id: int, patient_id: int | None) -> Filed:
    """The practice's copy of every document and of each C-CDA's findings; the patient's copies when
    `patient_id` is given. Call inside a transaction."""
    filed = Filed()
    for attachment in prepared.documents:
        filed.practice_ids.append(file_document(attachment, owner="practice", inbound=inbound_id).id)
    for read in prepared.ccdas:
        file_document(findings_document(read, prepared.documents[read.index]), owner="practice", inbound=inbound_id)
    if patient_id is not None:
        filed.patient_ids = [file_document(a, owner="patient", patient=patient_id, inbound=inbound_id).id
                             for a in prepared.documents]
        primary = primary_index(prepared)
        filed.primary_patient_id = filed.patient_ids[primary] if primary is not None else None
    return filed


def link_to_referral(document_ids: list[int], referral_id: int) -> None:
    Document.update(referral=referral_id).where(Document.id.in_(document_ids), Document.referral.is_null()).execute()
