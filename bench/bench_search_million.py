"""Patient-search latency at a million patients, on SQLite and on PostgreSQL: p50/p95/p99/max over ~2000 queries.

    python bench/bench_search_million.py --engine sqlite                  # a temp SQLite file, 1,000,000 patients
    python bench/bench_search_million.py --engine postgresql \\
        --server postgresql://postgres@127.0.0.1:55432                    # a temp database on that server
    python bench/bench_search_million.py --engine sqlite --patients 100000 --keep   # keep it; prints its URL
    python bench/bench_search_million.py --engine postgresql --db postgresql://…/name   # reuse (or fill) one

The database is filled by `models.seed.seed_patients` (the patient rows of `seed`, without clinical records;
COPY on PostgreSQL), then searched as a user types: 2–3 letter prefixes of surnames and first names, whole
surnames, "last, first", "first last", MRNs whole and in part, birth dates in the common formats, and odd input.
A database given by --db that already has patients is searched as it is.

A PostgreSQL database this bench creates uses an ICU en-US collation, as a practice's server might (the hard case:
search must stay exact-prefix and index-backed whatever the collation); --collation c gives a "C" one instead.
Timings are of `search_patients` in this process, after a warm-up, as the running app sees them.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from models.db import close_database, open_database, sqlite_url  # noqa: E402
from models.patients import Patient  # noqa: E402
from models.search import search_patients  # noqa: E402
from models.seed import seed_patients  # noqa: E402

DEFAULT_SERVER = os.environ.get("REFERDESK_TEST_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
ODD = ["zz", "qx", "o'b", "*", "é", "ab'", "x" * 500, "'; DROP TABLE patient; --", "%", "_", "😀", "smith,"]


def queries(count: int, patients: int) -> list[tuple[str, str]]:
    """(kind, text) pairs as a user would type them, drawn from the names and dates in the database."""
    rng = random.Random(7)
    last = [r[0] for r in Patient.select(Patient.last_name).distinct().tuples()]
    first = [r[0] for r in Patient.select(Patient.first_name).distinct().tuples()]
    sample_ids = [rng.randrange(1, patients + 1) for _ in range(200)]
    births = [r[0] for r in Patient.select(Patient.birth_date).where(Patient.id.in_(sample_ids)).tuples()]
    out: list[tuple[str, str]] = []
    while len(out) < count:
        roll = rng.random()
        if roll < 0.35:
            out.append(("last prefix", rng.choice(last)[: rng.choice((2, 3))].lower()))
        elif roll < 0.55:
            out.append(("first prefix", rng.choice(first)[: rng.choice((2, 3))].lower()))
        elif roll < 0.62:
            out.append(("last name", rng.choice(last)))
        elif roll < 0.72:
            out.append(("last, first", f"{rng.choice(last)[:3]}, {rng.choice(first)[:2]}"))
        elif roll < 0.77:
            out.append(("first last", f"{rng.choice(first)} {rng.choice(last)[:3]}"))
        elif roll < 0.83:
            out.append(("mrn", str(1_000_000 + rng.randrange(1, patients + 1))))
        elif roll < 0.87:
            out.append(("mrn prefix", str(1_000_000 + rng.randrange(1, patients + 1))[: rng.choice((3, 4, 5))]))
        elif roll < 0.95:
            born = rng.choice(births)
            out.append(("birth date", born.strftime(rng.choice(("%m/%d/%Y", "%Y-%m-%d", "%m/%d/%y")))))
        else:
            out.append(("odd", rng.choice(ODD)))
    return out


def percentile(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, max(0, round(len(sorted_ms) * p / 100) - 1))]


def _pg_admin(server: str, sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(f"{server}/postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--db", help="an existing database URL: searched as it is, or filled first if empty")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL server for a database made here")
    parser.add_argument("--collation", choices=("icu", "c"), default="icu",
                        help="collation of a PostgreSQL database made here (default: ICU en-US)")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help="keep a database made here (its URL is printed)")
    args = parser.parse_args()

    made_pg = made_sqlite = None
    if args.db:
        url = args.db
    elif args.engine == "sqlite":
        made_sqlite = os.path.join(tempfile.mkdtemp(prefix="referdesk-bench-"), "search.db")
        url = sqlite_url(made_sqlite)
    else:
        made_pg = f"referdesk_bench_search_{uuid.uuid4().hex[:8]}"
        locale = ("LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'" if args.collation == "icu"
                  else "LOCALE 'C.UTF-8'")
        _pg_admin(args.server, f"CREATE DATABASE {made_pg} {locale} TEMPLATE template0")
        url = f"{args.server}/{made_pg}"
    try:
        open_database(url)
        total = Patient.select().count()
        if total == 0:
            report = seed_patients(args.patients, progress=lambda done, n: print(
                f"\rseeding {done:,}/{n:,}", end="", file=sys.stderr, flush=True))
            print(file=sys.stderr)
            total = report.patients
            print(f"seeded {report.patients:,} patients ({report.rows:,} rows) in {report.seconds:.1f} s")
        else:
            print(f"reusing {total:,} patients at {url}")
        qs = queries(args.queries, total)
        for _, text in qs[:100]:  # warm the caches as a running app would be
            search_patients(text)
        timings: list[float] = []
        by_kind: dict[str, list[float]] = {}
        for kind, text in qs:
            started = time.perf_counter()
            search_patients(text)
            ms = (time.perf_counter() - started) * 1000
            timings.append(ms)
            by_kind.setdefault(kind, []).append(ms)
        timings.sort()
        engine = "sqlite" if url.startswith("sqlite") else "postgresql"
        print(f"engine={engine} patients={total:,} queries={len(qs)} p50={statistics.median(timings):.2f}ms "
              f"p95={percentile(timings, 95):.2f}ms p99={percentile(timings, 99):.2f}ms max={timings[-1]:.2f}ms")
        for kind, ms in sorted(by_kind.items()):
            ms.sort()
            print(f"  {kind:<13} n={len(ms):<4} p50={statistics.median(ms):7.2f}ms p95={percentile(ms, 95):7.2f}ms "
                  f"max={ms[-1]:7.2f}ms")
    finally:
        close_database()
        if args.keep and (made_pg or made_sqlite):
            print(f"kept: {url}")
        elif made_pg:
            _pg_admin(args.server, f"DROP DATABASE IF EXISTS {made_pg} WITH (FORCE)")
        elif made_sqlite:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(made_sqlite + suffix):
                    os.remove(made_sqlite + suffix)
            os.rmdir(os.path.dirname(made_sqlite))


if __name__ == "__main__":
    main()
