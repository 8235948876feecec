"""Synthetic, deterministic demo data: a practice, its clinicians, external specialists with Direct addresses
and fax numbers, a provider directory, an address book, and N patients with encounters, signed notes and coded
clinical lists.

Everything comes from one `random.Random(seed)` and a fixed reference date, so the same arguments always give
the same database; fields added later (sex, gender identity, sexual orientation) draw from generators of their own
so that adding them changed nothing else. No real person is described: names are drawn independently from
common-name pools, phone numbers are in the fictional 555-01xx range, and e-mail and Direct domains end in
`.example`.
Rows are written with `bulk_insert` in one transaction: 100,000 patients is a few million rows.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import time
import unicodedata
from dataclasses import dataclass
from typing import Callable

from models import codes, names
from models.clinical import (
    Allergy,
    CareTeamMember,
    Goal,
    HealthConcern,
    Immunization,
    Medication,
    Payer,
    PlanItem,
    Problem,
    Procedure,
    Result,
    SmokingStatus,
    VitalSign,
)
from models.contacts import Contact, DirectoryEntry
from models.db import bulk_insert, database, is_sqlite
from models.patients import Encounter, Note, Patient, PatientNameToken
from models.practice import Practice, Provider, User
from models.text import name_tokens, normalize

DEFAULT_SEED = 20261126
#: "Today" for the synthetic data: ages, visit dates and results are placed relative to it.
REFERENCE_DATE = dt.date(2026, 11, 1)
CHUNK = 5000
PRACTICE_DOMAIN = "direct.riverbend-family.example"


class SeedError(Exception):
    pass


@dataclass
class SeedReport:
    patients: int
    notes: int
    rows: int
    seconds: float


def npi_with_check_digit(nine_digits: str) -> str:
    """A well-formed NPI: the Luhn check digit over the '80840' prefix and the nine digits."""
    digits = [int(d) for d in "80840" + nine_digits]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return nine_digits + str((10 - total % 10) % 10)


def fictional_phone(rng: random.Random, area: str) -> str:
    return f"({area}) 555-01{rng.randrange(100):02d}"


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in normalize_ascii(text).lower()).strip("-")


def normalize_ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


# Which medications treat which problems (by SNOMED code), and which specialty sees each problem.
PROBLEM_MEDS = {
    "59621000": ["314076", "197361", "310798"],
    "44054006": ["861007"],
    "195967001": ["745679"],
    "13645005": ["745679"],
    "55822004": ["617310", "198211"],
    "35489007": ["312941"],
    "197480006": ["312941"],
    "49436004": ["855332", "866924"],
    "42343007": ["310429", "866924"],
    "396275006": ["313782"],
    "40930008": ["966222"],
    "235595009": ["314200"],
    "37796009": ["313782"],
    "279039007": ["313782"],
    "53741008": ["309362", "617310", "197381"],
}
PROBLEM_SPECIALTY = {
    "44054006": "207RE0101X", "40930008": "207RE0101X", "49436004": "207RC0000X", "42343007": "207RC0000X",
    "53741008": "207RC0000X", "59621000": "207RC0000X", "13645005": "207RP1001X", "195967001": "207RP1001X",
    "709044004": "207RN0300X", "235595009": "207RG0100X", "37796009": "2084N0400X", "230690007": "2084N0400X",
    "396275006": "207X00000X", "279039007": "207X00000X", "64859006": "207RR0500X", "35489007": "2084P0800X",
    "197480006": "2084P0800X",
}
MEDS_BY_CODE = {m[0]: m for m in codes.MEDICATIONS}
SPECIALTY_BY_CODE = {s[0]: s for s in codes.SPECIALTIES}

PRACTICE_CLINICIANS = [
    ("Helen", "Park", "MD", "207Q00000X"),
    ("Samuel", "Okoye", "MD", "207Q00000X"),
    ("Rosa", "Delgado", "DO", "207R00000X"),
    ("Thomas", "Lindgren", "MD", "207R00000X"),
    ("Aisha", "Rahman", "NP", "207Q00000X"),
    ("Grace", "Whitfield", "PA-C", "207Q00000X"),
]

INVALID_CONTACTS = [
    ("invalid", "no certificate published for this address"),
    ("invalid", "certificate not trusted: it does not chain to a trust anchor"),
    ("invalid", "certificate expired"),
    ("invalid", "certificate revoked"),
]

ORG_WORDS = ["Valley", "Lakeside", "Summit", "Northside", "Harbor", "Prairie", "Cedar Ridge", "Bayview", "Riverside",
             "Mountain View", "Greenfield", "Oakmont"]


class _Ids:
    """Next free primary keys, so child rows can name their parents before anything is written."""

    def __init__(self) -> None:
        self.patient = (Patient.select(Patient.id).order_by(Patient.id.desc()).scalar() or 0) + 1
        self.encounter = (Encounter.select(Encounter.id).order_by(Encounter.id.desc()).scalar() or 0) + 1
        self.note = (Note.select(Note.id).order_by(Note.id.desc()).scalar() or 0) + 1


def seed(
    patients: int,
    seed_value: int = DEFAULT_SEED,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> SeedReport:
    """Fill an empty database (schema already migrated) with synthetic data. Refuses a database with patients."""
    started = time.perf_counter()
    if patients < 0:
        raise SeedError("the number of patients cannot be negative")
    existing = Patient.select().count()
    if existing:
        raise SeedError(
            f"the database already has {existing} patients; seed a new one (--data-dir DIR or --db URL)"
        )
    rng = random.Random(seed_value)
    rows = 0
    with database.atomic():
        practice_providers, external = _seed_providers(rng)
        rows += len(practice_providers) + len(external) + 4
        rows += _seed_directory_and_contacts(rng, external)
        generator = _PatientGenerator(rng, practice_providers, external)
        ids = _Ids()
        done = 0
        notes = 0
        while done < patients:
            batch = generator.batch(ids, min(CHUNK, patients - done))
            for model, fields, table_rows in batch.tables():
                bulk_insert(model, fields, table_rows)
                rows += len(table_rows)
            done += len(batch.patients)
            notes += len(batch.notes)
            if progress:
                progress(done, patients)
        rows += _seed_referrals(rng, done, external)
    return SeedReport(patients=done, notes=notes, rows=rows, seconds=time.perf_counter() - started)


#: Rows per COPY / executemany in `seed_patients`.
PATIENT_CHUNK = 50_000


def seed_patients(
    patients: int,
    seed_value: int = DEFAULT_SEED,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> SeedReport:
    """Fill an empty database with `patients` synthetic patients and their search keys only: the same patient
    rows (names, birth dates, MRNs, twins, SOGI) from the same generator as `seed`, without the practice, clinical
    records or referrals. For benchmarks of patient search at a million patients, which `seed` would take an hour
    to write; on PostgreSQL the rows go in by COPY, not one INSERT each."""
    started = time.perf_counter()
    if patients < 0:
        raise SeedError("the number of patients cannot be negative")
    existing = Patient.select().count()
    if existing:
        raise SeedError(
            f"the database already has {existing} patients; seed a new one (--data-dir DIR or --db URL)"
        )
    from models.migrations import build_search_indexes, search_indexes

    generator = _PatientGenerator(random.Random(seed_value), [], [])
    insert = bulk_insert if is_sqlite() else _copy_rows
    rows = 0
    if is_sqlite():  # the indexes being rebuilt and the rows going in stay in memory, not spilled to the WAL
        cache_size = database.execute_sql("PRAGMA cache_size").fetchone()[0]
        database.execute_sql("PRAGMA cache_size = -1000000")
    with database.atomic():
        # Search's indexes are built once at the end, by sorting: kept up to date row by row, a million
        # patients in random name order take SQLite several times longer to write.
        for name, _ in search_indexes():
            database.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
        ids = _Ids()
        done = 0
        while done < patients:
            batch = generator.batch(ids, min(PATIENT_CHUNK, patients - done), clinical=False)
            for model, fields, table_rows in list(batch.tables())[:2]:  # Patient, PatientNameToken
                insert(model, fields, table_rows)
                rows += len(table_rows)
            done += len(batch.patients)
            if progress:
                progress(done, patients)
        build_search_indexes(database.obj)
    if is_sqlite():
        database.execute_sql(f"PRAGMA cache_size = {cache_size}")
    else:  # fresh statistics, or the planner guesses at a million rows
        database.execute_sql("ANALYZE patient")
        database.execute_sql("ANALYZE patient_name_token")
    return SeedReport(patients=done, notes=0, rows=rows, seconds=time.perf_counter() - started)


def _copy_field(value) -> str:
    if value is None:
        return "\\N"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_rows(model, fields: list[str], rows: list[tuple]) -> None:
    """PostgreSQL's COPY FROM STDIN in text format: a million rows in seconds where executemany takes minutes."""
    if not rows:
        return
    columns = ", ".join(f'"{model._meta.fields[name].column_name}"' for name in fields)
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(map(_copy_field, row)))
        buffer.write("\n")
    buffer.seek(0)
    database.cursor().copy_expert(f'COPY "{model._meta.table_name}" ({columns}) FROM STDIN', buffer)
    if "id" in fields:  # ids given: move the sequence past them
        table = model._meta.table_name
        database.execute_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                             f'(SELECT COALESCE(MAX(id), 1) FROM "{table}"))')


def _seed_providers(rng: random.Random) -> tuple[list[int], list[Provider]]:
    practice = Practice.create(
        name="Riverbend Family Medicine",
        npi=npi_with_check_digit("192837465"),
        address_line="200 River Rd, Suite 4",
        city="Springfield",
        state="IL",
        postal_code="62704",
        phone="(217) 555-0100",
        fax="(217) 555-0101",
        direct_address=f"referrals@{PRACTICE_DOMAIN}",
    )
    ours = []
    for i, (first, last, cred, taxonomy) in enumerate(PRACTICE_CLINICIANS):
        ours.append(
            Provider.create(
                npi=npi_with_check_digit(f"1{i:08d}"),
                first_name=first,
                last_name=last,
                credentials=cred,
                specialty_code=taxonomy,
                specialty=SPECIALTY_BY_CODE[taxonomy][1],
                organization=practice.name,
                address_line=practice.address_line,
                city=practice.city,
                state=practice.state,
                postal_code=practice.postal_code,
                phone=practice.phone,
                fax=practice.fax,
                direct_address=f"{first.lower()}.{last.lower()}@{PRACTICE_DOMAIN}",
                in_practice=True,
            )
        )
    User.create(username="frontdesk", display_name="Front Desk", role="front-desk")
    User.create(username="admin", display_name="Practice Administrator", role="admin")
    User.create(username="hpark", display_name="Helen Park, MD", role="clinician", provider=ours[0])

    external = []
    culture_keys = list(names.CULTURES)
    for i in range(240):
        culture = names.CULTURES[rng.choice(culture_keys)]
        female = rng.random() < 0.5
        first = rng.choice(culture[2] if female else culture[3])
        last = rng.choice(culture[4])
        taxonomy, specialty, *_ = codes.SPECIALTIES[2 + i % (len(codes.SPECIALTIES) - 2)]
        city, state, zip3, area = rng.choice(names.CITIES)
        org = f"{rng.choice(ORG_WORDS)} {specialty.split(',')[0]}"
        domain = f"direct.{_slug(org)}.example"
        external.append(
            Provider.create(
                npi=npi_with_check_digit(f"2{i:08d}"),
                first_name=first,
                last_name=last,
                credentials=rng.choice(["MD", "MD", "DO", "MD, PhD"]),
                specialty_code=taxonomy,
                specialty=specialty,
                organization=org,
                address_line=f"{rng.randrange(10, 9999)} {rng.choice(names.STREETS)} {rng.choice(names.STREET_KINDS)}",
                city=city,
                state=state,
                postal_code=f"{zip3}{rng.randrange(100):02d}",
                phone=fictional_phone(rng, area),
                fax=fictional_phone(rng, area),
                direct_address=f"{_slug(first)}.{_slug(last)}{i}@{domain}",
            )
        )
    return [p.id for p in ours], external


def _seed_directory_and_contacts(rng: random.Random, external: list[Provider]) -> int:
    entries = []
    for p in external:
        entries.append(dict(
            npi=p.npi, name=f"{p.first_name} {p.last_name}, {p.credentials}", organization=p.organization,
            specialty=p.specialty, endpoint_type="DIRECT", endpoint=p.direct_address, use_code="HIE",
            address_line=p.address_line, city=p.city, state=p.state, postal_code=p.postal_code, country="US",
            source="seed",
        ))
        # Many organisations also publish one shared inbox for referrals.
        if rng.random() < 0.3:
            entries.append(dict(
                npi=p.npi, name=p.organization, organization=p.organization, specialty=p.specialty,
                endpoint_type="DIRECT", endpoint=f"referrals@{p.direct_address.split('@')[1]}", use_code="HIE",
                address_line=p.address_line, city=p.city, state=p.state, postal_code=p.postal_code, country="US",
                source="seed",
            ))
    for entry in entries:
        entry.update(name_norm=normalize(entry["name"]), organization_norm=normalize(entry["organization"]),
                     city_norm=normalize(entry["city"]))
    DirectoryEntry.insert_many(entries).on_conflict_ignore().execute()

    contacts = []
    for n, p in enumerate(rng.sample(external, 48)):
        name = f"{p.first_name} {p.last_name}, {p.credentials}"
        fax_only = rng.random() < 0.15
        # What the last check found (stored state until live certificate discovery exists): mostly verified,
        # a few of each failure the To: field must tell apart.
        state, reason = ("verified", "") if n % 6 else INVALID_CONTACTS[(n // 6) % len(INVALID_CONTACTS)]
        checked = dt.datetime.combine(REFERENCE_DATE - dt.timedelta(days=rng.randrange(1, 90)), dt.time(9))
        contacts.append(dict(
            name=name, organization=p.organization, specialty=p.specialty, npi=p.npi,
            direct_address="" if fax_only else p.direct_address, fax=p.fax, phone=p.phone, provider=p.id,
            name_norm=normalize(name),
            verification="unverified" if fax_only else state, verification_reason="" if fax_only else reason,
            verified_at=None if fax_only else checked,
            cert_fingerprint="" if fax_only or state != "verified" else f"{rng.getrandbits(256):064x}",
        ))
    Contact.insert_many(contacts).execute()
    return len(entries) + len(contacts)


# Past referrals for the history screen: (status, share, failure reason)
REFERRAL_OUTCOMES = [
    ("delivered", 35, ""),
    ("report-received", 25, ""),
    ("sent", 10, ""),
    ("failed", 8, "5.7.31 no certificate is published for the recipient's address"),
    ("failed", 4, "5.4.71 no processed MDN within 60 minutes"),
    ("failed", 4, "fax line busy after 3 attempts"),
    ("cancelled", 4, ""),
]


def _seed_referrals(rng: random.Random, patients: int, external: list[Provider]) -> int:
    """A history of past referrals in every status, with their events (no outbox jobs: all are settled)."""
    from models.referrals import Referral, ReferralEvent

    count = min(max(patients // 40, min(patients, 12)), 2500)
    if not count:
        return 0
    practice_domain = PRACTICE_DOMAIN
    weights = [o[1] for o in REFERRAL_OUTCOMES]
    referrals, events = [], []
    next_id = (Referral.select(Referral.id).order_by(Referral.id.desc()).scalar() or 0) + 1
    for n in range(count):
        rid = next_id + n
        patient = rng.randrange(1, patients + 1)
        note = Note.select(Note.id).where(Note.patient == patient, Note.signed_at.is_null(False)).scalar()
        status, _, reason = rng.choices(REFERRAL_OUTCOMES, weights)[0]
        provider = rng.choice(external)
        fax = "fax line" in reason or (status != "failed" and rng.random() < 0.2)
        channel = "efax" if fax else "direct"
        recipient = "".join(ch for ch in provider.fax if ch.isdigit()) if fax else provider.direct_address
        created = dt.datetime.combine(REFERENCE_DATE - dt.timedelta(days=rng.randrange(2, 360)),
                                      dt.time(9 + rng.randrange(8), rng.randrange(60)))
        sent = created + dt.timedelta(minutes=1) if status not in ("cancelled",) else None
        delivered = sent + dt.timedelta(minutes=rng.randrange(2, 50)) if status in ("delivered", "report-received") else None
        report_on = (min((delivered + dt.timedelta(days=rng.randrange(3, 40))).date(), REFERENCE_DATE)
                     if status == "report-received" else None)
        reason_text = f"Evaluation by {provider.specialty.lower()}"
        referrals.append((rid, patient, note, "transferring", channel, recipient,
                          f"{provider.first_name} {provider.last_name}, {provider.credentials}", reason_text,
                          rng.choice(("routine", "routine", "routine", "urgent")), f"Referral: {reason_text}",
                          "", 1, "[]", status, reason, f"<seed{rid:06d}@{practice_domain}>", str(created),
                          str(sent) if sent else None, str(delivered) if delivered else None,
                          report_on.isoformat() if report_on else None))
        steps = [("queued", created, "")]
        if status == "cancelled":
            steps.append(("cancelled", created + dt.timedelta(minutes=5), "cancelled by staff"))
        else:
            steps += [("sending", sent, ""), ("sent", sent, "accepted by the HISP" if not fax else "accepted by the fax gateway")]
        if status == "failed":
            steps.append(("failed", sent + dt.timedelta(minutes=rng.randrange(1, 61)), reason))
        if status == "sent" and not fax:  # processed, but the final "dispatched" never came (some HISPs)
            steps.append(("mdn-processed", sent + dt.timedelta(minutes=3), "processed MDN"))
        if delivered:
            if not fax:
                steps.append(("mdn-processed", delivered - dt.timedelta(minutes=1), "processed MDN"))
            steps.append(("delivered", delivered, "dispatched MDN" if not fax else "fax delivered"))
        if report_on:
            steps.append(("report-received", dt.datetime.combine(report_on, dt.time(12)), "consultation report filed"))
        events += [(rid, str(at), kind, detail) for kind, at, detail in steps]
    bulk_insert(Referral, ["id", "patient", "note", "direction", "channel", "recipient", "recipient_name", "reason",
                           "urgency", "subject", "message", "include_note", "excluded_sections", "status",
                           "status_reason", "message_id", "created_at", "sent_at", "delivered_at",
                           "report_received_on"], referrals)
    bulk_insert(ReferralEvent, ["referral", "at", "kind", "detail"], events)
    return len(referrals) + len(events)


def _iso(d: dt.date) -> str:
    return d.isoformat()


def _stamp(d: dt.date, minutes: int) -> str:
    return f"{d.isoformat()} {8 + minutes // 60:02d}:{minutes % 60:02d}:00"


SOGI_FIELDS = ["recorded_sex_code", "recorded_sex", "gender_identity_code", "gender_identity",
               "sexual_orientation_code", "sexual_orientation", "sogi_recorded_on"]
_NOT_RECORDED = ("", "", "", "", "", "", None)


def sogi(pid: int, female: bool, birth: dt.date, age: int) -> tuple:
    """Sex, gender identity and sexual orientation (the SOGI_FIELDS) for about 60% of patients, from a
    generator of their own keyed by the patient id: the main one is not touched, so every other seeded value is
    what it was before these fields existed. Children under 12 are asked about sex only."""
    rng = random.Random(f"sogi-{pid}")
    if rng.random() >= 0.6:
        return _NOT_RECORDED
    asked = max(birth, REFERENCE_DATE - dt.timedelta(days=rng.randrange(7, 900)))
    roll = rng.random()
    sex = codes.SEXES[0 if female else 1] if roll < 0.97 else ("ASKU", codes.NULL_ANSWERS["ASKU"])
    if age < 12:
        return (*sex, "", "", "", "", _iso(asked))
    roll = rng.random()
    if roll < 0.9:
        identity = codes.GENDER_IDENTITIES[0 if female else 1]
    elif roll < 0.94:
        identity = codes.GENDER_IDENTITIES[1 if female else 0]
    elif roll < 0.97:
        identity = codes.GENDER_IDENTITIES[2]
    else:
        identity = ("ASKU", codes.NULL_ANSWERS["ASKU"])
    choices = [*codes.SEXUAL_ORIENTATIONS, ("ASKU", codes.NULL_ANSWERS["ASKU"]), ("UNK", codes.NULL_ANSWERS["UNK"])]
    orientation = rng.choices(choices, (86, 4, 4, 4, 2))[0]
    return (*sex, *identity, *orientation, _iso(asked))


class _Batch:
    def __init__(self) -> None:
        self.patients: list[tuple] = []
        self.tokens: list[tuple] = []
        self.encounters: list[tuple] = []
        self.notes: list[tuple] = []
        self.problems: list[tuple] = []
        self.medications: list[tuple] = []
        self.allergies: list[tuple] = []
        self.immunizations: list[tuple] = []
        self.vitals: list[tuple] = []
        self.results: list[tuple] = []
        self.procedures: list[tuple] = []
        self.smoking: list[tuple] = []
        self.goals: list[tuple] = []
        self.concerns: list[tuple] = []
        self.care_team: list[tuple] = []
        self.plan: list[tuple] = []
        self.payers: list[tuple] = []

    def tables(self):
        yield Patient, ["id", "mrn", "first_name", "middle_name", "last_name", "birth_date", "sex", "address_line",
                        "city", "state", "postal_code", "phone", "email", "language", "race_code", "race",
                        "ethnicity_code", "ethnicity", "last_norm", "first_norm", *SOGI_FIELDS], self.patients
        yield PatientNameToken, ["token", "patient"], self.tokens
        yield Encounter, ["id", "patient", "provider", "start", "type_code", "type_display", "reason",
                          "diagnosis_code", "diagnosis"], self.encounters
        yield Note, ["id", "patient", "encounter", "author", "type_code", "type_display", "written_at", "title",
                     "sections_json", "signed_at", "signed_by"], self.notes
        yield Problem, ["patient", "snomed_code", "icd10_code", "display", "onset_date", "status"], self.problems
        yield Medication, ["patient", "rxnorm_code", "display", "dose", "route_code", "route", "frequency",
                           "start_date", "status"], self.medications
        yield Allergy, ["patient", "substance_system", "substance_code", "substance", "reaction_code", "reaction",
                        "severity_code", "severity", "onset_date", "status"], self.allergies
        yield Immunization, ["patient", "cvx_code", "display", "given_on", "status"], self.immunizations
        yield VitalSign, ["patient", "measured_at", "loinc_code", "display", "value", "unit"], self.vitals
        yield Result, ["patient", "resulted_at", "panel_code", "panel", "loinc_code", "display", "value", "unit",
                       "reference_low", "reference_high", "interpretation"], self.results
        yield Procedure, ["patient", "code_system", "code", "display", "performed_on"], self.procedures
        yield SmokingStatus, ["patient", "snomed_code", "display", "observed_on"], self.smoking
        yield Goal, ["patient", "loinc_code", "description", "target_date"], self.goals
        yield HealthConcern, ["patient", "snomed_code", "display", "noted_on"], self.concerns
        yield CareTeamMember, ["patient", "provider", "role_code", "role"], self.care_team
        yield PlanItem, ["patient", "code_system", "code", "description", "planned_on"], self.plan
        yield Payer, ["patient", "payer_type_code", "payer_type", "payer_name", "member_id", "group_number"], \
            self.payers


class _PatientGenerator:
    def __init__(self, rng: random.Random, practice_providers: list[int], external: list[Provider]) -> None:
        self.rng = rng
        self.practice_providers = practice_providers
        self.specialists: dict[str, list[int]] = {}
        for p in external:
            self.specialists.setdefault(p.specialty_code, []).append(p.id)
        self.cultures = list(names.CULTURES.values())
        self.culture_weights = list(names.CULTURE_WEIGHTS.values())
        self.smoking = [s[:2] for s in codes.SMOKING_STATUSES]
        self.smoking_weights = [s[2] for s in codes.SMOKING_STATUSES]
        self.pending_twin: tuple | None = None

    def batch(self, ids: _Ids, count: int, *, clinical: bool = True) -> _Batch:
        out = _Batch()
        for _ in range(count):
            self._patient(ids, out, clinical=clinical)
        return out

    def _patient(self, ids: _Ids, out: _Batch, *, clinical: bool = True) -> None:
        rng = self.rng
        pid = ids.patient
        ids.patient += 1
        if self.pending_twin is not None:
            culture, last, birth, address, city, state, postal, phone, taken = self.pending_twin
            self.pending_twin = None
            female = rng.random() < 0.5
            pool = [n for n in (culture[2] if female else culture[3]) if n != taken]
            first = rng.choice(pool)
        else:
            culture = rng.choices(self.cultures, self.culture_weights)[0]
            female = rng.random() < 0.51
            first = rng.choice(culture[2] if female else culture[3])
            last = rng.choice(culture[4])
            age_years = min(int(rng.expovariate(1 / 38)), 99)
            birth = REFERENCE_DATE - dt.timedelta(days=age_years * 365 + rng.randrange(365))
            city, state, zip3, area = rng.choice(names.CITIES)
            address = f"{rng.randrange(1, 9999)} {rng.choice(names.STREETS)} {rng.choice(names.STREET_KINDS)}"
            postal = f"{zip3}{rng.randrange(100):02d}"
            phone = fictional_phone(rng, area)
            if rng.random() < 0.008:  # the next patient is this one's twin: same surname, birth date, home
                self.pending_twin = (culture, last, birth, address, city, state, postal, phone, first)
        age = (REFERENCE_DATE - birth).days // 365
        middle = rng.choice(names.MIDDLE_INITIALS) if rng.random() < 0.4 else ""
        race_code = culture[0]
        race = next(r[1] for r in codes.RACES if r[0] == race_code)
        eth = codes.ETHNICITIES[0] if culture[1] else codes.ETHNICITIES[1]
        email = f"{_slug(first)}.{_slug(last)}{pid}@mail.example" if rng.random() < 0.6 else ""
        language = "es" if culture[1] and rng.random() < 0.3 else "en"
        out.patients.append((
            pid, str(1_000_000 + pid), first, middle, last, _iso(birth), "F" if female else "M", address, city,
            state, postal, phone, email, language, race_code, race, eth[0], eth[1], normalize(last), normalize(first),
            *sogi(pid, female, birth, age),
        ))
        for token in sorted(name_tokens(first, last)):
            out.tokens.append((token, pid))
        if not clinical:
            return

        problems = self._problems(pid, age, out)
        self._medications(pid, problems, out)
        self._allergies(pid, age, out)
        self._immunizations(pid, age, out)
        pcp = rng.choice(self.practice_providers)
        self._encounters_and_notes(ids, pid, age, female, pcp, problems, out)
        self._results(pid, age, problems, out)
        self._history(pid, age, female, problems, out)
        self._care_team_and_plan(pid, pcp, problems, out)
        self._payer(pid, age, out)

    def _problems(self, pid: int, age: int, out: _Batch) -> list[tuple]:
        rng = self.rng
        count = 0 if age < 18 and rng.random() < 0.7 else min(int(rng.expovariate(1 / (0.5 + age / 30))), 5)
        chosen = rng.sample(codes.PROBLEMS, count)
        for snomed, icd10, display in chosen:
            onset = REFERENCE_DATE - dt.timedelta(days=rng.randrange(30, 365 * max(1, min(age, 20))))
            status = "resolved" if rng.random() < 0.1 else "active"
            out.problems.append((pid, snomed, icd10, display, _iso(onset), status))
        return chosen

    def _medications(self, pid: int, problems: list[tuple], out: _Batch) -> None:
        rng = self.rng
        seen = set()
        for snomed, *_ in problems:
            options = PROBLEM_MEDS.get(snomed)
            if not options:
                continue
            code = rng.choice(options)
            if code in seen:
                continue
            seen.add(code)
            _, display, dose, frequency = MEDS_BY_CODE[code]
            route = codes.INHALED_ROUTE if "Inhaler" in display else codes.ORAL_ROUTE
            start = REFERENCE_DATE - dt.timedelta(days=rng.randrange(20, 2000))
            out.medications.append((pid, code, display, dose, route[0], route[1], frequency, _iso(start), "active"))

    def _allergies(self, pid: int, age: int, out: _Batch) -> None:
        rng = self.rng
        roll = rng.random()
        count = 2 if roll < 0.08 else 1 if roll < 0.38 else 0
        for system, code, substance in rng.sample(codes.ALLERGENS, count):
            reaction = rng.choice(codes.REACTIONS)
            severity = codes.SEVERITIES[2] if reaction[0] == "39579001" else rng.choice(codes.SEVERITIES[:2])
            onset = REFERENCE_DATE - dt.timedelta(days=rng.randrange(30, 365 * max(1, age)))
            out.allergies.append((pid, system, code, substance, reaction[0], reaction[1], severity[0], severity[1],
                                  _iso(onset), "active"))

    def _immunizations(self, pid: int, age: int, out: _Batch) -> None:
        rng = self.rng
        season = dt.date(REFERENCE_DATE.year - (1 if REFERENCE_DATE.month < 9 else 0), 10, 1)
        plan = [("140", 0.6, season), ("208", 0.4, season - dt.timedelta(days=30))]
        if age >= 11:
            plan.append(("115", 0.3, REFERENCE_DATE - dt.timedelta(days=rng.randrange(60, 3000))))
        if age >= 65:
            plan.append(("33", 0.6, REFERENCE_DATE - dt.timedelta(days=rng.randrange(60, 2000))))
        if age >= 50:
            plan.append(("187", 0.3, REFERENCE_DATE - dt.timedelta(days=rng.randrange(60, 1500))))
        if age < 18:
            plan.append(("03", 0.9, REFERENCE_DATE - dt.timedelta(days=365 * max(age - 1, 0) + 30)))
        names_by_cvx = dict(codes.VACCINES)
        for cvx, chance, when in plan:
            if rng.random() < chance:
                out.immunizations.append((pid, cvx, names_by_cvx[cvx], _iso(when + dt.timedelta(days=rng.randrange(60))),
                                          "completed"))

    def _encounters_and_notes(self, ids: _Ids, pid: int, age: int, female: bool, pcp: int,
                              problems: list[tuple], out: _Batch) -> None:
        rng = self.rng
        visits = sorted(rng.sample(range(7, 1100), rng.choice((1, 2, 2, 3))), reverse=True)
        for n, days_ago in enumerate(visits):
            eid = ids.encounter
            ids.encounter += 1
            day = REFERENCE_DATE - dt.timedelta(days=days_ago)
            minutes = rng.randrange(0, 9 * 60, 15)
            provider = pcp if rng.random() < 0.8 else rng.choice(self.practice_providers)
            focus = rng.choice(problems) if problems else None
            if focus:
                ctype = codes.ENCOUNTER_TYPES[rng.randrange(2)]
                reason, dx_code, dx = f"Follow-up of {focus[2].lower()}", focus[1], focus[2]
            else:
                ctype = codes.ENCOUNTER_TYPES[3] if age >= 18 else codes.ENCOUNTER_TYPES[0]
                reason, dx_code, dx = "Routine health examination", "Z00.00", "Encounter for general adult medical examination without abnormal findings"
            out.encounters.append((eid, pid, provider, _stamp(day, minutes), ctype[0], ctype[1], reason, dx_code, dx))

            vitals = self._vitals(pid, age, female, day, minutes, out) if n == 0 else None
            nid = ids.note
            ids.note += 1
            note_type = codes.NOTE_TYPES[0] if n < len(visits) - 1 else rng.choice(codes.NOTE_TYPES[:2])
            unsigned = n == 0 and rng.random() < 0.08
            sections = self._note_sections(age, female, reason, problems, vitals)
            signed_at = None if unsigned else _stamp(day, minutes + 45)
            out.notes.append((nid, pid, eid, provider, note_type[0], note_type[1], _stamp(day, minutes + 30),
                              f"{note_type[1]}: {reason}", json.dumps(sections), signed_at,
                              None if unsigned else provider))

    def _vitals(self, pid: int, age: int, female: bool, day: dt.date, minutes: int, out: _Batch) -> tuple:
        rng = self.rng
        stamp = _stamp(day, minutes + 5)
        if age >= 18:
            height = round(rng.gauss(163 if female else 177, 7), 1)
            bmi = round(max(17.0, rng.gauss(27.5, 5)), 1)
        else:
            height = round(50 + age * 6.2 + rng.gauss(0, 4), 1)
            bmi = round(max(13.0, rng.gauss(17.5, 2.5)), 1)
        weight = round(bmi * (height / 100) ** 2, 1)
        systolic = int(rng.gauss(118 + max(age - 30, 0) * 0.45, 12))
        diastolic = int(rng.gauss(76, 8))
        heart_rate = int(rng.gauss(74, 9))
        spo2 = min(100, int(rng.gauss(97.5, 1.2)))
        values = {"height": height, "weight": weight, "bmi": bmi, "systolic": systolic, "diastolic": diastolic,
                  "heart_rate": heart_rate, "spo2": spo2}
        for key, value in values.items():
            loinc, display, unit = codes.VITALS[key]
            out.vitals.append((pid, stamp, loinc, display, value, unit))
        return systolic, diastolic, heart_rate, weight

    def _note_sections(self, age: int, female: bool, reason: str, problems: list[tuple],
                       vitals: tuple | None) -> list[list[str]]:
        rng = self.rng
        who = f"{age}-year-old {'woman' if female else 'man'}" if age >= 18 else f"{age}-year-old {'girl' if female else 'boy'}"
        feeling = rng.choice(["feels well overall", "reports more fatigue than usual", "reports intermittent headaches",
                              "reports improved energy since the last visit", "has no new complaints"])
        adherence = rng.choice(["Takes medications as prescribed.", "Misses evening doses about once a week.",
                                "No medication side effects reported."])
        exam = "General: alert, no acute distress. Heart: regular rate and rhythm. Lungs: clear bilaterally."
        if vitals:
            exam = f"BP {vitals[0]}/{vitals[1]} mm Hg, HR {vitals[2]}/min, weight {vitals[3]} kg. " + exam
        if problems:
            assessment = "; ".join(f"{display} ({icd10})" for _, icd10, display in problems)
            plan = rng.choice(["Continue current regimen. Recheck labs in 3 months.",
                               "Adjust dose as discussed; follow up in 6 weeks.",
                               "Refer to specialist for further evaluation. Follow up after consultation."])
        else:
            assessment = "Healthy; age-appropriate screening up to date."
            plan = "Routine follow-up in 12 months."
        return [
            ["Chief Complaint", reason],
            ["History of Present Illness", f"{who} presents for {reason.lower()}; {feeling}. {adherence}"],
            ["Physical Exam", exam],
            ["Assessment", assessment],
            ["Plan", plan],
        ]

    def _results(self, pid: int, age: int, problems: list[tuple], out: _Batch) -> None:
        if age < 18:
            return
        rng = self.rng
        codes_present = {p[0] for p in problems}
        wanted = []
        if rng.random() < 0.5:
            wanted.append(("51990-0", "Basic metabolic panel - Blood"))
        if codes_present & {"55822004", "53741008"} or (age > 40 and rng.random() < 0.3):
            wanted.append(("57698-3", "Lipid panel with direct LDL - Serum or Plasma"))
        if "44054006" in codes_present:
            wanted.append(("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"))
        if rng.random() < 0.25:
            wanted.append(("58410-2", "CBC panel - Blood by Automated count"))
        for panel in wanted:
            when = _stamp(REFERENCE_DATE - dt.timedelta(days=rng.randrange(10, 400)), rng.randrange(0, 400, 5))
            for loinc, display, unit, low, high, mean, spread in codes.RESULT_PANELS[panel]:
                value = round(max(0.1, rng.gauss(mean, spread)), 1)
                flag = "H" if value > high else "L" if value < low else "N"
                out.results.append((pid, when, panel[0], panel[1], loinc, display, value, unit, low, high, flag))

    def _history(self, pid: int, age: int, female: bool, problems: list[tuple], out: _Batch) -> None:
        rng = self.rng
        if age >= 13:
            code, display = rng.choices(self.smoking, self.smoking_weights)[0]
            out.smoking.append((pid, code, display, _iso(REFERENCE_DATE - dt.timedelta(days=rng.randrange(7, 700)))))
        if age >= 30 and rng.random() < 0.25:
            options = [p for p in codes.PROCEDURES if female or p[0] != "24623002"]
            code, display = rng.choice(options)
            when = REFERENCE_DATE - dt.timedelta(days=rng.randrange(60, 365 * (age - 20)))
            out.procedures.append((pid, "SNOMED CT", code, display, _iso(when)))
        if problems and rng.random() < 0.5:
            loinc, text = rng.choice(codes.GOALS)
            out.goals.append((pid, loinc, text, _iso(REFERENCE_DATE + dt.timedelta(days=rng.randrange(60, 365)))))
        if rng.random() < 0.15:
            code, display = rng.choice(codes.HEALTH_CONCERNS)
            out.concerns.append((pid, code, display, _iso(REFERENCE_DATE - dt.timedelta(days=rng.randrange(7, 500)))))

    def _care_team_and_plan(self, pid: int, pcp: int, problems: list[tuple], out: _Batch) -> None:
        rng = self.rng
        out.care_team.append((pid, pcp, "446050000", "Primary care physician"))
        follow_up = REFERENCE_DATE + dt.timedelta(days=rng.choice((30, 42, 90, 180, 365)))
        out.plan.append((pid, codes.PLAN_FOLLOW_UP[0], codes.PLAN_FOLLOW_UP[1], codes.PLAN_FOLLOW_UP[2],
                         _iso(follow_up)))
        for snomed, *_ in problems:
            taxonomy = PROBLEM_SPECIALTY.get(snomed)
            if taxonomy and taxonomy in self.specialists and rng.random() < 0.35:
                _, specialty, role_code, role, referral_code = SPECIALTY_BY_CODE[taxonomy]
                out.care_team.append((pid, rng.choice(self.specialists[taxonomy]), role_code, role))
                out.plan.append((pid, "SNOMED CT", referral_code, f"Referral to {specialty.lower()}",
                                 _iso(REFERENCE_DATE + dt.timedelta(days=rng.randrange(7, 60)))))
                break

    def _payer(self, pid: int, age: int, out: _Batch) -> None:
        rng = self.rng
        payer = codes.PAYERS[0] if age >= 65 else rng.choices(codes.PAYERS[1:], (25, 30, 35, 10))[0]
        member = f"{payer[2][:3].upper()}{rng.randrange(10**8):08d}" if payer[0] != "81" else ""
        out.payers.append((pid, payer[0], payer[1], payer[2], member, f"G{rng.randrange(10**5):05d}"
                           if payer[0] in ("511", "512") else ""))
