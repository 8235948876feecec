"""What a referral carries: built from the chart at the moment the user sends, never cached."""

from __future__ import annotations

from documents.ccda import build_ccda, document_title
from documents.note_text import note_as_text
from models import clock
from models.documents import Attachment
from models.patients import Note, Patient
from models.referring import ReferralDraft


def build_attachments(draft: ReferralDraft) -> list[Attachment]:
    """The files to send for `draft`: the encounter note (when chosen) and the Transition of Care C-CDA."""
    patient = Patient.get_by_id(draft.patient_id)
    attachments = []
    if draft.include_note and draft.note_id is not None:
        note = Note.get_by_id(draft.note_id)
        stamp = note.written_at.strftime("%Y%m%d")
        attachments.append(Attachment(
            filename=f"encounter-note-{patient.mrn}-{stamp}.txt",
            media_type="text/plain; charset=utf-8",
            content=note_as_text(note).encode("utf-8"),
            kind="note",
            title=f"Encounter note {note.written_at:%m/%d/%Y}",
        ))
    prefix = "referral" if draft.direction == "transferring" else "summary"
    attachments.append(Attachment(
        filename=f"{prefix}-{patient.mrn}-{clock.now():%Y%m%d}.xml",
        media_type="application/xml",
        content=build_ccda(draft),
        kind="ccda",
        title=document_title(draft),
    ))
    return attachments
