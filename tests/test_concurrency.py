"""Load test: four writer processes and one `referdesk worker` on one database at the same time: a SQLite file
(WAL), or, when REFERDESK_TEST_PG names a PostgreSQL server (tests/conftest.py), a fresh PostgreSQL database
made from the session's seeded template.

Each writer, until its time is up: searches patients, makes Direct referrals (`create_referral` with the
documents `build_attachments` makes, as `referdesk send` does), marks reports received on referrals the worker
has sent, and adds notes: real write transactions, interleaved with the worker's claims and records. No
process may see "database is locked" (or any other OperationalError; on PostgreSQL a serialization failure,
a deadlock or a lock timeout): each writer counts its errors and prints a JSON summary line; the worker's log
and the referrals' events are searched for them. Every referral made must exist, and the worker must have sent
them all.

The issue's figure is 60 s; the test runs `REFERDESK_LOAD_SECONDS` (default 20) to keep the suite fast.
`bench/bench_load.py` runs the same load for 60 s and prints writes/s, errors, p95 write latency and sent/s
(`--db postgresql://…` for PostgreSQL).

Also runnable as `python tests/test_concurrency.py writer …` (that is how the writers are started).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # a writer process: the project and the test helpers on the path
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

DEFAULT_SECONDS = 20
WRITERS = 4
LOCK_WORDS = ("database is locked", "database table is locked", "OperationalError", "SQLITE_BUSY",
              # PostgreSQL: what a lock or a concurrent update would say
              "could not serialize access", "deadlock detected", "lock timeout", "could not obtain lock",
              "SerializationFailure", "DeadlockDetected", "LockNotAvailable")


# --- one writer process ----------------------------------------------------------------------------------

SEARCHES = ["sm", "jo", "gar", "wil", "br", "mar", "lee", "an", "da", "ro", "ch", "mi", "1000", "ka", "th"]


def writer(db: str, seconds: float, seed: int, contacts: list[str]) -> dict:
    """Work on `db` (a SQLite file's path, or a database URL) for `seconds`; the summary: operations done,
    writes, errors (with samples), the ids of the referrals made and each write transaction's duration in ms."""
    import peewee

    from documents.packet import build_attachments
    from models import clock
    from models.db import database, open_database, sqlite_url
    from models.patients import Note
    from models.practice import Provider
    from models.referral_history import HistoryError, mark_report_received
    from models.referrals import Referral
    from models.referring import ReferralDraft, ReferralError, create_referral
    from models.search import search_patients

    rng = random.Random(seed)
    open_database(db if "://" in db else sqlite_url(db))
    notes = [(n.id, n.patient_id) for n in Note.select(Note.id, Note.patient).where(Note.signed_at.is_null(False))]
    author = Provider.select(Provider.id).order_by(Provider.id).first().id
    ops = {"search": 0, "refer": 0, "received": 0, "note": 0, "refused": 0}
    errors: list[str] = []
    made: list[int] = []
    write_ms: list[float] = []
    packets: dict[int, list] = {}  # documents mostly built once per note (C-CDA building is CPU, not database)

    def timed(write) -> object:
        started = time.perf_counter()
        result = write()
        write_ms.append((time.perf_counter() - started) * 1000)
        return result

    def refer() -> None:
        note_id, patient_id = rng.choice(notes)
        address = contacts[(note_id + seed) % len(contacts)]  # one recipient per note, so its packet fits
        draft = ReferralDraft(patient_id=patient_id, note_id=note_id, channel="direct", direction="transferring",
                              recipient=address, reason=f"load test, writer {seed}", include_note=False,
                              username="load")
        if note_id not in packets or rng.random() < 0.2:
            packets[note_id] = build_attachments(draft)
        referral = timed(lambda: create_referral(draft, packets[note_id]))
        made.append(referral.id)
        ops["refer"] += 1

    def mark_received() -> None:
        candidates = [rid for (rid,) in Referral.select(Referral.id).where(
            Referral.id.in_(made), Referral.status.in_(("sent", "delivered"))).tuples()] if made else []
        if not candidates:
            return refer()
        try:
            timed(lambda: mark_report_received(rng.choice(candidates), clock.today(), username="load"))
            ops["received"] += 1
        except HistoryError:  # the worker moved it meanwhile: a refusal in words, not a database error
            ops["refused"] += 1

    def add_note() -> None:
        note_id, patient_id = rng.choice(notes)

        def write() -> None:
            with database.atomic():
                Note.create(patient=patient_id, author=author, type_code="11506-3", type_display="Progress note",
                            written_at=clock.now(), title="Load test note",
                            sections_json=json.dumps([["Assessment", f"written by load writer {seed}"]]))

        timed(write)
        ops["note"] += 1

    wall_start = time.time()
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        choice = rng.random()
        try:
            if choice < 0.3:
                search_patients(rng.choice(SEARCHES))
                ops["search"] += 1
            elif choice < 0.7:
                refer()
            elif choice < 0.85:
                mark_received()
            else:
                add_note()
        except (peewee.OperationalError, sqlite3.OperationalError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        except ReferralError as exc:
            errors.append(f"ReferralError: {exc}")
        except Exception as exc:  # anything else is a failure too: counted, never hidden
            errors.append(f"{type(exc).__name__}: {exc}")
    elapsed = time.monotonic() - started
    database.close()
    return {"writer": seed, "seconds": round(elapsed, 2), "start": wall_start, "end": wall_start + elapsed,
            "ops": ops, "writes": len(write_ms), "errors": len(errors), "error_samples": errors[:5], "referrals": made,
            "write_ms": [round(ms, 2) for ms in write_ms]}


# --- the whole load: world, HISP, worker, writers --------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


@dataclass
class LoadResult:
    seconds: float  # the window in which every writer was writing
    writers: list[dict]
    sent_during_load: int  # messages the HISP accepted in that window
    sent_total: int
    drained_after: float  # seconds from the start until every referral made was sent
    worker_log: str
    db: LoadDatabase
    lock_events: list[tuple] = field(default_factory=list)

    @property
    def referrals(self) -> list[int]:
        return [rid for w in self.writers for rid in w["referrals"]]

    @property
    def errors(self) -> int:
        return sum(w["errors"] for w in self.writers)

    def report(self) -> str:
        lines = []
        every = []
        for w in self.writers:
            every += w["write_ms"]
            lines.append(f"writer {w['writer']}: {w['writes'] / w['seconds']:.1f} writes/s ({w['writes']} in "
                         f"{w['seconds']:.0f} s: {w['ops']}), errors {w['errors']}, write p50 "
                         f"{percentile(w['write_ms'], 0.5):.1f} ms p95 {percentile(w['write_ms'], 0.95):.1f} ms "
                         f"max {max(w['write_ms'], default=0):.0f} ms")
        lines.append(f"all writers: {sum(w['writes'] / w['seconds'] for w in self.writers):.1f} writes/s, "
                     f"errors {self.errors}, write p95 {percentile(every, 0.95):.1f} ms, "
                     f"max {max(every, default=0):.0f} ms")
        lines.append(f"worker: sent {self.sent_during_load} while the writers wrote "
                     f"({self.sent_during_load / self.seconds:.1f}/s); {self.sent_total} in all ({len(self.referrals)} "
                     f"referrals made), the last {self.drained_after:.1f} s after the writers stopped; lock errors "
                     f"in its log or events: {len(self.lock_events)}")
        return "\n".join(lines)


CONTACTS_SQL = ("SELECT direct_address FROM contact WHERE verification = 'verified' AND direct_address != '' "
                "ORDER BY id")


@dataclass
class PgSeeded:
    """A seeded PostgreSQL database to copy: `template` on the server `server` (postgresql://user@host:port).
    Every load runs on a database of its own, made from it and dropped afterwards unless `keep`."""
    server: str
    template: str
    keep: bool = False

    def admin(self, sql: str) -> None:
        import psycopg2

        connection = psycopg2.connect(f"{self.server}/postgres")
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()


_COPIES = itertools.count(1)


class LoadDatabase:
    """The database a load runs on: a copy of a seeded SQLite file, or a PostgreSQL database made from a seeded
    template. `query` reads it from outside the processes under load (`?` placeholders on both engines)."""

    def __init__(self, seeded: Path | PgSeeded, data: Path) -> None:
        self.seeded = seeded
        if isinstance(seeded, PgSeeded):
            self.name = f"{seeded.template}_load{next(_COPIES)}"
            seeded.admin(f'CREATE DATABASE "{self.name}" TEMPLATE "{seeded.template}"')
            self.url = f"{seeded.server}/{self.name}"
            self.path = None
        else:
            self.path = data / "referdesk.db"
            shutil.copy(seeded, self.path)
            self.url = None

    def __str__(self) -> str:
        return self.url or str(self.path)

    @property
    def writer_arg(self) -> str:
        return self.url or str(self.path)

    def query(self, sql: str, *args) -> list[tuple]:
        if self.path is not None:
            with sqlite3.connect(self.path, timeout=30) as connection:
                return connection.execute(sql, args).fetchall()
        import psycopg2

        connection = psycopg2.connect(self.url)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql.replace("%", "%%").replace("?", "%s"), args)
                return cursor.fetchall()
        finally:
            connection.close()

    def drop(self) -> None:
        if self.url is not None and not self.seeded.keep:
            self.seeded.admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def seeded_contacts(seeded: Path | PgSeeded) -> list[str]:
    if isinstance(seeded, PgSeeded):
        import psycopg2

        connection = psycopg2.connect(f"{seeded.server}/{seeded.template}")
        try:
            with connection.cursor() as cursor:
                cursor.execute(CONTACTS_SQL)
                return [row[0] for row in cursor.fetchall()]
        finally:
            connection.close()
    with sqlite3.connect(f"file:{seeded}?mode=ro", uri=True) as connection:
        return [row[0] for row in connection.execute(CONTACTS_SQL)]


def load_worker(config: Path, data: Path, log: Path, db: LoadDatabase):
    """`referdesk worker` (tests/test_durability.py's Worker) on `db`: its data folder for SQLite, `--db URL` for
    PostgreSQL (a URL that wins over the data folder)."""
    from test_durability import Worker

    class UrlWorker(Worker):
        def start(self) -> None:
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "tui.cli", "--config", str(self.config), "--db", db.url, "worker",
                     "--poll", "0.2"], env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)

    return (UrlWorker if db.url else Worker)(config, data, log)


def run_load(seeded_db: Path | PgSeeded, folder: Path, *, seconds: float, writers: int = WRITERS,
             drain_timeout: float = 120) -> LoadResult:
    """Copy `seeded_db` (a SQLite file, or a PostgreSQL template) for this run, then run `writers` writer
    processes and one worker on the copy for `seconds`; wait until the worker has sent every referral made."""
    from test_durability import LiveWorld

    contacts = seeded_contacts(seeded_db)
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    data.mkdir()
    db = LoadDatabase(seeded_db, data)
    try:
        world = LiveWorld(folder, contacts)
        return _load(db, world, folder, data, contacts, seconds=seconds, writers=writers,
                     drain_timeout=drain_timeout)
    except BaseException:
        db.drop()
        raise


def _load(db: LoadDatabase, world, folder: Path, data: Path, contacts: list[str], *, seconds: float, writers: int,
          drain_timeout: float) -> LoadResult:
    from direct_pki import server_context
    from loopback_smtp import RecordingSmtp

    query = db.query
    env = {k: v for k, v in os.environ.items() if k != "REFERDESK_FROZEN_TIME"}
    env.update(PYTHONPATH=str(ROOT), TZ="UTC")
    try:
        with RecordingSmtp(tls_context=server_context(world.tls_cert, world.tls_key)) as hisp:
            config = folder / "config.toml"
            # The default 10-minute lease: nothing is killed here, a claim is only ever released by its worker.
            config.write_text(world.config_text(hisp.port, lease_seconds=600))
            worker = load_worker(config, data, folder / "worker.log", db)
            worker.start()
            processes = []
            try:
                for n in range(writers):
                    processes.append(subprocess.Popen(
                        [sys.executable, str(Path(__file__).resolve()), "writer", "--db", db.writer_arg, "--seconds",
                         str(seconds), "--seed", str(n + 1), "--contacts", ",".join(contacts)],
                        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                samples = []  # (wall time, messages the HISP has accepted), to find the worker's rate
                results = []
                for process in processes:
                    while process.poll() is None:
                        samples.append((time.time(), len(hisp.received)))
                        time.sleep(0.1)
                    out, err = process.communicate(timeout=60)
                    lines = [line for line in out.splitlines() if line.startswith("{")]
                    assert process.returncode == 0 and lines, f"a writer failed ({process.returncode}):\n{err[-3000:]}"
                    results.append(json.loads(lines[-1]))
                writers_done = time.monotonic()
                window = (max(w["start"] for w in results), min(w["end"] for w in results))

                def accepted_at(when: float) -> int:
                    return next((count for at, count in samples if at >= when), len(hisp.received))

                sent_during_load = accepted_at(window[1]) - accepted_at(window[0])
                made = [rid for w in results for rid in w["referrals"]]
                marks = ",".join("?" * len(made)) or "NULL"
                deadline = time.monotonic() + drain_timeout
                while (left := query(f"SELECT COUNT(*) FROM outbox_job WHERE state != 'done' AND referral_id "
                                     f"IN ({marks})", *made)[0][0]):
                    if worker.process.poll() is not None:
                        raise AssertionError(f"the worker exited: {worker.log.read_text()[-3000:]}")
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{left} referral(s) still not sent {drain_timeout:.0f} s after the "
                                             f"load; worker log:\n{worker.log.read_text()[-3000:]}")
                    time.sleep(0.2)
                drained_after = time.monotonic() - writers_done
            finally:
                for process in processes:
                    if process.poll() is None:
                        process.kill()
                        process.wait(10)
                worker.stop()
            sent_total = len(hisp.received)
    finally:
        world.stop()
    worker_log = (folder / "worker.log").read_text(errors="replace")
    events = query("SELECT referral_id, kind, detail FROM referral_event WHERE detail LIKE '%locked%' OR detail "
                   "LIKE '%OperationalError%' OR detail LIKE '%internal error%' OR detail LIKE '%serializ%' OR "
                   "detail LIKE '%deadlock%' OR detail LIKE '%lock timeout%'")
    lock_lines = [(line,) for line in worker_log.splitlines() if any(word in line for word in LOCK_WORDS)]
    return LoadResult(max(window[1] - window[0], 0.001), results, sent_during_load, sent_total, drained_after,
                      worker_log, db, lock_events=lock_lines + list(events))


@pytest.fixture
def load_seeded(seeded_template, pg, request):
    """What the load copies: the seeded SQLite file, or the seeded PostgreSQL template (REFERDESK_TEST_PG)."""
    if pg is None:
        return seeded_template
    return PgSeeded(pg.server, request.getfixturevalue("seeded_pg_template"))


def test_four_writers_and_a_worker_share_the_database_without_lock_errors(load_seeded, tmp_path):
    seconds = float(os.environ.get("REFERDESK_LOAD_SECONDS", DEFAULT_SECONDS))
    result = run_load(load_seeded, tmp_path, seconds=seconds)
    try:
        check_load(result)
    finally:
        result.db.drop()


def check_load(result: LoadResult) -> None:
    print("\n" + result.report())
    query = result.db.query

    # No process saw the database locked, or any other database error.
    assert result.errors == 0, [w["error_samples"] for w in result.writers if w["errors"]]
    assert result.lock_events == [], result.lock_events[:10]
    # Every writer did real work, and everything it made is there.
    for w in result.writers:
        assert w["ops"]["refer"] > 0 and w["ops"]["note"] > 0 and w["ops"]["search"] > 0, w["ops"]
    made = result.referrals
    assert len(made) == len(set(made))
    marks = ",".join("?" * len(made))
    rows = dict(query(f"SELECT id, status FROM referral WHERE id IN ({marks})", *made))
    assert set(rows) == set(made)
    # The worker sent them all (some since marked report-received by a writer), each once by its events.
    assert set(rows.values()) <= {"sent", "report-received"}, {s for s in rows.values()}
    sent = dict(query(f"SELECT referral_id, COUNT(*) FROM referral_event WHERE kind = 'sent' AND "
                      f"referral_id IN ({marks}) GROUP BY referral_id", *made))
    assert set(sent) == set(made) and set(sent.values()) == {1}
    assert query(f"SELECT COUNT(*) FROM outbox_job WHERE state != 'done' AND referral_id IN ({marks})",
                 *made)[0][0] == 0
    assert result.sent_total >= len(made)
    notes = sum(w["ops"]["note"] for w in result.writers)
    assert query("SELECT COUNT(*) FROM note WHERE title = 'Load test note'")[0][0] == notes


def _main() -> None:
    parser = argparse.ArgumentParser(description="a load-test writer process (see the module's docstring)")
    parser.add_argument("role", choices=["writer"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--contacts", required=True)
    args = parser.parse_args()
    summary = writer(args.db, args.seconds, args.seed, args.contacts.split(","))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    _main()
