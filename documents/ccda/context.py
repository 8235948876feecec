"""What one document is built from: the draft's patient, note, encounter, practice, author and recipient,
resolved once, plus the ids (root OID, document id) that make it stable per referral."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from functools import cached_property

from models import clock
from models.contacts import Contact
from models.patients import Encounter, Note, Patient
from models.practice import Practice, Provider
from models.referring import ReferralDraft

from documents.ccda.entries import Env
from documents.ccda.xml import local_root


def document_kind(draft: ReferralDraft | str) -> str:
    """Which document `draft` gets: its direction ("transferring" → Referral Note, "receiving" → CCD), or
    "consultation" — the consultant's report back, a Consultation Note — when a "receiving" draft asks for it
    with `extra["document"] == "consultation"`. A bare direction string is its own kind."""
    if isinstance(draft, str):
        return draft
    if draft.direction == "receiving" and str((draft.extra or {}).get("document") or "").strip().lower() \
            == "consultation":
        return "consultation"
    return draft.direction


@dataclass
class Context:
    draft: ReferralDraft
    patient: Patient
    note: Note | None
    encounter: Encounter | None
    practice: Practice
    author: Provider | None
    recipient_name: str
    now: dt.datetime
    root: str
    document_id: str

    @property
    def transferring(self) -> bool:
        return self.draft.direction == "transferring"

    @property
    def kind(self) -> str:
        """The document built: "transferring" (Referral Note), "receiving" (CCD) or "consultation"."""
        return document_kind(self.draft)

    @property
    def consultation(self) -> bool:
        return self.kind == "consultation"

    @cached_property
    def env(self) -> Env:
        """What entries are attributed to: the document's author, at the time of the note (else now)."""
        when = self.note.signed_at or self.note.written_at if self.note is not None else self.now
        if self.author is None:
            return Env(self.root, self.practice.npi, when)
        taxonomy = (self.author.specialty_code, self.author.specialty) if self.author.specialty_code else None
        return Env(self.root, self.author.npi, when, taxonomy)

    def included(self, key: str) -> bool:
        return key not in self.draft.excluded_sections


def recipient_name(draft: ReferralDraft) -> str:
    """The recipient by name: what the user typed, else the address-book contact, else the address itself."""
    if draft.recipient_name.strip():
        return draft.recipient_name.strip()
    if draft.contact_id:
        contact = Contact.get_or_none(Contact.id == draft.contact_id)
        if contact and contact.name.strip():
            return contact.name.strip()
    return draft.recipient.strip() or "Receiving provider"


def gather(draft: ReferralDraft, document_id: str | None) -> Context:
    patient = Patient.get_by_id(draft.patient_id)
    note = Note.get_by_id(draft.note_id) if draft.note_id is not None else None
    encounter = note.encounter if note is not None and note.encounter_id else None
    if encounter is None:
        encounter = patient.encounters.order_by(Encounter.start.desc()).first()
    practice = Practice.select().first() or Practice(name="referdesk practice", npi="0000000000")
    author = None
    if note is not None:
        author = note.signed_by or note.author
    elif encounter is not None:
        author = encounter.provider
    if author is None:
        author = Provider.select().where(Provider.in_practice == True).order_by(Provider.id).first()  # noqa: E712
    now = clock.now()
    root = local_root(practice.npi)
    if not document_id:
        # Stable per referral: the same note sent at the same moment always gets the same id.
        # The kind is the direction except for a Consultation Note, so the other documents keep their ids.
        seed = f"{root}:{patient.mrn}:{draft.note_id}:{document_kind(draft)}:{now.isoformat()}"
        document_id = str(uuid.uuid5(uuid.NAMESPACE_URL, seed))
    return Context(draft=draft, patient=patient, note=note, encounter=encounter, practice=practice,
                   author=author, recipient_name=recipient_name(draft), now=now, root=root,
                   document_id=document_id)
