"""The audit log: a hash chain that shows an edited, deleted or inserted row; appends that stay one chain
under concurrent writers (threads and processes); the query filters; `referdesk audit` and its --verify exit
statuses; migration 6 chaining the rows an older database already had; each recorded action writing its row
with the patient's MRN, the outcome and no name; and the admin screen at 80x24 and 120x40."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import peewee
import pytest
from rich.color import ColorSystem
from textual.widgets import DataTable, Input, Static

from models import clock
from models.audit import (GENESIS, AuditError, AuditRow, ChainReport, query, record, row_hash,
                          verify_chain)
from models.db import close_database, database, open_database, sqlite_url
from models.migrations import LATEST_VERSION, current_version, migrate_to_latest
from models.patients import Note, Patient
from models.referrals import AuditEvent
from pilot_keys import press, settle
from tui.app import ReferdeskApp
from tui.commands_audit import add_audit_parser
from tui.screens.audit import NOT_ALLOWED, AuditScreen

ROOT = Path(__file__).resolve().parent.parent
SIZES = [(80, 24), (120, 40)]
size_ids = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
FIELDS = ("at", "username", "action", "patient_mrn", "object_type", "object_id", "outcome", "detail")


def current_url() -> str:
    """The URL of the database the fixtures opened (SQLite file, or the per-test PostgreSQL database)."""
    obj = database.obj
    if isinstance(obj, peewee.SqliteDatabase):
        return sqlite_url(obj.database)
    return f"{os.environ['REFERDESK_TEST_PG'].rstrip('/')}/{obj.database}"


def sql(statement: str, *params) -> None:
    """Tampering as someone with the database file would do it: straight SQL, around referdesk."""
    database.execute_sql(statement.replace("?", database.obj.param), params)


def some_rows(count: int = 5) -> list[AuditEvent]:
    rows = []
    for n in range(count):
        clock.freeze(dt.datetime(2026, 11, 2, 9, n))
        rows.append(record("chart.view", username=f"user{n % 2}", patient_mrn=f"100000{n}", object_type="patient",
                           object_id=str(n + 1), detail=f"n={n}"))
    return rows


def stored(event_id: int) -> AuditEvent:
    return AuditEvent.get_by_id(event_id)


# --- the chain ------------------------------------------------------------------------------------------------


def test_each_row_chains_onto_the_one_before_and_the_chain_verifies(db):
    rows = [stored(r.id) for r in some_rows(3)]
    assert rows[0].prev_hash == GENESIS
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]
    for row in rows:
        assert row.hash == row_hash(row.prev_hash, *(getattr(row, f) for f in FIELDS))
        assert re.fullmatch(r"[0-9a-f]{64}", row.hash)
    assert verify_chain() == ChainReport(True, 3)


def test_an_empty_log_verifies(db):
    assert verify_chain() == ChainReport(True, 0)


def test_the_serialisation_is_unambiguous():
    at = dt.datetime(2026, 11, 2, 10, 0)
    assert row_hash(GENESIS, at, "a|b", "c", "", "", "", "ok", "") != row_hash(GENESIS, at, "a", "b|c", "", "", "",
                                                                               "ok", "")
    assert row_hash(GENESIS, at, "ab", "", "", "", "", "ok", "") != row_hash(GENESIS, at, "a", "b", "", "", "", "ok",
                                                                             "")
    assert row_hash(GENESIS, at, "u", "a", "", "", "", "ok", "") == row_hash(GENESIS, "2026-11-02 10:00:00", "u", "a",
                                                                             "", "", "", "ok", "")


@pytest.mark.parametrize("column, value", [
    ("detail", "n=99"), ("username", "mallory"), ("patient_mrn", "9999999"), ("action", "chart.print"),
    ("outcome", "failed"), ("object_id", "77"), ("object_type", "referral"), ("at", "2026-11-01 09:02:00"),
])
def test_editing_one_column_of_one_row_is_found_at_that_row(db, column, value):
    rows = some_rows(5)
    sql(f'UPDATE audit_event SET "{column}" = ? WHERE id = ?', value, rows[2].id)
    report = verify_chain()
    assert (report.ok, report.rows, report.first_bad_id) == (False, 5, rows[2].id)
    assert "changed after it was written" in report.reason


def test_an_edit_whose_hash_was_recomputed_shows_at_the_next_row(db):
    rows = some_rows(4)
    row = stored(rows[1].id)
    forged = row_hash(row.prev_hash, row.at, row.username, row.action, row.patient_mrn, row.object_type,
                      row.object_id, row.outcome, "n=forged")
    sql("UPDATE audit_event SET detail = 'n=forged', hash = ? WHERE id = ?", forged, row.id)
    report = verify_chain()
    assert (report.ok, report.first_bad_id) == (False, rows[2].id)
    assert f"does not follow row {row.id}" in report.reason


def test_deleting_a_middle_row_is_found_at_the_gap(db):
    rows = some_rows(5)
    sql("DELETE FROM audit_event WHERE id = ?", rows[2].id)
    report = verify_chain()
    assert (report.ok, report.rows, report.first_bad_id) == (False, 4, rows[3].id)
    assert "deleted" in report.reason and f"row {rows[1].id}" in report.reason


def test_deleting_the_first_row_is_found(db):
    rows = some_rows(3)
    sql("DELETE FROM audit_event WHERE id = ?", rows[0].id)
    report = verify_chain()
    assert (report.ok, report.first_bad_id) == (False, rows[1].id)
    assert "rows before it were deleted" in report.reason


def test_a_row_appended_around_the_log_is_found(db):
    rows = some_rows(3)
    forged = AuditEvent.create(at=clock.now(), username="mallory", action="chart.view", patient_mrn="1000001")
    report = verify_chain()
    assert (report.ok, report.first_bad_id) == (False, forged.id)
    assert "no hash" in report.reason
    sql("UPDATE audit_event SET prev_hash = ?, hash = ? WHERE id = ?", stored(rows[-1].id).hash, "0" * 64,
        forged.id)
    assert verify_chain().first_bad_id == forged.id


def test_a_forged_row_slipped_into_the_chain_is_found_as_inserted(db):
    rows = some_rows(4)
    # Ids are not hashed, so renumbering leaves the chain intact and opens a gap to slip a row into.
    sql("UPDATE audit_event SET id = id + 100 WHERE id >= ?", rows[2].id)
    assert verify_chain().ok
    before = stored(rows[1].id)
    at = dt.datetime(2026, 11, 2, 9, 1, 30)
    values = ("mallory", "chart.view", "1000009", "patient", "9", "ok", "")
    digest = row_hash(before.hash, at, *values)
    sql("INSERT INTO audit_event (id, at, username, action, patient_mrn, object_type, object_id, outcome, detail, "
        "prev_hash, hash) VALUES (50, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", at, *values, before.hash, digest)
    report = verify_chain()
    assert (report.ok, report.rows, report.first_bad_id) == (False, 5, 50)
    assert f"row 50 was inserted: row {rows[2].id + 100} follows row {before.id}" in report.reason


def test_a_row_recorded_in_a_transaction_that_rolls_back_leaves_the_chain_whole(db):
    some_rows(2)
    with pytest.raises(RuntimeError):
        with database.atomic():
            record("referral.create", username="hpark", patient_mrn="1000001")
            raise RuntimeError("the referral could not be stored")
    assert AuditEvent.select().count() == 2
    with database.atomic():  # nested in the caller's transaction: a savepoint, chained as any other
        with database.atomic():
            record("referral.cancel", username="hpark")
    assert verify_chain() == ChainReport(True, 3)


def test_an_action_is_required(db):
    with pytest.raises(ValueError, match="needs an action"):
        record("  ")


def test_concurrent_appends_from_four_threads_stay_one_chain(db):
    errors = []
    start = threading.Barrier(4)

    def append(thread: int) -> None:
        try:
            with database.connection_context():
                start.wait()
                for n in range(25):
                    record("chart.view", username=f"thread{thread}", patient_mrn=str(1000000 + n))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert verify_chain() == ChainReport(True, 100)
    prevs = [p for (p,) in AuditEvent.select(AuditEvent.prev_hash).tuples()]
    assert len(set(prevs)) == 100  # no two rows chained onto the same row
    assert {u: n for u, n in AuditEvent.select(AuditEvent.username, peewee.fn.COUNT(AuditEvent.id))
            .group_by(AuditEvent.username).tuples()} == {f"thread{t}": 25 for t in range(4)}


APPENDER = """
import sys
from models.db import open_database
from models.audit import record
open_database(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for n in range(int(sys.argv[3])):
    record("chart.view", username=sys.argv[2], patient_mrn=str(1000000 + n))
"""


def test_concurrent_appends_from_two_processes_and_a_thread_stay_one_chain(db):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, current_url(), f"proc{p}", "30"], cwd=ROOT, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in range(2)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:  # both start at once
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for n in range(30):
            record("chart.view", username="main", patient_mrn=str(1000000 + n))
        for proc in procs:
            assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert verify_chain() == ChainReport(True, 90)


# --- reading --------------------------------------------------------------------------------------------------


@pytest.fixture
def log(db):
    """Nine rows over two days, as the snapshots show them."""
    entries = [
        (dt.datetime(2026, 11, 1, 16, 5), "setup.direct", dict(username="admin", object_type="config",
                                                              object_id="direct", detail="sections=direct,smtp")),
        (dt.datetime(2026, 11, 2, 8, 12), "chart.view", dict(username="hpark", patient_mrn="1000001",
                                                            object_type="patient", object_id="1")),
        (dt.datetime(2026, 11, 2, 8, 14), "referral.create", dict(username="hpark", patient_mrn="1000001",
                                                                 object_type="referral", object_id="1",
                                                                 detail="channel=direct")),
        (dt.datetime(2026, 11, 2, 8, 14), "direct.verify", dict(object_type="direct_address",
                                                               object_id="cardio@direct.valley-cardio.example",
                                                               outcome="untrusted", detail="source=dns")),
        (dt.datetime(2026, 11, 2, 8, 20), "referral.fax", dict(patient_mrn="1000002", object_type="referral",
                                                              object_id="2", outcome="retry",
                                                              detail="attempt 1 of 3 via phaxio")),
        (dt.datetime(2026, 11, 2, 8, 31), "referral.print", dict(patient_mrn="1000002", object_type="referral",
                                                                object_id="3", outcome="failed",
                                                                detail="printer=front-desk")),
        (dt.datetime(2026, 11, 2, 9, 2), "inbound.received", dict(patient_mrn="1000001",
                                                                 object_type="inbound_message", object_id="1",
                                                                 outcome="filed")),
        (dt.datetime(2026, 11, 2, 9, 40), "document.save-copy", dict(username="frontdesk", patient_mrn="1000003",
                                                                    object_type="document", object_id="17")),
        (dt.datetime(2026, 11, 2, 9, 55), "chart.view", dict(username="frontdesk", patient_mrn="1000003",
                                                            object_type="patient", object_id="3")),
    ]
    for at, action, values in entries:
        clock.freeze(at)
        record(action, **values)
    clock.freeze(dt.datetime(2026, 11, 2, 10, 0))
    return entries


def test_query_is_newest_first_with_plain_rows(log):
    rows = query()
    assert [r.id for r in rows] == list(range(9, 0, -1))
    assert isinstance(rows[0], AuditRow) and rows[0].object == "patient 3"
    assert rows[0].as_json() == {"id": 9, "at": "2026-11-02T09:55:00", "username": "frontdesk",
                                 "action": "chart.view", "patient_mrn": "1000003", "object_type": "patient",
                                 "object_id": "3", "outcome": "ok", "detail": ""}


def test_query_filters(log):
    ids = lambda **kw: [r.id for r in query(**kw)]  # noqa: E731
    assert ids(patient_mrn="1000001") == [7, 3, 2]
    assert ids(username="frontdesk") == [9, 8]
    assert ids(action="chart.view") == [9, 2]
    assert ids(action="referral") == [6, 5, 3]  # the family: referral.*
    assert ids(action="refer") == []  # not a prefix of words
    assert ids(since=dt.date(2026, 11, 2), username="admin") == []
    assert ids(since=dt.datetime(2026, 11, 2, 9, 0)) == [9, 8, 7]
    assert ids(patient_mrn="1000001", action="chart") == [2]
    assert ids(limit=2) == [9, 8]
    assert ids(text="front chart") == [9]  # every word: a user, an MRN or an action, as far as typed
    assert ids(text="1000002") == [6, 5]
    with pytest.raises(AuditError):
        query(limit=0)


# --- the command line -----------------------------------------------------------------------------------------


@pytest.fixture
def audit_cli(cli, monkeypatch, tmp_path):
    """`referdesk audit …` on the test's database, whether or not tui/cli.py lists the verb yet."""
    import tui.cli

    original = tui.cli.build_parser

    def build() -> argparse.ArgumentParser:
        parser = original()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "audit" not in commands.choices:
            add_audit_parser(commands)
        return parser

    monkeypatch.setattr(tui.cli, "build_parser", build)
    url = current_url()
    return lambda *argv: cli("--data-dir", tmp_path, "--db", url, "audit", *argv)


def test_cli_lists_rows_newest_first(log, audit_cli):
    code, out, err = audit_cli()
    lines = out.splitlines()
    assert code == 0 and err == "" and len(lines) == 9
    assert lines[0].split() == ["9", "2026-11-02", "09:55:00", "frontdesk", "chart.view", "1000003", "patient", "3",
                                "ok"]
    assert lines[5].split() == ["4", "2026-11-02", "08:14:00", "-", "direct.verify", "-", "direct_address",
                                "cardio@direct.valley-cardio.example", "untrusted"]
    code, out, _ = audit_cli("--patient", "1000002", "--detail")
    assert [line.split()[0] for line in out.splitlines()] == ["6", "5"]
    assert out.splitlines()[0].endswith("failed  printer=front-desk")


def test_cli_filters_and_json(log, audit_cli):
    code, out, _ = audit_cli("--user", "hpark", "--action", "referral", "--json")
    assert code == 0
    assert [(r["id"], r["action"], r["patient_mrn"]) for r in json.loads(out)] == [(3, "referral.create",
                                                                                    "1000001")]
    code, out, _ = audit_cli("--since", "2026-11-02", "--action", "chart.view", "--json")
    assert [r["id"] for r in json.loads(out)] == [9, 2]
    code, out, err = audit_cli("--patient", "4040404")
    assert (code, out, err) == (0, "", "no audit row matches\n")


def test_cli_refuses_a_bad_date(log, audit_cli):
    code, out, err = audit_cli("--since", "11/02/2026")
    assert code == 1 and out == "" and "use YYYY-MM-DD" in err


def test_cli_verify_exit_statuses(log, audit_cli):
    assert audit_cli("--verify") == (0, "audit chain intact: 9 rows\n", "")
    code, out, _ = audit_cli("--verify", "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "rows": 9, "first_bad_id": None, "reason": ""}
    open_database(current_url())
    sql("UPDATE audit_event SET username = 'someone' WHERE id = 4")
    code, out, err = audit_cli("--verify")
    assert code == 1 and out.startswith("audit chain BROKEN at row 4 (of 9): row 4 was changed")
    code, out, _ = audit_cli("--verify", "--json")
    assert code == 1 and json.loads(out)["first_bad_id"] == 4


# --- the migration --------------------------------------------------------------------------------------------


def test_a_version_5_database_has_its_audit_rows_chained_by_migration_6(db_path):
    db = open_database(sqlite_url(db_path), migrate=False)
    assert migrate_to_latest(db, target=5) == [1, 2, 3, 4, 5]
    # Migration 1 builds from today's models: take away what version 5 did not have.
    db.execute_sql("DROP INDEX audit_event_patient_mrn")
    for column in ("patient_mrn", "outcome", "prev_hash", "hash"):
        db.execute_sql(f'ALTER TABLE audit_event DROP COLUMN "{column}"')
    for n, (action, user) in enumerate([("referral.create", "hpark"), ("referral.cancel", "hpark"),
                                        ("document.save-copy", "frontdesk")], 1):
        db.execute_sql("INSERT INTO audit_event (at, username, action, object_type, object_id, detail) VALUES "
                       "(?, ?, ?, 'referral', ?, 'channel=direct')", (f"2026-10-0{n} 09:00:00", user, action, str(n)))
    close_database()

    db = open_database(sqlite_url(db_path))
    assert current_version(db) == LATEST_VERSION >= 6
    rows = list(AuditEvent.select().order_by(AuditEvent.id))
    assert [(r.patient_mrn, r.outcome) for r in rows] == [("", "ok")] * 3
    assert rows[0].prev_hash == GENESIS and rows[1].prev_hash == rows[0].hash and rows[2].prev_hash == rows[1].hash
    assert verify_chain() == ChainReport(True, 3)
    record("chart.view", username="hpark", patient_mrn="1000001")
    assert stored(4).prev_hash == rows[2].hash and verify_chain() == ChainReport(True, 4)
    assert {"audit_event_patient_mrn", "audit_event_username"} <= {ix.name for ix in db.get_indexes("audit_event")}
    assert migrate_to_latest(db) == []
    close_database()


def test_a_fresh_database_has_the_audit_columns_and_indexes(db):
    assert {"patient_mrn", "outcome", "prev_hash", "hash"} <= {c.name for c in db.get_columns("audit_event")}
    assert {"audit_event_patient_mrn", "audit_event_username"} <= {ix.name for ix in db.get_indexes("audit_event")}


# --- what is recorded -----------------------------------------------------------------------------------------


def no_names_in(rows: list[AuditEvent], patient: Patient) -> None:
    """Ids only: neither name, nor the date of birth, in any column of any row."""
    for row in rows:
        for field in FIELDS + ("prev_hash", "hash"):
            text = str(getattr(row, field)).lower()
            for phi in (patient.first_name.lower(), patient.last_name.lower(), f"{patient.birth_date:%m/%d/%Y}",
                        patient.birth_date.isoformat()):
                assert phi not in text, (field, text)


def rows_for(action: str) -> list[AuditEvent]:
    return list(AuditEvent.select().where(AuditEvent.action == action).order_by(AuditEvent.id))


@pytest.fixture
def note(seeded):
    return Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).first()


async def test_viewing_a_chart_is_recorded_with_the_mrn_and_the_user(note):
    patient = note.patient
    app = ReferdeskApp(username="hpark")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.open_patient(patient.mrn)
        await settle(pilot)
    [row] = rows_for("chart.view")
    assert (row.username, row.patient_mrn, row.object_type, row.object_id, row.outcome) == (
        "hpark", patient.mrn, "patient", str(patient.id), "ok")
    no_names_in([row], patient)
    assert verify_chain().ok


def test_sending_a_referral_is_recorded(note):
    from documents.packet import build_attachments
    from models.referring import ReferralDraft, create_referral

    draft = ReferralDraft(patient_id=note.patient_id, note_id=note.id, channel="direct", username="frontdesk",
                          recipient="Cardio@Direct.Valley-Cardio.Example", reason="Chest pain on exertion")
    referral = create_referral(draft, build_attachments(draft))
    [row] = rows_for("referral.create")
    assert (row.username, row.patient_mrn, row.object_id, row.outcome, row.detail) == (
        "frontdesk", note.patient.mrn, str(referral.id), "ok", "channel=direct")
    no_names_in([row], note.patient)
    assert verify_chain().ok


def test_verifying_a_direct_address_is_recorded(seeded, direct_ready_config):
    from models.contacts import Contact
    from transports.verify import direct_settings, verify_recipient

    def seeded_address(state: str, reason: str) -> str:
        return (Contact.select().where(Contact.direct_address != "", Contact.verification == state,
                                       Contact.verification_reason.contains(reason))
                .order_by(Contact.id).first().direct_address)

    good, bad = seeded_address("verified", ""), seeded_address("invalid", "not trusted")
    settings = direct_settings(direct_ready_config)
    assert verify_recipient("direct", good, settings).ok
    assert not verify_recipient("direct", bad, settings).ok
    assert [(r.action, r.object_type, r.object_id, r.outcome, r.detail) for r in rows_for("direct.verify")] == [
        ("direct.verify", "direct_address", good.lower(), "ok", "source=dns"),
        ("direct.verify", "direct_address", bad.lower(), "untrusted", "source=dns")]
    assert verify_chain().ok


def test_exporting_and_printing_are_recorded(note, tmp_path):
    from documents.packet import build_attachments
    from fake_cups import failing_lp, recording_lp
    from models.referring import ReferralDraft, create_referral
    from transports.print_job import print_now

    made = []
    for folder, extra in ((tmp_path / "out", {}), (tmp_path / "out2", {"printer": "front-desk"}),
                          ("printer:front-desk", {})):
        draft = ReferralDraft(patient_id=note.patient_id, note_id=note.id, channel="print", recipient=str(folder),
                              reason="Palpitations", extra=extra)
        made.append(create_referral(draft, build_attachments(draft)).id)
    assert print_now(made[0])[0] == "delivered"
    assert print_now(made[1], lp=str(recording_lp(tmp_path)))[0] == "delivered"
    assert print_now(made[2], lp=str(failing_lp(tmp_path)))[0] == "failed"
    got = [(r.action, r.object_id, r.patient_mrn, r.outcome, r.detail)
           for r in AuditEvent.select().where(AuditEvent.action.in_(("referral.export", "referral.print")))
           .order_by(AuditEvent.id)]
    mrn = note.patient.mrn
    assert got == [("referral.export", str(made[0]), mrn, "ok", "saved to a folder"),
                   ("referral.print", str(made[1]), mrn, "ok", "printer=front-desk"),
                   ("referral.print", str(made[2]), mrn, "failed", "printer=front-desk")]
    no_names_in(list(AuditEvent.select()), note.patient)
    assert verify_chain().ok


def test_each_fax_attempt_is_recorded(note, tmp_path):
    from loopback_phaxio import LoopbackPhaxio
    from test_efax_delivery import drain, fax_config, fax_referral

    with LoopbackPhaxio(polls_to_final=2) as phaxio:
        phaxio.script("+12175550142", ["busy", "success"])
        referral = fax_referral(note=note)
        drain(fax_config(tmp_path, phaxio))
    got = [(r.object_id, r.patient_mrn, r.outcome, r.detail) for r in rows_for("referral.fax")]
    assert got == [(str(referral.id), note.patient.mrn, "sent", "attempt 1 of 3 via phaxio"),
                   (str(referral.id), note.patient.mrn, "sent", "attempt 2 of 3 via phaxio")]
    no_names_in(list(AuditEvent.select()), note.patient)
    assert verify_chain().ok


async def test_saving_the_direct_set_up_is_recorded(db, tmp_path):
    from tui.screens.direct_setup import DirectSetupScreen

    app = ReferdeskApp(username="admin")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = DirectSetupScreen(env={}, config_path=tmp_path / "config.toml")
        app.push_screen(screen)
        await settle(pilot)
        screen.save()
        await settle(pilot)
    assert (tmp_path / "config.toml").exists()
    [row] = rows_for("setup.direct")
    assert (row.username, row.object_type, row.object_id, row.patient_mrn, row.detail) == (
        "admin", "config", "direct", "", "sections=direct,smtp")


def test_nothing_writes_audit_rows_around_models_audit():
    """Only models/audit.py writes AuditEvent rows: any other write would have no hash and break the chain."""
    writes = re.compile(r"AuditEvent\s*\.\s*(create|insert|insert_many|insert_from|replace|update|delete|"
                        r"bulk_create|bulk_update|get_or_create)\b|(?<!class )AuditEvent\s*\(")
    found = []
    for folder in ("models", "documents", "transports", "tui"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.relative_to(ROOT).as_posix() == "models/audit.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if writes.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "write audit rows with models.audit.record():\n" + "\n".join(found)


# --- the screen -----------------------------------------------------------------------------------------------


def audit_app(username: str = "") -> ReferdeskApp:
    return ReferdeskApp(username=username)


def open_audit(*more: str):
    async def run_before(pilot) -> None:
        await pilot.pause()
        pilot.app.push_screen(AuditScreen())
        await settle(pilot)
        await press(pilot, *more)

    return run_before


@size_ids
def test_snapshot_audit_screen(log, snap_compare, size):
    assert snap_compare(audit_app(), terminal_size=size, run_before=open_audit())


@size_ids
def test_snapshot_audit_screen_chain_broken(log, snap_compare, size):
    sql("UPDATE audit_event SET detail = 'source=ldap' WHERE id = 4")
    assert snap_compare(audit_app(), terminal_size=size, run_before=open_audit())


def test_snapshot_audit_screen_filtered(log, snap_compare):
    assert snap_compare(audit_app(), terminal_size=(80, 24), run_before=open_audit("s", *"front chart", "enter"))


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def table_ids(app) -> list[int]:
    table = app.screen.query_one("#audit-table", DataTable)
    return [int(table.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(table.row_count)]


async def test_the_screen_filters_as_typed_and_says_where_the_chain_breaks(log):
    app = audit_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.push_screen(AuditScreen())
        await settle(pilot)
        assert table_ids(app) == list(range(9, 0, -1))
        assert text_of(app, "#audit-chain") == "Chain intact: 9 rows checked"
        assert text_of(app, "#audit-message") == "9 rows"
        assert text_of(app, "#audit-detail") == "#9 11/02/2026 09:55:00 · chart.view · patient 3 · ok"
        await press(pilot, "s", *"1000001")
        assert app.screen.query_one("#audit-filter", Input).has_focus
        assert table_ids(app) == [7, 3, 2]
        await press(pilot, "enter", "down")
        assert text_of(app, "#audit-detail") == ("#3 11/02/2026 08:14:00 · referral.create · referral 1 · ok · "
                                                   "channel=direct")
        await press(pilot, "s", *"x")  # the filter's text is selected on focus: typing replaces it
        assert table_ids(app) == [] and text_of(app, "#audit-message") == "No audit row matches 'x'."
        sql("UPDATE audit_event SET outcome = 'ok' WHERE id = 6")
        app.screen.query_one("#audit-table", DataTable).focus()
        await press(pilot, "r")
        assert text_of(app, "#audit-chain").startswith("Chain BROKEN at row 6: row 6 was changed")
        await press(pilot, "escape")
        assert not isinstance(app.screen, AuditScreen)


class FrontDesk:
    """An identity whose role may not read the audit log (models.users.Identity's `can`, as the app holds it)."""

    def can(self, action: str) -> bool:
        return action != "audit"


async def test_the_screen_shows_nothing_to_someone_not_an_administrator(log):
    app = audit_app("desk")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.identity = FrontDesk()
        app.push_screen(AuditScreen())
        await settle(pilot)
        assert table_ids(app) == [] and text_of(app, "#audit-message") == NOT_ALLOWED
        assert text_of(app, "#audit-chain") == ""
        await press(pilot, "s", *"chart")
        assert table_ids(app) == [] and text_of(app, "#audit-message") == NOT_ALLOWED


@pytest.mark.parametrize("system", [ColorSystem.STANDARD, ColorSystem.EIGHT_BIT], ids=["16-colour", "256-colour"])
async def test_text_stays_visible_when_colours_are_reduced(log, system):
    from test_tui_readability import unreadable

    sql("UPDATE audit_event SET detail = 'source=ldap' WHERE id = 4")  # the broken-chain line too
    app = audit_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.push_screen(AuditScreen())
        await settle(pilot)
        assert text_of(app, "#audit-chain").startswith("Chain BROKEN")
        assert unreadable(app, system) == []
        await press(pilot, "down", "down", "down", "down", "down")  # the cursor on a coloured outcome
        assert unreadable(app, system) == []
