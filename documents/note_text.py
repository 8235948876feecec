"""A clinical note as plain text: the "Encounter Note" attachment until the PDF packet exists."""

from __future__ import annotations

from models.patients import Note


def note_as_text(note: Note) -> str:
    patient = note.patient
    lines = [
        f"{note.type_display}: {note.title}" if note.title else note.type_display,
        f"Patient: {patient.last_name}, {patient.first_name}   DOB {patient.birth_date:%m/%d/%Y}   "
        f"Sex {patient.sex}   MRN {patient.mrn}",
        f"Author: {note.author.display_name}   Written {note.written_at:%m/%d/%Y %H:%M}",
        f"Signed: {note.signed_by.display_name} {note.signed_at:%m/%d/%Y %H:%M}" if note.signed else "UNSIGNED",
        "",
    ]
    for title, text in note.sections:
        lines += [title.upper(), text, ""]
    return "\n".join(lines)
