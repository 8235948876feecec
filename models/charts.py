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


@dataclass(frozen=True)
class FaceSheet:
    """What the face sheet shows, as display-ready rows."""

    patient: Patient
    age: int
    problems: list[tuple[str, str, str]]  # display, ICD-10, onset
    medications: list[tuple[str, str]]  # display, sig
    allergies: list[tuple[str, str, str]]  # substance, reaction, severity
    care_team: list[tuple[str, str, str]]  # name, role, phone
    encounters: list[tuple[str, str, str, str]]  # date, type, provider, reason


def age_on(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def face_sheet(mrn: str, *, recent: int = 5) -> FaceSheet:
    from models import clock
    from models.clinical import Allergy, CareTeamMember, Medication, Problem
    from models.patients import Encounter

    patient = get_patient(mrn)
    problems = [
        (p.display, p.icd10_code, f"{p.onset_date:%m/%d/%Y}" if p.onset_date else "")
        for p in Problem.select().where(Problem.patient == patient, Problem.status == "active")
        .order_by(Problem.onset_date.desc())
    ]
    medications = [
        (m.display, " ".join(part for part in (m.dose, m.route.lower(), m.frequency) if part))
        for m in Medication.select().where(Medication.patient == patient, Medication.status == "active")
        .order_by(Medication.display)
    ]
    allergies = [
        (a.substance, a.reaction, a.severity)
        for a in Allergy.select().where(Allergy.patient == patient, Allergy.status == "active")
    ]
    care_team = [
        (m.provider.display_name, m.role, m.provider.phone)
        for m in CareTeamMember.select(CareTeamMember, Provider).join(Provider)
        .where(CareTeamMember.patient == patient)
    ]
    encounters = [
        (f"{e.start:%m/%d/%Y}", e.type_display, e.provider.display_name, e.reason)
        for e in Encounter.select(Encounter, Provider).join(Provider).where(Encounter.patient == patient)
        .order_by(Encounter.start.desc()).limit(recent)
    ]
    return FaceSheet(patient, age_on(patient.birth_date, clock.today()), problems, medications, allergies,
                     care_team, encounters)


@dataclass(frozen=True)
class NoteView:
    id: int
    patient_id: int
    mrn: str
    title: str
    type: str
    written: dt.datetime
    author: str
    signed: bool
    signed_by: str
    signed_at: dt.datetime | None
    sections: list[tuple[str, str]]


def get_note(note_id: int) -> NoteView:
    note = Note.get_or_none(Note.id == note_id)
    if note is None:
        raise LookupError(f"no note with id {note_id}")
    return NoteView(
        id=note.id,
        patient_id=note.patient_id,
        mrn=note.patient.mrn,
        title=note.title,
        type=note.type_display,
        written=note.written_at,
        author=note.author.display_name,
        signed=note.signed,
        signed_by=note.signed_by.display_name if note.signed_by else "",
        signed_at=note.signed_at,
        sections=note.sections,
    )


def latest_signed_note(mrn: str) -> int | None:
    """The id of the patient's most recent signed note: what `referdesk send` sends when no note is named."""
    patient = get_patient(mrn)
    return (
        Note.select(Note.id)
        .where(Note.patient == patient, Note.signed_at.is_null(False))
        .order_by(Note.written_at.desc(), Note.id.desc())
        .scalar()
    )
