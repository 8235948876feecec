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

from direct_ca import http_server, pki  # noqa: F401,E402 (fixtures, for the receiving tests)
from test_efax_delivery import gateway, gateway_tls  # noqa: F401,E402 (fixtures)
from test_receiving import _tampered, opener, parties, report  # noqa: F401,E402 (fixtures, helpers)

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


def test_a_nul_in_a_value_is_hashed_as_stored_and_the_chain_still_verifies(db):
    """The store drops NUL (PostgreSQL text cannot hold it); the hash must be of what is kept, not what was given."""
    from models.audit import record

    row = stored(record("patient.search", username="front\x00desk", detail="via=cli\x00; rows=1").id)
    assert (row.username, row.detail) == ("frontdesk", "via=cli; rows=1")
    assert verify_chain() == ChainReport(True, 1)


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
    # Each check is itself audited (audit.verify), after its verdict: the next check counts that row too.
    assert audit_cli("--verify") == (0, "audit chain intact: 9 rows\n", "")
    code, out, _ = audit_cli("--verify", "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "rows": 10, "first_bad_id": None, "reason": ""}
    open_database(current_url())
    sql("UPDATE audit_event SET username = 'someone' WHERE id = 4")
    code, out, err = audit_cli("--verify")
    assert code == 1 and out.startswith("audit chain BROKEN at row 4 (of 11): row 4 was changed")
    code, out, _ = audit_cli("--verify", "--json")
    assert code == 1 and json.loads(out)["first_bad_id"] == 4
    open_database(current_url())
    got = [(r.action, r.outcome, r.detail) for r in rows_for("audit.verify")]
    assert got == [("audit.verify", "intact", "via=cli; rows=9"), ("audit.verify", "intact", "via=cli; rows=10"),
                   ("audit.verify", "broken", "via=cli; rows=11; first_bad=4"),
                   ("audit.verify", "broken", "via=cli; rows=12; first_bad=4")]


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
    assert verify_recipient("direct", good, settings, username="hpark").ok
    assert not verify_recipient("direct", bad, settings, username="frontdesk").ok
    assert [(r.action, r.username, r.object_type, r.object_id, r.outcome, r.detail)
            for r in rows_for("direct.verify")] == [
        ("direct.verify", "hpark", "direct_address", good.lower(), "ok", "source=dns"),
        ("direct.verify", "frontdesk", "direct_address", bad.lower(), "untrusted", "source=dns")]
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
    got = [(r.username, r.object_id, r.patient_mrn, r.outcome, r.detail) for r in rows_for("referral.fax")]
    assert got == [("worker", str(referral.id), note.patient.mrn, "sent", "attempt 1 of 3 via phaxio"),
                   ("worker", str(referral.id), note.patient.mrn, "sent", "attempt 2 of 3 via phaxio")]
    # the final word: delivered, as the worker learnt it from the provider (the busy attempt was not final)
    [final] = rows_for("referral.delivered")
    assert (final.username, final.patient_mrn, final.object_type, final.object_id, final.outcome) == (
        "worker", note.patient.mrn, "referral", str(referral.id), "ok")  # as models.delivery writes it
    assert final.detail.startswith("fax via phaxio; attempt 2 of 3; pages=")
    assert rows_for("referral.failed") == []
    no_names_in(list(AuditEvent.select()), note.patient)
    assert verify_chain().ok


def test_a_failed_fax_is_recorded_as_its_final_result(note, tmp_path):
    from loopback_phaxio import LoopbackPhaxio
    from test_efax_delivery import drain, fax_config, fax_referral

    with LoopbackPhaxio(polls_to_final=2) as phaxio:
        phaxio.script("+12175550142", ["bad-number"])
        referral = fax_referral(note=note)
        drain(fax_config(tmp_path, phaxio))
    [final] = rows_for("referral.failed")
    assert (final.username, final.patient_mrn, final.object_id, final.outcome, final.detail) == (
        "worker", note.patient.mrn, str(referral.id), "failed",
        "fax via phaxio; attempt 1 of 3; status=failure")
    assert "Invalid number" not in final.detail  # the provider's words stay on the referral, not in the log
    assert rows_for("referral.delivered") == []
    assert verify_chain().ok


def test_a_gateway_report_is_recorded_as_received_and_as_the_fax_result(note, tmp_path, gateway, gateway_tls):
    import asyncio

    from test_efax_delivery import fax_referral, gateway_config, reports_back
    from transports.outbox import OutboxWorker

    gateway.script("12175550142", ["bad-number"])
    config = gateway_config(tmp_path, gateway, gateway_tls)
    referral = fax_referral(note=note)
    asyncio.run(OutboxWorker(config, env={}).run_once())
    [outcome] = reports_back(gateway, config, 1)  # as the SMTP listener hands it in
    assert outcome.outcome == "accepted"
    [final] = rows_for("referral.failed")
    assert (final.username, final.patient_mrn, final.object_id, final.outcome) == (
        "listener", note.patient.mrn, str(referral.id), "failed")
    assert final.detail.startswith("fax via smtp-gateway; attempt 1 of 3")
    [received] = rows_for("inbound.received")
    assert (received.username, received.patient_mrn, received.object_type, received.outcome, received.detail) == (
        "listener", note.patient.mrn, "inbound_message", "filed",
        f"kind=fax-report; channel=smtp; referral_id={referral.id}")
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


# --- what is recorded: received messages, by the system that took them in --------------------------------------


def test_received_messages_are_recorded_whatever_became_of_them(db, parties, opener):
    from receiving_kit import DIRECT, inbound, make_site, seal
    from transports.direct.mime import Part
    from transports.inbound import receive_message

    make_site()
    unknown = Part("CCDA_Ambulatory.xml", "text/xml", (DIRECT / "ett" / "ccda" / "CCDA_Ambulatory.xml").read_bytes())
    sealed = seal(report(40, attachments=[unknown]), parties, signer=parties.partner)
    assert receive_message(sealed, opener=opener, channel="imap").outcome == "accepted"  # unfiled: nobody by that name
    assert receive_message(sealed, opener=opener, channel="imap").outcome == "duplicate"
    assert receive_message(_tampered(parties), opener=opener, channel="smtp").outcome == "rejected"
    plain = b"From: someone@example.org\r\nMessage-ID: <plain-1@example.org>\r\nSubject: Jones\r\n\r\nhello\r\n"
    assert receive_message(plain, channel="smtp").outcome == "rejected"
    assert receive_message(b"Subject: no id\r\n\r\nhello\r\n", actor="hpark").outcome == "rejected"
    unfiled = inbound("<report-40@cardio.example.org>")
    got = [(r.username, r.patient_mrn, r.object_type, r.outcome, r.detail) for r in rows_for("inbound.received")]
    assert got[0] == ("worker", "", "inbound_message", "unfiled",
                      "state=unfiled; patient_id=; referral_id=; closed=False")
    assert rows_for("inbound.received")[0].object_id == str(unfiled.id)
    assert got[1] == ("worker", "", "inbound_message", "duplicate", "channel=imap")
    assert rows_for("inbound.received")[1].object_id == str(unfiled.id)  # the copy handled before
    assert got[2][0] == "listener" and got[2][3] == "rejected" and got[2][4].startswith("channel=smtp")
    assert got[3] == ("listener", "", "inbound_message", "rejected", "kind=other; channel=smtp")
    assert got[4] == ("hpark", "", "inbound_message", "rejected", "channel=file")  # `referdesk receive` by hpark
    assert all("jones" not in str(r.detail).lower() for r in rows_for("inbound.received"))  # no subject, no reason
    assert verify_chain().ok


# --- what is recorded: opening a note, a document, a received message ---------------------------------------------


async def test_opening_a_note_is_recorded_with_the_mrn_and_the_user(note):
    from tui.screens.note_view import NoteViewScreen

    app = ReferdeskApp(username="hpark")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.push_screen(NoteViewScreen(note.id))
        await settle(pilot)
    [row] = rows_for("note.view")
    assert (row.username, row.patient_mrn, row.object_type, row.object_id, row.outcome, row.detail) == (
        "hpark", note.patient.mrn, "note", str(note.id), "ok", "signed=yes")
    no_names_in([row], note.patient)
    assert verify_chain().ok


async def test_opening_a_list_of_patients_data_is_recorded_once_per_opening(seeded):
    """F3 Referrals (and its q, CMS50), F4 Documents, F5 Inbox, and one referral's detail; a reload or a
    filter change adds nothing."""
    from models.referral_history import list_referrals
    from tui.screens.referral_detail import ReferralDetailScreen

    referral = list_referrals()[0]
    app = ReferdeskApp(username="hpark")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for keys in (("f3",), ("q",), ("escape", "escape", "f4"), ("escape", "f5"), ("escape",)):
            for key in keys:
                await pilot.press(key)
                await settle(pilot)
        app.push_screen(ReferralDetailScreen(referral.id))
        await settle(pilot)
        app.screen.reload()
        await settle(pilot)
    rows = list(AuditEvent.select().where(AuditEvent.action.in_(
        ("referral.list", "report.cms50", "document.list", "inbound.list", "referral.view"))).order_by(AuditEvent.id))
    assert [r.action for r in rows] == ["referral.list", "report.cms50", "document.list", "inbound.list",
                                        "referral.view"]
    assert [(r.action, r.username, r.detail) for r in rows] == [
        ("referral.list", "hpark", "via=tui"), ("report.cms50", "hpark", "via=tui"),
        ("document.list", "hpark", "via=tui"), ("inbound.list", "hpark", "via=tui"),
        ("referral.view", "hpark", "via=tui")]
    assert (rows[-1].object_id, rows[-1].patient_mrn) == (str(referral.id), referral.mrn)
    assert verify_chain().ok


async def test_opening_a_document_is_recorded_once(note):
    from models.documents import Attachment, file_document
    from tui.screens.document_view import DocumentViewScreen

    patient = note.patient
    mine = file_document(Attachment("consult.txt", "text/plain", b"Seen today.", kind="report", title="Consult"),
                         owner="patient", patient=patient.id)
    practice = file_document(Attachment("notice.txt", "text/plain", b"Hello.", kind="report"), owner="practice")
    app = ReferdeskApp(username="frontdesk")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.push_screen(DocumentViewScreen(mine.id))
        await settle(pilot)
        await pilot.resize_terminal(120, 40)  # a re-wrap is the same view
        await settle(pilot)
        await press(pilot, "escape")
        app.push_screen(DocumentViewScreen(practice.id))
        await settle(pilot)
    got = [(r.username, r.patient_mrn, r.object_type, r.object_id, r.outcome, r.detail)
           for r in rows_for("document.view")]
    assert got == [("frontdesk", patient.mrn, "document", str(mine.id), "ok", "kind=report; owner=patient; shown=text"),
                   ("frontdesk", "", "document", str(practice.id), "ok", "kind=report; owner=practice; shown=text")]
    no_names_in(list(AuditEvent.select()), patient)
    assert verify_chain().ok


async def test_opening_a_received_message_is_recorded_once(db):
    from transports.inbound import receive_message
    from tui.screens.inbox_detail import InboxDetailScreen

    plain = b"From: someone@example.org\r\nMessage-ID: <plain-2@example.org>\r\nSubject: hi\r\n\r\nhello\r\n"
    receive_message(plain, channel="smtp")
    [received] = rows_for("inbound.received")
    app = ReferdeskApp(username="frontdesk")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = InboxDetailScreen(int(received.object_id))
        app.push_screen(screen)
        await settle(pilot)
        screen.reload()
        await settle(pilot)
    [row] = rows_for("inbound.view")
    assert (row.username, row.patient_mrn, row.object_type, row.object_id, row.outcome, row.detail) == (
        "frontdesk", "", "inbound_message", received.object_id, "ok", "state=rejected")
    assert verify_chain().ok


async def test_opening_the_audit_log_is_recorded_after_it_is_shown(log):
    app = audit_app("admin")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.push_screen(AuditScreen())
        await settle(pilot)
        assert table_ids(app) == list(range(9, 0, -1))  # its own row is not among them
        assert text_of(app, "#audit-chain") == "Chain intact: 9 rows checked"
        await press(pilot, "s", *"chart", "r")
        await settle(pilot)
    [row] = rows_for("audit.view")
    assert (row.username, row.patient_mrn, row.outcome, row.detail) == ("admin", "", "ok",
                                                                       "via=tui; rows=9; chain=intact")
    assert verify_chain().ok


async def test_a_refused_look_at_the_audit_log_is_recorded(log):
    app = audit_app("desk")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.identity = FrontDesk()
        app.push_screen(AuditScreen())
        await settle(pilot)
    assert rows_for("audit.view") == []
    [row] = rows_for("access.denied")
    assert (row.username, row.outcome, row.detail) == ("desk", "denied", "via=tui; permission=audit")


# --- what is recorded: the command line's reads --------------------------------------------------------------------


@pytest.fixture
def as_hpark(monkeypatch):
    """Run the command line as the login hpark (open mode: the seeded account of that login names the rows)."""
    monkeypatch.setattr("models.users.os_login", lambda env=None: "hpark")


def cli_rows(data_dir, action: str) -> list[AuditEvent]:
    open_database(sqlite_url(data_dir / "referdesk.db"))
    try:
        return rows_for(action)
    finally:
        close_database()


def test_cli_search_records_counts_and_a_single_patient_only(data_dir, cli, as_hpark):
    open_database(sqlite_url(data_dir / "referdesk.db"))
    first = Patient.select().where(Patient.mrn == "1000001").get()
    shared = (Patient.select(Patient.last_name).group_by(Patient.last_name)
              .having(peewee.fn.COUNT(Patient.id) > 1).order_by(Patient.last_name).scalar())
    close_database()
    code, out, err = cli("--data-dir", data_dir, "search", "1000001", shared, "--json")
    assert code == 0, err
    one, many = json.loads(out)
    assert len(one) == 1 and len({hit["mrn"] for hit in many}) > 1
    rows = cli_rows(data_dir, "patient.search")
    assert [(r.username, r.patient_mrn, r.outcome, r.detail) for r in rows] == [
        ("hpark", "1000001", "ok", "via=cli; rows=1; patients=1"),
        ("hpark", "", "ok", f"via=cli; rows={len(many)}; patients={len({hit['mrn'] for hit in many})}")]
    for row in rows:  # what was searched for is never kept
        assert shared.lower() not in row.detail.lower() and first.last_name.lower() not in row.detail.lower()
    code, _, _ = cli("--data-dir", data_dir, "search", "zzzznobody")
    assert code == 0
    assert cli_rows(data_dir, "patient.search")[-1].detail == "via=cli; rows=0; patients=0"


def test_cli_notes_referrals_ccda_and_cms50_are_recorded(data_dir, cli, as_hpark, tmp_path):
    code, out, err = cli("--data-dir", data_dir, "notes", "--patient", "1000001", "--json")
    assert code == 0, err
    notes = json.loads(out)
    code, _, err = cli("--data-dir", data_dir, "notes", "--patient", "Smith")
    assert code == 1 and "no patient" in err
    rows = cli_rows(data_dir, "note.list")
    assert [(r.username, r.patient_mrn, r.outcome, r.detail) for r in rows] == [
        ("hpark", "1000001", "ok", f"via=cli; notes={len(notes)}"),
        ("hpark", "", "not-found", "via=cli")]  # the typed name is not kept

    code, out, err = cli("--data-dir", data_dir, "referrals", "--since", "2020-01-01", "--json")
    assert code == 0, err
    shown = json.loads(out)
    [row] = cli_rows(data_dir, "referral.list")
    mrns = {r["mrn"] for r in shown}
    assert (row.username, row.patient_mrn, row.detail) == (
        "hpark", next(iter(mrns)) if len(mrns) == 1 else "",
        f"via=cli; rows={len(shown)}; patients={len(mrns)}; since=2020-01-01")

    target = tmp_path / "ccd.xml"
    code, _, err = cli("--data-dir", data_dir, "ccda", "--patient", "1000001", "-o", target)
    assert code == 0, err
    [row] = cli_rows(data_dir, "ccda.export")
    assert (row.username, row.patient_mrn, row.object_type, row.outcome) == ("hpark", "1000001", "note", "ok")
    assert row.detail == "via=cli; direction=transferring; format=xml; to=file"

    code, _, err = cli("--data-dir", data_dir, "report", "cms50", "--year", "2026")
    assert code == 0, err
    [row] = cli_rows(data_dir, "report.cms50")
    assert row.username == "hpark" and row.detail.startswith("via=cli; rows=") and row.detail.endswith("year=2026")
    open_database(sqlite_url(data_dir / "referdesk.db"))
    assert verify_chain().ok
    close_database()


def test_cli_audit_records_its_own_reading(log, audit_cli, as_hpark):
    code, out, _ = audit_cli("--patient", "1000001", "--action", "chart")
    assert code == 0 and len(out.splitlines()) == 1
    code, out, err = audit_cli("--patient", "Jones")
    assert (code, out) == (0, "")
    open_database(current_url())
    got = [(r.username, r.patient_mrn, r.outcome, r.detail) for r in rows_for("audit.view")]
    assert got == [("hpark", "1000001", "ok", "via=cli; rows=1; action=chart"),
                   ("hpark", "", "ok", "via=cli; rows=0; patient=unmatched")]
    assert verify_chain().ok
