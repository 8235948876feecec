"""Numbered schema migrations, recorded in the database itself.

Opening a database applies every migration it lacks, in order, each in its own transaction; opening one whose
recorded version is newer than this program knows is refused, so an old referdesk never writes to a schema it
does not understand.

Migration 1 creates the tables from the current model classes. A later migration that adds a column must
therefore check the column is missing first (`db.get_columns`): a fresh database already has it.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

import peewee as pw

from models.db import BaseModel, DatabaseError


class SchemaMigration(BaseModel):
    version = pw.IntegerField(primary_key=True)
    name = pw.CharField()
    applied_at = pw.DateTimeField()


class SchemaTooNew(DatabaseError):
    pass


def _all_models() -> list[type[BaseModel]]:
    from models.schema import ALL_MODELS

    return ALL_MODELS


def _m001_initial(db: pw.Database) -> None:
    db.create_tables(_all_models(), safe=True)


def _m002_search_indexes(db: pw.Database) -> None:
    """Indexes behind patient search: every query is a prefix range on one of these, in this order."""
    from models.patients import Patient

    for name, fields in (
        ("patient_last_first", (Patient.last_norm, Patient.first_norm)),
        ("patient_first_last", (Patient.first_norm, Patient.last_norm)),
        ("patient_birth_date", (Patient.birth_date,)),
    ):
        db.execute(pw.ModelIndex(Patient, fields, name=name, safe=True))


#: Migration 3's columns, as written then (not read from the model, which may change later).
_SOGI_COLUMNS = [(name, "VARCHAR(255) NOT NULL DEFAULT ''") for name in (
    "recorded_sex_code", "recorded_sex", "gender_identity_code", "gender_identity", "sexual_orientation_code",
    "sexual_orientation")] + [("sogi_recorded_on", "DATE")]


def _m003_patient_sogi(db: pw.Database) -> None:
    """Sex, gender identity and sexual orientation on the patient (USCDI v3). Plain ALTER TABLE ADD COLUMN with
    a default: SQLite and PostgreSQL both add it in place, without the table rebuild peewee's migrator does for
    a NOT NULL column on SQLite (dropping the patient table with foreign keys on would cascade to its children)."""
    from models.patients import Patient

    table = Patient._meta.table_name
    have = {column.name for column in db.get_columns(table)}
    open_q, close_q = db.quote[0], db.quote[1]
    for name, ddl in _SOGI_COLUMNS:
        if name not in have:
            db.execute_sql(f"ALTER TABLE {open_q}{table}{close_q} ADD COLUMN {open_q}{name}{close_q} {ddl}")


#: Migration 4's columns, as written then: (table, column, DDL).
_INBOUND_COLUMNS = [
    ("inbound_message", "kind", "VARCHAR(255) NOT NULL DEFAULT ''"),
    ("inbound_message", "channel", "VARCHAR(255) NOT NULL DEFAULT ''"),
    ("inbound_message", "signer_fingerprint", "VARCHAR(255) NOT NULL DEFAULT ''"),
    ("inbound_message", "mdn_requested", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("inbound_message", "final_delivery_requested", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("inbound_message", "processed_at", "TIMESTAMP"),
    ("document", "inbound_id", "INTEGER REFERENCES inbound_message (id) ON DELETE SET NULL"),
    ("outbox_job", "kind", "VARCHAR(255) NOT NULL DEFAULT 'referral'"),
    ("outbox_job", "inbound_id", "INTEGER REFERENCES inbound_message (id) ON DELETE CASCADE"),
    ("outbox_job", "recipient", "VARCHAR(255) NOT NULL DEFAULT ''"),
    ("outbox_job", "payload", "BLOB"),
]


def _m004_inbound_and_notification_jobs(db: pw.Database) -> None:
    """Receiving: what an inbound message was and asked for, documents filed from it, and outbox jobs that
    send an MDN rather than a referral (so their referral may be empty). Columns are added in place; the one
    NOT NULL dropped (outbox_job.referral_id) makes SQLite rebuild outbox_job, which no table references."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

    open_q, close_q = db.quote[0], db.quote[1]
    for table, name, ddl in _INBOUND_COLUMNS:
        if name not in {column.name for column in db.get_columns(table)}:
            if isinstance(db, pw.PostgresqlDatabase):
                ddl = ddl.replace("BLOB", "BYTEA")
            db.execute_sql(f"ALTER TABLE {open_q}{table}{close_q} ADD COLUMN {open_q}{name}{close_q} {ddl}")
    referral = next(c for c in db.get_columns("outbox_job") if c.name == "referral_id")
    if not referral.null:
        migrator = PostgresqlMigrator(db) if isinstance(db, pw.PostgresqlDatabase) else SqliteMigrator(db)
        migrate(migrator.drop_not_null("outbox_job", "referral_id"))


def _m005_outbox_external_id(db: pw.Database) -> None:
    """The provider's id for a job handed over and awaiting its outcome (a fax id, a gateway Message-ID), so a
    status report can find its job."""
    open_q, close_q = db.quote[0], db.quote[1]
    if "external_id" not in {column.name for column in db.get_columns("outbox_job")}:
        db.execute_sql(f"ALTER TABLE {open_q}outbox_job{close_q} ADD COLUMN {open_q}external_id{close_q} "
                       "VARCHAR(255) NOT NULL DEFAULT ''")
    db.execute_sql(f"CREATE INDEX IF NOT EXISTS {open_q}outbox_job_external_id{close_q} "
                   f"ON {open_q}outbox_job{close_q} ({open_q}external_id{close_q})")


#: Migration 6's columns, as written then.
_AUDIT_COLUMNS = [
    ("patient_mrn", "VARCHAR(255) NOT NULL DEFAULT ''"),
    ("outcome", "VARCHAR(255) NOT NULL DEFAULT 'ok'"),
    ("prev_hash", "VARCHAR(64) NOT NULL DEFAULT ''"),
    ("hash", "VARCHAR(64) NOT NULL DEFAULT ''"),
]


def _m006_audit_chain(db: pw.Database) -> None:
    """The audit log says which patient (by MRN) and how it went, and is hash-chained: the rows written before
    (none has a hash) are chained here, oldest first, so the chain verifies on an upgraded database."""
    from models.audit import chain_unhashed_rows

    open_q, close_q = db.quote[0], db.quote[1]
    have = {column.name for column in db.get_columns("audit_event")}
    for name, ddl in _AUDIT_COLUMNS:
        if name not in have:
            db.execute_sql(f"ALTER TABLE {open_q}audit_event{close_q} ADD COLUMN {open_q}{name}{close_q} {ddl}")
    for name, column in (("audit_event_patient_mrn", "patient_mrn"), ("audit_event_username", "username")):
        db.execute_sql(f"CREATE INDEX IF NOT EXISTS {open_q}{name}{close_q} "
                       f"ON {open_q}audit_event{close_q} ({open_q}{column}{close_q})")
    chain_unhashed_rows()


def _m007_user_logins_and_passwords(db: pw.Database) -> None:
    """Each staff account's operating-system login and password hash (models/users.py)."""
    from models.users import migrate_users

    migrate_users(db)


#: Migration 8's columns: the normalised search keys `models.db.starts_with` ranges over, as (table, column).
_SEARCH_KEY_COLUMNS = [
    ("patient", "last_norm"), ("patient", "first_norm"), ("patient", "mrn"), ("patient_name_token", "token"),
    ("contact", "name_norm"), ("directory_entry", "name_norm"), ("directory_entry", "organization_norm"),
    ("directory_entry", "city_norm"), ("directory_entry", "npi"),
]


def search_indexes() -> list[tuple[str, tuple[pw.Field, ...]]]:
    """The indexes patient search reads, as migration 8 leaves them: the name indexes carry the rest of the
    search's order (birth date, id), so a "ma…" query reads 50 index entries in order and stops, where migration
    2's (last, first) made PostgreSQL fetch and sort every Maria Martinez to order them by birth date."""
    from models.patients import Patient

    return [
        ("patient_last_first", (Patient.last_norm, Patient.first_norm, Patient.birth_date, Patient.id)),
        ("patient_first_last", (Patient.first_norm, Patient.last_norm, Patient.birth_date, Patient.id)),
        ("patient_birth_date", (Patient.birth_date,)),
    ]


def build_search_indexes(db: pw.Database) -> None:
    """Create the `search_indexes` a database lacks, and rebuild any that differs (migration 2's narrower ones)."""
    from models.patients import Patient

    have = {index.name: list(index.columns) for index in db.get_indexes(Patient._meta.table_name)}
    for name, fields in search_indexes():
        if name in have and have[name] != [field.column_name for field in fields]:
            db.execute_sql(f'DROP INDEX "{name}"')
        db.execute(pw.ModelIndex(Patient, fields, name=name, safe=True))


def _m008_search_keys_in_byte_order(db: pw.Database) -> None:
    """On PostgreSQL, the search keys compare and sort by code point (COLLATE "C"), as SQLite's BINARY does.

    Under the database's own collation (en_US.UTF-8, an ICU locale) a prefix range `key >= 'ae' AND key <
    'ae' || U+10FFFF` also finds "æbel", "l" finds "łukasz", and "øberg" sorts before "z"; and the btree that
    serves the range is in that linguistic order. In "C" both the comparison and the index order are the UTF-8
    bytes: exactly SQLite's prefix semantics and ranking, and every existing index on these columns (migration
    2's, the MRN's unique one, the name tokens' key) is rebuilt in that order, so the ranges stay index scans
    with no change to the queries. A column already in "C" (a C-locale server, or a rerun) is left alone.
    SQLite compares these columns as bytes already: nothing to do there. (Migration 8 then widens the name
    indexes: `build_search_indexes`.)"""
    if not isinstance(db, pw.PostgresqlDatabase):
        return
    for table, column in _SEARCH_KEY_COLUMNS:
        row = db.execute_sql(
            "SELECT format_type(a.atttypid, a.atttypmod), c.collname FROM pg_attribute a "
            "JOIN pg_collation c ON c.oid = a.attcollation "
            "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
            (f'"{table}"', column)).fetchone()
        if row is None or row[1] == "C":  # a table this database lacks, or already in byte order
            continue
        db.execute_sql(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE {row[0]} COLLATE "C"')


def _m008_search_keys_and_indexes(db: pw.Database) -> None:
    """Search keys in byte order on PostgreSQL; name indexes that give search its whole order (both engines)."""
    _m008_search_keys_in_byte_order(db)
    build_search_indexes(db)


MIGRATIONS: list[tuple[int, str, Callable[[pw.Database], None]]] = [
    (1, "initial schema", _m001_initial),
    (2, "patient search indexes", _m002_search_indexes),
    (3, "patient sex, gender identity and sexual orientation", _m003_patient_sogi),
    (4, "inbound messages, their documents, and MDN jobs", _m004_inbound_and_notification_jobs),
    (5, "outbox job provider ids", _m005_outbox_external_id),
    (6, "hash-chained audit log with patient and outcome", _m006_audit_chain),
    (7, "staff account logins and password hashes", _m007_user_logins_and_passwords),
    (8, "search keys in byte order on PostgreSQL, name indexes in search order", _m008_search_keys_and_indexes),
]

LATEST_VERSION = MIGRATIONS[-1][0]


def current_version(db: pw.Database) -> int:
    if not db.table_exists(SchemaMigration._meta.table_name):
        return 0
    value = SchemaMigration.select(pw.fn.MAX(SchemaMigration.version)).scalar()
    return value or 0


def migrate_to_latest(db: pw.Database, *, target: int | None = None) -> list[int]:
    """Apply the migrations this database lacks (up to `target`, for tests); return the versions applied."""
    target = LATEST_VERSION if target is None else target
    with db.atomic():
        db.create_tables([SchemaMigration], safe=True)
    version = current_version(db)
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"this database has schema version {version}, newer than this referdesk understands "
            f"(up to {LATEST_VERSION}); upgrade referdesk before opening it"
        )
    applied = []
    for number, name, step in MIGRATIONS:
        if number <= version or number > target:
            continue
        with db.atomic():
            step(db)
            SchemaMigration.create(version=number, name=name, applied_at=dt.datetime.now(dt.timezone.utc))
        applied.append(number)
    return applied
