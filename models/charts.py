"""What a patient's chart shows: the patient by MRN and their notes, as plain values for screens and scripts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from models.patients import Note, Patient
from models.practice import Provider


class PatientNotFound(LookupError):
    def __init__(self, mrn: str) -> None:
        super().__init__(f"no patient with MRN {mrn!r}")
        self.mrn = mrn


@dataclass(frozen=True, slots=True)
class NoteSummary:
    id: int
    date: dt.datetime
    type: str
    title: str
    author: str
    signed: bool

    def as_json(self) -> dict:
        return {"id": self.id, "date": self.date.isoformat(), "type": self.type, "title": self.title,
                "author": self.author, "signed": self.signed}


def get_patient(mrn: str) -> Patient:
    patient = Patient.get_or_none(Patient.mrn == mrn.strip())
    if patient is None:
        raise PatientNotFound(mrn)
    return patient


def list_notes(mrn: str) -> list[NoteSummary]:
    """The patient's notes, newest first."""
    patient = get_patient(mrn)
    query = (
        Note.select(Note.id, Note.written_at, Note.type_display, Note.title, Note.signed_at,
                    Provider.first_name, Provider.last_name, Provider.credentials)
        .join(Provider, on=(Note.author == Provider.id))
        .where(Note.patient == patient)
        .order_by(Note.written_at.desc(), Note.id.desc())
    )
    return [
        NoteSummary(
            id=note.id,
            date=note.written_at,
            type=note.type_display,
            title=note.title,
            author=note.author.display_name,
            signed=note.signed_at is not None,
        )
        for note in query
    ]
