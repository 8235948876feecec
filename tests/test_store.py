"""The store: file permissions, pragmas, deferred initialisation, and numbered migrations."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys

import pytest

from models.db import DatabaseError, close_database, database, open_database, sqlite_url
from models.migrations import LATEST_VERSION, SchemaTooNew, current_version, migrate_to_latest
from models.patients import Patient
from models.schema import ALL_MODELS


def test_fresh_database_is_private_and_fully_migrated(sqlite_db, db_path):
    db = sqlite_db
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(db_path.parent).st_mode) & 0o077 == 0 or db_path.parent.exists()
    assert current_version(db) == LATEST_VERSION
    tables = set(db.get_tables())
    assert {m._meta.table_name for m in ALL_MODELS} <= tables
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_new_data_dir_is_created_owner_only(tmp_path):
    path = tmp_path / "new" / "folder" / "referdesk.db"
    open_database(sqlite_url(path))
    close_database()
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_foreign_keys_are_enforced(db):
    from models.patients import Note

    with pytest.raises(Exception):
        Note.create(patient=999, author=999, type_code="11506-3", type_display="Progress note",
                    written_at="2026-01-01 10:00:00")


def test_older_database_is_migrated_and_keeps_its_data(db_path):
    db = open_database(sqlite_url(db_path), migrate=False)
    assert migrate_to_latest(db, target=1) == [1]
    Patient.create(mrn="42", first_name="Ada", last_name="O'Neill", birth_date="1970-01-02", sex="F")
    assert "patient_last_first" not in {ix.name for ix in db.get_indexes("patient")}
    close_database()

    db = open_database(sqlite_url(db_path))
    assert current_version(db) == LATEST_VERSION
    assert {"patient_last_first", "patient_first_last", "patient_birth_date"} <= {
        ix.name for ix in db.get_indexes("patient")
    }
    assert Patient.get(Patient.mrn == "42").last_name == "O'Neill"
    close_database()


SOGI_COLUMNS = ["recorded_sex_code", "recorded_sex", "gender_identity_code", "gender_identity",
                "sexual_orientation_code", "sexual_orientation", "sogi_recorded_on"]


def test_a_version_2_database_gains_the_sogi_columns_and_keeps_its_patients(db_path):
    db = open_database(sqlite_url(db_path), migrate=False)
    assert migrate_to_latest(db, target=2) == [1, 2]
    for column in SOGI_COLUMNS:  # migration 1 builds from today's models: take them away to get a v2 table
        db.execute_sql(f'ALTER TABLE patient DROP COLUMN "{column}"')
    db.execute_sql("INSERT INTO patient (mrn, first_name, middle_name, last_name, birth_date, sex, address_line, "
                   "city, state, postal_code, phone, email, language, race_code, race, ethnicity_code, ethnicity, "
                   "last_norm, first_norm) VALUES ('42', 'Ada', '', 'O''Neill', '1970-01-02', 'F', '', '', '', '', "
                   "'', '', 'en', '', '', '', '', 'oneill', 'ada')")
    close_database()

    db = open_database(sqlite_url(db_path))
    assert current_version(db) == LATEST_VERSION
    assert set(SOGI_COLUMNS) <= {c.name for c in db.get_columns("patient")}
    ada = Patient.get(Patient.mrn == "42")
    assert (ada.last_name, ada.gender_identity_code, ada.sexual_orientation, ada.sogi_recorded_on) == (
        "O'Neill", "", "", None)
    ada.gender_identity_code, ada.gender_identity = "ASKU", "Asked but declined"
    ada.save()
    assert Patient.get(Patient.mrn == "42").gender_identity_code == "ASKU"
    assert migrate_to_latest(db) == []  # applied once, recorded
    close_database()


def test_a_version_3_database_gains_mdn_jobs_and_keeps_its_queued_referrals(db_path):
    from models.referrals import InboundMessage, OutboxJob

    db = open_database(sqlite_url(db_path), migrate=False)
    assert migrate_to_latest(db, target=3) == [1, 2, 3]
    # Migration 1 builds from today's models: rebuild outbox_job as version 3 had it (referral required).
    db.execute_sql("DROP TABLE outbox_job")
    db.execute_sql("CREATE TABLE outbox_job (id INTEGER NOT NULL PRIMARY KEY, referral_id INTEGER NOT NULL "
                   "REFERENCES referral (id) ON DELETE CASCADE, channel VARCHAR(255) NOT NULL, state VARCHAR(255) "
                   "NOT NULL, attempts INTEGER NOT NULL, due_at DATETIME NOT NULL, lease_until DATETIME, claimed_by "
                   "VARCHAR(255) NOT NULL, last_error TEXT NOT NULL, created_at DATETIME NOT NULL)")
    for column in ["kind", "channel", "signer_fingerprint", "mdn_requested", "final_delivery_requested",
                   "processed_at"]:  # (document.inbound_id stays: SQLite cannot drop a foreign-key column)
        db.execute_sql(f'ALTER TABLE inbound_message DROP COLUMN "{column}"')
    from models.referrals import Referral

    ada = Patient.create(mrn="42", first_name="Ada", last_name="Lovelace", birth_date="1970-01-02", sex="F")
    Referral.create(patient=ada, channel="direct", recipient="a@b.example", created_at="2026-11-01 09:00:00")
    db.execute_sql("INSERT INTO outbox_job (referral_id, channel, state, attempts, due_at, claimed_by, last_error, "
                   "created_at) VALUES (1, 'direct', 'pending', 0, '2026-11-01 09:00:00', '', '', '2026-11-01 09:00:00')")
    close_database()

    db = open_database(sqlite_url(db_path))
    assert current_version(db) == LATEST_VERSION
    job = OutboxJob.get()
    assert (job.kind, job.referral_id, job.state, job.recipient, job.payload) == ("referral", 1, "pending", "", None)
    inbound = InboundMessage.create(received_at="2026-11-02 10:00:00", raw=b"x", mdn_requested=True)
    OutboxJob.create(kind="mdn", inbound=inbound, recipient="a@b.example", payload=b"mdn", channel="direct",
                     due_at="2026-11-02 10:00:00", created_at="2026-11-02 10:00:00")  # no referral: allowed now
    assert OutboxJob.select().where(OutboxJob.referral.is_null()).count() == 1
    close_database()


def test_newer_database_is_refused_and_left_untouched(db_path):
    db = open_database(sqlite_url(db_path))
    db.execute_sql("INSERT INTO schema_migration (version, name, applied_at) VALUES (99, 'future', '2030-01-01')")
    close_database()
    before = db_path.read_bytes()
    with pytest.raises(SchemaTooNew, match="schema version 99.*upgrade referdesk"):
        open_database(sqlite_url(db_path))
    assert database.obj.is_closed()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT MAX(version) FROM schema_migration").fetchone()[0] == 99
    assert len(db_path.read_bytes()) == len(before)


def test_a_file_that_is_not_a_database_is_refused_clearly(tmp_path):
    path = tmp_path / "referdesk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseError, match="cannot open the database"):
        open_database(sqlite_url(path))
    assert path.read_bytes() == b"this is not sqlite" * 100


def test_importing_the_lower_layers_creates_nothing_and_loads_no_ui(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    code = ("import sys, models.schema, models.seed, models.search, models.charts, models.config, "
            "models.directory; assert 'textual' not in sys.modules, 'textual imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert list(tmp_path.iterdir()) == []
