"""What a referral carries: built from the chart at the moment the user sends, never cached.

The encounter note (when chosen), the Transition of Care C-CDA, and — for Direct — the same C-CDA in an IHE
XDM package, whose metadata is read back from the C-CDA itself so the two can never disagree. eFax and print
carry the referral packet PDF, laid out from the same chart data (documents/pdf).
"""

from __future__ import annotations

import uuid

from lxml import etree

from documents.ccda import build_ccda, document_title
from documents.ccda.header import document_code
from documents.ccda.xml import local_root
from documents.pdf import build_note_pdf, build_referral_pdf
from documents.xdm import LOINC, Person, XdmDocument, build_xdm
from models import clock
from models.documents import Attachment
from models.patients import Note, Patient
from models.practice import Practice
from models.referring import ReferralDraft

V3 = "{urn:hl7-org:v3}"


def build_attachments(draft: ReferralDraft) -> list[Attachment]:
    """The files to send for `draft`.

    Direct: the encounter note as PDF (when chosen), the C-CDA and its XDM package. eFax: one PDF packet with
    a cover sheet (a fax machine cannot read a C-CDA). Download/Print: the packet PDF, plus the C-CDA and the
    XDM package when asked for (`draft.extra["ccda"]`, `["xdm"]`)."""
    patient = Patient.get_by_id(draft.patient_id)
    prefix = f"{'referral' if draft.direction == 'transferring' else 'summary'}-{patient.mrn}-{clock.now():%Y%m%d}"
    if draft.channel in ("efax", "print"):
        attachments = [Attachment(
            filename=f"{prefix}.pdf", media_type="application/pdf", kind="pdf",
            content=build_referral_pdf(draft, cover_sheet=draft.channel == "efax"),
            title=f"{document_title(draft)} (PDF{' for fax' if draft.channel == 'efax' else ''})")]
        extra = draft.extra or {}
        if draft.channel == "efax" or not (extra.get("ccda") or extra.get("xdm")):
            return attachments
    else:
        attachments = []
        if draft.include_note and draft.note_id is not None:
            note = Note.get_by_id(draft.note_id)
            attachments.append(Attachment(
                filename=f"encounter-note-{patient.mrn}-{note.written_at:%Y%m%d}.pdf",
                media_type="application/pdf", content=build_note_pdf(draft), kind="note",
                title=f"Encounter note {note.written_at:%m/%d/%Y}",
            ))
    ccda = build_ccda(draft)
    if draft.channel == "direct" or (draft.extra or {}).get("ccda"):
        attachments.append(Attachment(filename=f"{prefix}.xml", media_type="application/xml", content=ccda,
                                      kind="ccda", title=document_title(draft)))
    if draft.channel == "direct" or (draft.extra or {}).get("xdm"):
        attachments.append(Attachment(filename=f"{prefix}-xdm.zip", media_type="application/zip",
                                      content=build_xdm(xdm_document(ccda, draft, patient)), kind="xdm",
                                      title=f"{document_title(draft)} (XDM package)"))
    return attachments


def _oid(root: str, extension: str | None) -> str:
    """An XDS unique id: OIDs stay as they are (with ^extension), UUIDs become 2.25 OIDs."""
    try:
        root = f"2.25.{uuid.UUID(root).int}"
    except ValueError:
        pass
    return f"{root}^{extension}" if extension else root


def xdm_document(ccda: bytes, draft: ReferralDraft, patient: Patient) -> XdmDocument:
    """XDS metadata for the C-CDA we just built, with its ids taken from the document itself."""
    root = etree.fromstring(ccda)  # our own output: no entities, no DTD
    doc_id = root.find(f"{V3}id")
    unique_id = _oid(doc_id.get("root"), doc_id.get("extension"))
    practice = Practice.select().first()
    practice_root = local_root(practice.npi)
    note = Note.get_or_none(Note.id == draft.note_id) if draft.note_id is not None else None
    author = note.author if note is not None else None
    loinc, display = document_code(draft)
    kind = (loinc, LOINC, display)
    return XdmDocument(
        content=ccda,
        unique_id=unique_id,
        submission_id=f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, 'submission:' + unique_id).int}",
        source_id=practice_root,
        created=clock.now(),
        patient_id=patient.mrn,
        patient_id_root=practice_root + ".2",
        patient_last=patient.last_name,
        patient_first=patient.first_name,
        birth_date=patient.birth_date,
        sex=patient.sex,
        patient_address=(patient.address_line, patient.city, patient.state, patient.postal_code),
        author=Person(author.last_name, author.first_name, author.npi) if author else None,
        institution=practice.name,
        institution_npi=practice.npi,
        type_code=kind,
        class_code=kind,
        intended_recipient=draft.recipient if draft.channel == "direct" else "",
        title=document_title(draft),
    )
