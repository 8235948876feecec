"""Synthetic data: deterministic, varied, coded, and consistent."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from models import codes
from models.clinical import Allergy, Medication, Problem, VitalSign
from models.contacts import Contact, DirectoryEntry
from models.db import close_database, open_database, sqlite_url
from models.patients import Note, Patient, PatientNameToken
from models.practice import Provider
from models.seed import SeedError, npi_with_check_digit, seed


def _dump(path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as raw:
        tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                            "AND name != 'schema_migration' ORDER BY name")]
        return {t: raw.execute(f'SELECT * FROM "{t}" ORDER BY 1, 2').fetchall() for t in tables}


def _seed_file(path, n, seed_value=20261126):
    open_database(sqlite_url(path))
    seed(n, seed_value)
    close_database()
    return _dump(path)


def test_same_seed_gives_the_same_database(tmp_path):
    first = _seed_file(tmp_path / "a.db", 150)
    second = _seed_file(tmp_path / "b.db", 150)
    assert first == second
    assert len(first["patient"]) == 150
    assert _seed_file(tmp_path / "c.db", 150, seed_value=7)["patient"] != first["patient"]


def test_seeding_a_database_with_patients_is_refused(seeded):
    before = Patient.select().count()
    with pytest.raises(SeedError, match="already has 300 patients"):
        seed(10)
    assert Patient.select().count() == before


def test_names_cover_apostrophes_hyphens_accents_and_shared_surnames(seeded):
    last_names = [p.last_name for p in Patient.select(Patient.last_name)]
    assert any("'" in n for n in last_names)
    assert any("-" in n for n in last_names)
    assert any(n != n.encode("ascii", "ignore").decode() for n in last_names + [p.first_name for p in Patient.select()])
    assert len(set(last_names)) < len(last_names)  # shared surnames
    assert PatientNameToken.select().count() > 0


def test_twins_share_surname_birth_date_and_address_but_not_first_name(tmp_path):
    open_database(sqlite_url(tmp_path / "t.db"))
    seed(1500)
    patients = list(Patient.select().order_by(Patient.id))
    twins = [(a, b) for a, b in zip(patients, patients[1:])
             if a.last_name == b.last_name and a.birth_date == b.birth_date and a.address_line == b.address_line]
    close_database()
    assert twins
    assert all(a.first_name != b.first_name and a.mrn != b.mrn for a, b in twins)


def test_every_patient_has_signed_notes_with_clinical_content(seeded):
    assert Patient.select().where(~Patient.id.in_(Note.select(Note.patient))).count() == 0
    signed = Note.select().where(Note.signed_at.is_null(False)).count()
    unsigned = Note.select().where(Note.signed_at.is_null()).count()
    assert signed > 5 * unsigned > 0
    note = Note.select().where(Note.signed_at.is_null(False)).first()
    titles = [title for title, _ in note.sections]
    assert titles == ["Chief Complaint", "History of Present Illness", "Physical Exam", "Assessment", "Plan"]
    assert note.encounter.patient_id == note.patient_id
    assert note.author.in_practice


def test_clinical_entries_carry_codes_from_the_code_tables(seeded):
    problems = {(p[0], p[1], p[2]) for p in codes.PROBLEMS}
    assert Problem.select().count() > 100
    assert all((p.snomed_code, p.icd10_code, p.display) in problems for p in Problem.select())
    rx = {m[0] for m in codes.MEDICATIONS}
    assert all(m.rxnorm_code in rx for m in Medication.select())
    assert Allergy.select().count() > 30
    units = {v[2] for v in codes.VITALS.values()}
    assert {v.unit for v in VitalSign.select()} == units


def test_no_future_births_and_plausible_ages(seeded):
    born = [p.birth_date for p in Patient.select(Patient.birth_date)]
    assert max(born) <= dt.date(2026, 11, 1)
    assert min(born) >= dt.date(1925, 1, 1)


def test_providers_directory_and_address_book(seeded):
    for provider in Provider.select():
        assert provider.npi == npi_with_check_digit(provider.npi[:9])
    assert Provider.select().where(Provider.in_practice).count() >= 5
    assert DirectoryEntry.select().count() >= 240
    assert all(e.endpoint.endswith(".example") for e in DirectoryEntry.select())
    contacts = list(Contact.select())
    assert len(contacts) >= 40
    assert any(c.direct_address for c in contacts) and any(not c.direct_address and c.fax for c in contacts)


def test_seeded_database_passes_foreign_key_check(seeded):
    from models.db import is_sqlite

    if is_sqlite():
        assert seeded.execute_sql("PRAGMA foreign_key_check").fetchall() == []
    else:  # PostgreSQL checks every row as it is written: the constraints must be there to do so
        count = seeded.execute_sql("SELECT count(*) FROM information_schema.table_constraints "
                                   "WHERE constraint_type = 'FOREIGN KEY'").fetchone()[0]
        assert count >= 20


def test_sex_gender_identity_and_sexual_orientation_are_recorded_for_a_share_from_the_value_sets(seeded):
    patients = list(Patient.select())
    recorded = [p for p in patients if p.recorded_sex_code]
    assert 0.45 < len(recorded) / len(patients) < 0.75
    assert all(not (p.gender_identity_code or p.sexual_orientation_code or p.sogi_recorded_on)
               for p in patients if not p.recorded_sex_code)  # blank means never asked: all or nothing
    allowed = {"ASKU", "UNK"}
    assert {p.recorded_sex_code for p in recorded} <= {c for c, _ in codes.SEXES} | allowed
    assert {p.gender_identity_code for p in recorded} <= {c for c, _ in codes.GENDER_IDENTITIES} | allowed | {""}
    assert {p.sexual_orientation_code for p in recorded} <= {c for c, _ in codes.SEXUAL_ORIENTATIONS} | allowed | {""}
    assert any(p.gender_identity_code == "ASKU" or p.sexual_orientation_code in allowed for p in recorded)
    assert all(p.birth_date <= p.sogi_recorded_on <= dt.date(2026, 11, 1) and p.recorded_sex for p in recorded)


def test_the_sogi_fields_draw_nothing_from_the_main_generator(tmp_path, monkeypatch):
    """Adding them must leave every other seeded value as it was (snapshots of the seeded data depend on it)."""
    import models.seed

    sogi_columns = set(models.seed.SOGI_FIELDS)

    def without_sogi(dump):
        with sqlite3.connect(tmp_path / "probe.db") as raw:
            columns = [r[1] for r in raw.execute('PRAGMA table_info("patient")')]
        keep = [i for i, c in enumerate(columns) if c not in sogi_columns]
        return {**dump, "patient": [tuple(row[i] for i in keep) for row in dump["patient"]]}

    with_them = _seed_file(tmp_path / "probe.db", 120)
    monkeypatch.setattr(models.seed, "sogi", lambda *args: models.seed._NOT_RECORDED)
    without = _seed_file(tmp_path / "plain.db", 120)
    assert without_sogi(with_them) == without_sogi(without)
    assert with_them["patient"] != without["patient"]
