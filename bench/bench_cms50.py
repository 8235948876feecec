"""CMS50 report time on a large practice: `cms50_report(2026)` (and the overdue list) over N seeded patients,
first with the seed's own referrals, then with many more (a busy practice refers thousands a year).

    python bench/bench_cms50.py --patients 100000            # seeds a temp database first (~20 s)
    python bench/bench_cms50.py --db sqlite:////path/x.db    # an existing seeded database (extra rows are added!)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from models import clock  # noqa: E402
from models.cms50 import cms50_report  # noqa: E402
from models.db import bulk_insert, database, open_database, sqlite_url  # noqa: E402
from models.overdue import overdue_referrals  # noqa: E402
from models.patients import Encounter, Patient  # noqa: E402
from models.referrals import Referral  # noqa: E402
from models.seed import seed  # noqa: E402


def timed(label: str, call, runs: int) -> None:
    call()  # warm the page cache as a running app would be
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        timings.append((time.perf_counter() - started) * 1000)
    print(f"  {label:<34} p50={statistics.median(timings):7.1f} ms  max={max(timings):7.1f} ms  -> {result}")


def add_referrals(count: int) -> None:
    """`count` more referrals of 2025–2026 on random patients, in every status, some received."""
    rng = random.Random(50)
    patients = Patient.select().count()
    next_id = (Referral.select(Referral.id).order_by(Referral.id.desc()).scalar() or 0) + 1
    rows = []
    for n in range(count):
        made = dt.datetime(2025, 11, 1) + dt.timedelta(minutes=rng.randrange(0, 365 * 24 * 60))
        status = rng.choices(["sent", "delivered", "report-received", "failed", "cancelled"], [10, 35, 45, 6, 4])[0]
        report = (made.date() + dt.timedelta(days=rng.randrange(3, 60))) if status == "report-received" else None
        rows.append((next_id + n, rng.randrange(1, patients + 1), "transferring", "direct", "x@direct.example",
                     "Kim Lee, MD", "", "routine", "", "", 1, "[]", "", status, str(made),
                     report.isoformat() if report else None))
    with database.atomic():
        bulk_insert(Referral, ["id", "patient", "direction", "channel", "recipient", "recipient_name", "reason",
                               "urgency", "subject", "message", "include_note", "excluded_sections",
                               "status_reason", "status", "created_at", "report_received_on"], rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--db")
    parser.add_argument("--extra-referrals", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    clock.freeze(dt.datetime(2026, 11, 2, 10))  # the seed's world: its referrals run up to 11/01/2026
    folder = None
    if args.db:
        open_database(args.db)
    else:
        folder = tempfile.mkdtemp(prefix="referdesk-bench-")
        open_database(sqlite_url(os.path.join(folder, "bench.db")))
        report = seed(args.patients)
        print(f"seeded {report.patients} patients in {report.seconds:.1f} s", file=sys.stderr)
    try:
        def measure() -> None:
            print(f"patients={Patient.select().count():,} encounters={Encounter.select().count():,} "
                  f"referrals={Referral.select().count():,}")
            timed("cms50_report(2026)", lambda: (lambda r: f"{r.denominator}/{r.numerator}, "
                                                 f"{len(r.gaps)} gaps")(cms50_report(2026)), args.runs)
            timed("overdue_referrals(30)", lambda: f"{len(overdue_referrals(30))} rows", args.runs)

        measure()
        if args.extra_referrals:
            add_referrals(args.extra_referrals)
            measure()
    finally:
        if folder:
            database.close()
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
