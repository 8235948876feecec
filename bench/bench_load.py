"""Concurrent load on one database: N writer processes and one `referdesk worker`, for 60 s.

Each writer searches patients, makes Direct referrals (`create_referral` with `build_attachments`, as `referdesk
send` does), marks reports received on referrals already sent and adds notes; the worker sends the referrals
(re-verify the recipient over loopback DNS, sign + encrypt, STARTTLS to a HISP on 127.0.0.1). Prints, per
writer, writes/s, errors (any OperationalError: "database is locked" on SQLite, a serialization failure,
deadlock or lock timeout on PostgreSQL) and write-transaction latency, then the worker's sent/s. The same load
as tests/test_concurrency.py (which runs 20 s by default); needs the test extras (aiosmtpd, dnslib, psycopg2)
and the helpers under tests/.

    PYTHONPATH=. .venv/bin/python bench/bench_load.py [--seconds 60] [--workers 4] [--patients 300]
    PYTHONPATH=. .venv/bin/python bench/bench_load.py --db postgresql://postgres@127.0.0.1:5432

By default the load runs on one SQLite file (WAL) in a temporary folder. `--db postgresql://USER@HOST:PORT`
runs it on that PostgreSQL server instead: the bench creates a seeded database and a copy of it to load
(`bench_load_<pid>_seeded` and `bench_load_<pid>_seeded_load1`; the user needs CREATEDB) and drops both afterwards unless
`--keep`. A database name in the URL is ignored: the bench never writes to an existing database.

`--workers` is the number of writer processes (the issue's "4 concurrent writers"); there is always one outbox
worker. Exits non-zero when any process saw a database error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def pg_server(url: str) -> str:
    """`url` without its database name (and query): the server the bench makes its databases on."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"--db takes a postgresql://USER@HOST:PORT URL, not {url!r} (leave it out for SQLite)")
    return urlunparse(parsed._replace(path="", params="", query="", fragment="")).rstrip("/")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long the writers write (default 60)")
    parser.add_argument("--workers", type=int, default=4, metavar="N", help="writer processes (default 4)")
    parser.add_argument("--patients", type=int, default=300, help="synthetic patients to seed (default 300)")
    parser.add_argument("--db", metavar="URL", help="a PostgreSQL server, postgresql://USER@HOST:PORT (default: "
                                                    "a SQLite file in a temporary folder)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (worker log, SQLite database) and PostgreSQL databases")
    args = parser.parse_args()

    from models import clock
    from models.db import close_database, open_database, sqlite_url
    from models.seed import seed
    from test_concurrency import PgSeeded, percentile, run_load

    folder = Path(tempfile.mkdtemp(prefix="bench-load-"))
    clock.freeze(None)
    if args.db:
        seeded = PgSeeded(pg_server(args.db), f"bench_load_{os.getpid()}_seeded", keep=args.keep)
        seeded.admin(f'CREATE DATABASE "{seeded.template}"')
        url, engine = f"{seeded.server}/{seeded.template}", f"PostgreSQL ({seeded.server})"
    else:
        seeded = folder / "seeded.db"
        url, engine = sqlite_url(seeded), "one SQLite database (WAL)"
    result = None
    try:
        open_database(url)
        seed(args.patients)
        close_database()
        started = time.perf_counter()
        try:
            result = run_load(seeded, folder / "run", seconds=args.seconds, writers=args.workers,
                              drain_timeout=max(120.0, args.seconds * 3))
        except BaseException:
            print(f"kept for inspection: {folder}", file=sys.stderr)
            raise
        every = [ms for w in result.writers for ms in w["write_ms"]]
        print(f"{args.workers} writers + 1 worker on {engine}, {args.seconds:.0f} s of writes, "
              f"{args.patients} patients; {time.perf_counter() - started:.0f} s in all")
        print(result.report())
        print(f"summary: writes/s {sum(w['writes'] / w['seconds'] for w in result.writers):.1f}, errors "
              f"{result.errors + len(result.lock_events)}, write p95 {percentile(every, 0.95):.1f} ms, write max "
              f"{max(every, default=0):.0f} ms, worker sent/s {result.sent_during_load / result.seconds:.1f}")
    finally:
        close_database()
        if result is not None:
            result.db.drop()
        if isinstance(seeded, PgSeeded):
            if args.keep:
                print(f"kept: PostgreSQL databases {seeded.template}" +
                      (f", {result.db.name}" if result is not None else ""))
            else:
                seeded.admin(f'DROP DATABASE IF EXISTS "{seeded.template}" WITH (FORCE)')
    if args.keep:
        print(f"kept: {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if result.errors or result.lock_events else 0


if __name__ == "__main__":
    sys.exit(main())
