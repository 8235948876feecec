"""Outbox throughput with several `referdesk worker` processes on one database (PostgreSQL, or SQLite to compare).

A fresh database is made and seeded (`models.seed.seed`), N Direct referrals are queued as `referdesk send` stores
them (one packet built per recipient and reused, as tests/test_durability.py does), then W `referdesk worker --poll
0.2` processes are started against it and a loopback Direct world: the trust anchor and the practice's .p12,
recipient certificates in a DNS server on 127.0.0.1, the CRL over loopback HTTP, and a STARTTLS HISP (a
RecordingSmtp) in this process. From the workers' start until every job is done it measures messages/s, each
worker's share (outbox_job.claimed_by), its CPU time, the HISP's duplicates (by outer Message-ID: must be 0, as
nothing is killed) and when each message was accepted; then checks that every referral is `sent` with exactly
one `sent` event, no job retried or failed, and (PostgreSQL) that the database saw no deadlock.

    PYTHONPATH=. .venv/bin/python bench/bench_outbox_workers.py --db postgresql://postgres@127.0.0.1:55432
    PYTHONPATH=. .venv/bin/python bench/bench_outbox_workers.py --db postgresql://postgres@127.0.0.1:55432 --workers 1
    PYTHONPATH=. .venv/bin/python bench/bench_outbox_workers.py --db sqlite --workers 4

`--db` is a PostgreSQL server URL (a database `bench_outbox_<pid>` is created on it, dropped afterwards unless
`--keep`; any database name in the URL is ignored), or `sqlite` (a file in the temporary folder), `sqlite:///PATH`
or a path (a new file; it must not exist). Needs the test extras (aiosmtpd, dnslib) and the helpers under tests/.
Exits non-zero when a check fails. The figures are CPU-bound (signing and encrypting each message, and the HISP
and DNS in this process): on a 2-core machine W workers compete with each other and with this process.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

P12_ENV = "DURABILITY_P12"  # the name tests/test_durability.py's LiveWorld writes into the config


class TimedList(list):
    """The HISP's `received`, with the wall-clock time each message was accepted."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item) -> None:
        self.times.append(time.time())
        super().append(item)


class Target:
    """Where the benchmark database lives: made fresh, and removed afterwards unless kept."""

    def __init__(self, spec: str, folder: Path) -> None:
        parsed = urlparse(spec)
        self.pg_server = self.name = None
        self.sqlite_path: Path | None = None
        if parsed.scheme in ("postgres", "postgresql"):
            self.pg_server = urlunparse(parsed._replace(path="", params="", query="", fragment=""))
            self.name = f"bench_outbox_{os.getpid()}"
            self.url = f"{self.pg_server}/{self.name}"
        else:
            from models.db import sqlite_path_from_url, sqlite_url

            path = folder / "referdesk.db" if spec == "sqlite" else (sqlite_path_from_url(spec) or Path(spec))
            if path.exists():
                raise SystemExit(f"{path} exists: give a new file (the benchmark seeds a fresh database)")
            self.sqlite_path = path.resolve()
            self.url = sqlite_url(self.sqlite_path)

    @property
    def engine(self) -> str:
        return "PostgreSQL" if self.pg_server else "SQLite (WAL)"

    def _admin(self, sql: str):
        import psycopg2

        connection = psycopg2.connect(f"{self.pg_server}/postgres")
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall() if cursor.description else None
        finally:
            connection.close()

    def create(self) -> None:
        if self.pg_server:
            self._admin(f'CREATE DATABASE "{self.name}"')

    def pg_stats(self) -> dict[str, int]:
        """Deadlocks, rolled-back transactions and serialization conflicts the server counted for our database."""
        if not self.pg_server:
            return {}
        row = self._admin(f"SELECT deadlocks, xact_rollback, xact_commit, conflicts FROM pg_stat_database "
                          f"WHERE datname = '{self.name}'")[0]
        return dict(zip(("deadlocks", "rollbacks", "commits", "conflicts"), row))

    def drop(self) -> None:
        if self.pg_server:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        elif self.sqlite_path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.sqlite_path}{suffix}").unlink(missing_ok=True)


def verified_contacts() -> list[str]:
    from models.contacts import Contact

    return [c.direct_address for c in Contact.select(Contact.direct_address)
            .where(Contact.verification == "verified", Contact.direct_address != "").order_by(Contact.id)]


def queue_referrals(contacts: list[str], count: int) -> dict[int, tuple[str, float]]:
    """`count` Direct referrals spread over `contacts`, as tests/test_durability.py queues them (one packet per
    recipient, reused); referral id -> (Message-ID, wall time its batch was committed)."""
    from documents.packet import build_attachments
    from models.db import database
    from models.patients import Note
    from models.referring import ReferralDraft, create_referral

    notes = list(Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).limit(len(contacts)))
    packets = []
    for note, address in zip(notes, contacts):
        draft = ReferralDraft(patient_id=note.patient_id, note_id=note.id, channel="direct",
                              direction="transferring", recipient=address, reason="Outbox benchmark",
                              include_note=False)
        packets.append((draft, build_attachments(draft)))
    made: dict[int, tuple[str, float]] = {}
    for start in range(0, count, 200):  # a transaction per 200: queueing is set-up, not what is measured
        batch = []
        with database.atomic():
            for i in range(start, min(count, start + 200)):
                draft, attachments = packets[i % len(packets)]
                referral = create_referral(draft, attachments)
                batch.append((referral.id, referral.message_id))
        committed = time.time()
        made.update((rid, (message_id, committed)) for rid, message_id in batch)
    return made


class WorkerProcess:
    """`referdesk worker --poll …` as its own process on the real clock (tests/test_durability.py's Worker, with
    the database given by URL)."""

    def __init__(self, index: int, config: Path, data: Path, db_url: str, log: Path, poll: float) -> None:
        self.index, self.log = index, log
        self.argv = [sys.executable, "-m", "tui.cli", "--config", str(config), "--data-dir", str(data),
                     "--db", db_url, "worker", "--poll", str(poll)]
        self.env = {k: v for k, v in os.environ.items() if k != "REFERDESK_FROZEN_TIME"}
        self.env.update(PYTHONPATH=str(ROOT), TZ="UTC", **{P12_ENV: "durability passphrase"})
        self.process: subprocess.Popen | None = None
        self.cpu_seconds = 0.0

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def read_cpu(self) -> None:
        """User + system CPU seconds so far (Linux /proc), read before the process is stopped."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            self.cpu_seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            self.cpu_seconds = float("nan")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def problems(self) -> list[str]:
        """Lines of the worker's output that report an error (the service prints "outbox: <error>")."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines()
                if line.strip() and not line.startswith("referdesk worker") and "working again" not in line]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, metavar="URL",
                        help="postgresql://… server, or sqlite / sqlite:///PATH / PATH")
    parser.add_argument("--workers", type=int, default=4, metavar="W", help="worker processes (default 4)")
    parser.add_argument("--referrals", type=int, default=2000, metavar="N", help="referrals to send (default 2000)")
    parser.add_argument("--patients", type=int, default=300, help="synthetic patients to seed (default 300)")
    parser.add_argument("--poll", type=float, default=0.2, help="the workers' --poll (default 0.2 s)")
    parser.add_argument("--lease", type=int, default=300,
                        help="[worker] lease_seconds (default 300: long enough that no claim runs out here)")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds (default 1800)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the temporary folder")
    args = parser.parse_args()

    from direct_pki import server_context
    from loopback_smtp import RecordingSmtp
    from models import clock
    from models.db import close_database, open_database
    from models.referrals import OutboxJob, Referral, ReferralEvent
    from models.seed import seed
    from test_durability import LiveWorld, outer_message_id

    clock.freeze(None)
    folder = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    target = Target(args.db, folder)
    target.create()
    world = None
    workers: list[WorkerProcess] = []
    failures: list[str] = []
    try:
        began = time.perf_counter()
        open_database(target.url)
        seed(args.patients)
        seeded_s = time.perf_counter() - began
        contacts = verified_contacts()
        if len(contacts) < 2:
            raise SystemExit("the seeded address book has too few verified Direct contacts")
        began = time.perf_counter()
        referrals = queue_referrals(contacts, args.referrals)
        queued_s = time.perf_counter() - began
        ours = list(referrals)
        by_message_id = {message_id: rid for rid, (message_id, _) in referrals.items()}
        others = OutboxJob.select().where(OutboxJob.referral.not_in(ours) | OutboxJob.referral.is_null()).count()
        print(f"{target.engine}: seeded {args.patients} patients in {seeded_s:.1f} s; queued {len(ours)} Direct "
              f"referrals to {len(contacts)} recipients in {queued_s:.1f} s ({others} other outbox jobs)",
              flush=True)

        world = LiveWorld(folder, contacts)
        hisp = RecordingSmtp(tls_context=server_context(world.tls_cert, world.tls_key))
        hisp.received = TimedList()
        stats_before = target.pg_stats()
        with hisp:
            config = folder / "config.toml"
            config.write_text(world.config_text(hisp.port, lease_seconds=args.lease))
            data = folder / "data"
            data.mkdir()
            workers = [WorkerProcess(i + 1, config, data, target.url, folder / f"worker-{i + 1}.log", args.poll)
                       for i in range(args.workers)]
            load_before = os.getloadavg()[0]
            rusage_before = os.times()
            started_wall, started = time.time(), time.perf_counter()
            for worker in workers:
                worker.start()
            # Every job settled: done, or failed (which the checks below report).
            pending = OutboxJob.select().where(OutboxJob.state.in_(("pending", "claimed", "waiting")))
            deadline = started + args.timeout
            while True:
                if pending.count() == 0:
                    break
                dead = [w for w in workers if w.process.poll() is not None]
                if dead:
                    failures.append(f"worker {dead[0].index} exited ({dead[0].process.returncode}): "
                                    f"{dead[0].problems()[-5:]}")
                    break
                if time.perf_counter() > deadline:
                    failures.append(f"timed out after {args.timeout:.0f} s with {pending.count()} jobs not done")
                    break
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            bench_cpu = sum(os.times()[:2]) - sum(rusage_before[:2])
            time.sleep(0.3)  # a late copy (a second send of something already recorded) would arrive now
            for worker in workers:
                worker.read_cpu()
                worker.stop()
        received = list(zip(hisp.received, hisp.received.times))
        stats_after = target.pg_stats()

        # --- what happened ---
        counts = collections.Counter(outer_message_id(got.content) for got, _ in received)
        duplicates = sum(n - 1 for n in counts.values())
        missing = set(by_message_id) - set(counts)
        unknown = set(counts) - set(by_message_id)
        accepted_at: dict[str, float] = {}
        for got, at in received:
            accepted_at.setdefault(outer_message_id(got.content), at)
        since_start = [at - started_wall for at in accepted_at.values()]
        since_queued = [accepted_at[m] - referrals[rid][1] for m, rid in by_message_id.items() if m in accepted_at]
        first, last = (min(since_start), max(since_start)) if since_start else (float("nan"),) * 2

        jobs = list(OutboxJob.select(OutboxJob.claimed_by, OutboxJob.state, OutboxJob.attempts)
                    .where(OutboxJob.referral.in_(ours)).tuples())
        per_worker = collections.Counter(claimed_by.rsplit(":", 1)[-1] for claimed_by, _, _ in jobs)
        job_states = collections.Counter(state for _, state, _ in jobs)
        reclaimed = sum(1 for _, _, attempts in jobs if attempts != 1)
        statuses = collections.Counter(s for (s,) in Referral.select(Referral.status)
                                       .where(Referral.id.in_(ours)).tuples())
        sent_events = collections.Counter(rid for (rid,) in ReferralEvent.select(ReferralEvent.referral)
                                          .where(ReferralEvent.kind == "sent", ReferralEvent.referral.in_(ours))
                                          .tuples())
        bad_events = (ReferralEvent.select().where(ReferralEvent.kind.in_(("retry", "failed")),
                                                   ReferralEvent.referral.in_(ours)).count())
        sending_events = (ReferralEvent.select().where(ReferralEvent.kind == "sending",
                                                       ReferralEvent.referral.in_(ours)).count())

        # --- the report ---
        n = len(ours)
        print(f"\n{args.workers} worker(s) (--poll {args.poll:g}), {n} referrals, {target.engine}, "
              f"{os.cpu_count()} CPUs; load average {load_before:.2f} at the start "
              f"(other work on the machine)")
        print(f"{'worker':>8} {'pid':>8} {'sent':>6} {'share':>7} {'CPU s':>7} {'msg/CPU s':>10}")
        for worker in workers:
            mine = per_worker.get(str(worker.pid), 0)
            print(f"{worker.index:>8} {worker.pid:>8} {mine:>6} {mine / max(n, 1):>7.1%} {worker.cpu_seconds:>7.1f} "
                  f"{mine / worker.cpu_seconds if worker.cpu_seconds else float('nan'):>10.1f}")
        stray = {k: v for k, v in per_worker.items() if k not in {str(w.pid) for w in workers}}
        if stray:
            print(f"   claimed by no worker of ours: {stray}")
        print(f"bench process (HISP, DNS, CRL, polling): {bench_cpu:.1f} CPU s")
        print()
        rows = [
            ("wall time, start to all done", f"{elapsed:.1f} s"),
            ("messages/s overall", f"{n / elapsed:.1f}"),
            ("first message accepted after", f"{first:.2f} s (process start-up)"),
            ("messages/s first to last accepted", f"{(n - 1) / (last - first) if last > first else float('nan'):.1f}"),
            ("accepted after start p50 / p95", f"{percentile(since_start, .5):.1f} / "
                                               f"{percentile(since_start, .95):.1f} s"),
            ("queued to accepted p50 / p95", f"{percentile(since_queued, .5):.1f} / "
                                             f"{percentile(since_queued, .95):.1f} s (all queued before start)"),
            ("HISP received / duplicates", f"{len(received)} / {duplicates}"),
            ("missing / unknown Message-IDs", f"{len(missing)} / {len(unknown)}"),
            ("referral statuses", dict(statuses)),
            ("job states / re-claimed jobs", f"{dict(job_states)} / {reclaimed}"),
            ("'sending' events / retry+failed", f"{sending_events} / {bad_events}"),
        ]
        if stats_after:
            delta = {k: stats_after[k] - stats_before.get(k, 0) for k in stats_after}
            rows.append(("PostgreSQL during the run", f"deadlocks {delta['deadlocks']}, rollbacks "
                                                      f"{delta['rollbacks']}, commits {delta['commits']}"))
        problems = [f"worker {w.index}: {line}" for w in workers for line in w.problems()]
        rows.append(("worker error lines", len(problems)))
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            print(f"  {label:<{width}}  {value}")
        for line in problems[:10]:
            print(f"    {line}")

        # --- the checks ---
        if duplicates:
            failures.append(f"{duplicates} duplicate message(s) at the HISP with no worker killed")
        if missing or unknown:
            failures.append(f"{len(missing)} message(s) missing and {len(unknown)} unknown at the HISP")
        if statuses != {"sent": n}:
            failures.append(f"referral statuses {dict(statuses)}, not all sent")
        if set(sent_events) != set(ours) or set(sent_events.values()) != {1}:
            failures.append("not exactly one `sent` event per referral")
        if job_states != {"done": n} or reclaimed or sending_events != n:
            failures.append(f"jobs {dict(job_states)}, {reclaimed} claimed more than once")
        if bad_events:
            failures.append(f"{bad_events} retry/failed events")
        if stats_after and stats_after["deadlocks"] != stats_before.get("deadlocks", 0):
            failures.append("PostgreSQL counted deadlocks during the run")
        if problems:
            failures.append(f"{len(problems)} error line(s) in the workers' output")
    finally:
        for worker in workers:
            worker.stop()
        if world is not None:
            world.stop()
        close_database()
        if args.keep:
            print(f"kept: {folder}" + (f" and database {target.url}" if target.pg_server else ""))
        else:
            target.drop()
            shutil.rmtree(folder, ignore_errors=True)
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
