"""Patients, their encounters and the notes written at them."""

from __future__ import annotations

import json

import peewee as pw

from models.db import BaseModel
from models.practice import Provider
from models.safe_text import storable
from models.text import name_tokens, normalize


class Patient(BaseModel):
    mrn = pw.CharField(max_length=20, unique=True)
    first_name = pw.CharField()
    middle_name = pw.CharField(default="")
    last_name = pw.CharField()
    birth_date = pw.DateField()
    sex = pw.CharField(max_length=1)  # HL7 AdministrativeGender: F, M, UN -> 'U'
    address_line = pw.CharField(default="")
    city = pw.CharField(default="")
    state = pw.CharField(max_length=2, default="")
    postal_code = pw.CharField(max_length=10, default="")
    phone = pw.CharField(default="")
    email = pw.CharField(default="")
    language = pw.CharField(max_length=8, default="en")  # BCP 47
    race_code = pw.CharField(default="")  # CDC Race & Ethnicity (2.16.840.1.113883.6.238)
    race = pw.CharField(default="")
    ethnicity_code = pw.CharField(default="")
    ethnicity = pw.CharField(default="")
    # USCDI v3 sex, gender identity and sexual orientation as the patient reported them (the C-CDA sends them
    # as Social History observations). A SNOMED CT code, or ASKU / UNK / OTH (see models.codes.NULL_ANSWERS);
    # "" means never recorded, which is not the same as "asked and declined". Added by migration 3.
    recorded_sex_code = pw.CharField(default="")
    recorded_sex = pw.CharField(default="")
    gender_identity_code = pw.CharField(default="")
    gender_identity = pw.CharField(default="")
    sexual_orientation_code = pw.CharField(default="")
    sexual_orientation = pw.CharField(default="")
    sogi_recorded_on = pw.DateField(null=True)  # when they were asked
    # Search keys: casefolded, accents and punctuation removed (see models.search.normalize).
    last_norm = pw.CharField(default="")
    first_norm = pw.CharField(default="")

    @property
    def display_name(self) -> str:
        return f"{self.last_name}, {self.first_name}"

    def save(self, *args, **kwargs):
        """Keep the search keys in step with the name, whoever edits it."""
        self.last_norm = normalize(self.last_name)
        self.first_norm = normalize(self.first_name)
        with self._meta.database.atomic():
            result = super().save(*args, **kwargs)
            PatientNameToken.delete().where(PatientNameToken.patient == self.id).execute()
            rows = [{"token": t, "patient": self.id} for t in sorted(name_tokens(self.first_name, self.last_name))]
            if rows:
                PatientNameToken.insert_many(rows).execute()
        return result


class PatientNameToken(BaseModel):
    """One part of a multi-part name ("Brien" of O'Brien, "Lopez" of Garcia-Lopez) so a search for a later
    part finds the patient too. Single-part names need no row: the patient's own columns cover them."""

    token = pw.CharField()
    patient = pw.ForeignKeyField(Patient, backref="name_tokens", on_delete="CASCADE")

    class Meta:
        primary_key = pw.CompositeKey("token", "patient")


class Encounter(BaseModel):
    patient = pw.ForeignKeyField(Patient, backref="encounters", on_delete="CASCADE")
    provider = pw.ForeignKeyField(Provider, backref="encounters")
    start = pw.DateTimeField()
    type_code = pw.CharField(default="")  # CPT
    type_display = pw.CharField(default="")
    reason = pw.CharField(default="")
    diagnosis_code = pw.CharField(default="")  # ICD-10-CM
    diagnosis = pw.CharField(default="")


class Note(BaseModel):
    """A clinical note. `sections` holds [title, text] pairs as JSON; only a signed note may be sent."""

    patient = pw.ForeignKeyField(Patient, backref="notes", on_delete="CASCADE")
    encounter = pw.ForeignKeyField(Encounter, null=True, backref="notes", on_delete="SET NULL")
    author = pw.ForeignKeyField(Provider, backref="notes")
    type_code = pw.CharField()  # LOINC document type, e.g. 11506-3 Progress note
    type_display = pw.CharField()
    written_at = pw.DateTimeField()
    title = pw.CharField(default="")
    sections_json = pw.TextField(default="[]")
    signed_at = pw.DateTimeField(null=True)
    signed_by = pw.ForeignKeyField(Provider, null=True, backref="signed_notes")

    @property
    def signed(self) -> bool:
        return self.signed_at is not None

    @property
    def sections(self) -> list[tuple[str, str]]:
        return [(title, text) for title, text in json.loads(self.sections_json)]

    @sections.setter
    def sections(self, value: list[tuple[str, str]]) -> None:
        # without NUL, as every other text is stored (models/safe_text.py): JSON would carry one as \u0000
        self.sections_json = json.dumps([[storable(title), storable(text)] for title, text in value])
