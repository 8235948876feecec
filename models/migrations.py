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


MIGRATIONS: list[tuple[int, str, Callable[[pw.Database], None]]] = [
    (1, "initial schema", _m001_initial),
    (2, "patient search indexes", _m002_search_indexes),
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
