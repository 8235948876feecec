"""Concurrent load on one SQLite database (WAL): N writer processes and one `referdesk worker`, for 60 s.

Each writer searches patients, makes Direct referrals (`create_referral` with `build_attachments`, as `referdesk
send` does), marks reports received on referrals already sent and adds notes; the worker sends the referrals
(re-verify the recipient over loopback DNS, sign + encrypt, STARTTLS to a HISP on 127.0.0.1). Prints, per
writer, writes/s, errors (any OperationalError, "database is locked" above all) and write-transaction latency,
then the worker's sent/s. The same load as tests/test_concurrency.py (which runs 20 s by default); needs the
test extras (aiosmtpd, dnslib) and the helpers under tests/.

    PYTHONPATH=. .venv/bin/python bench/bench_load.py [--seconds 60] [--workers 4] [--patients 300]

`--workers` is the number of writer processes (the issue's "4 concurrent writers"); there is always one outbox
worker. Exits non-zero when any process saw a database error.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long the writers write (default 60)")
    parser.add_argument("--workers", type=int, default=4, metavar="N", help="writer processes (default 4)")
    parser.add_argument("--patients", type=int, default=300, help="synthetic patients to seed (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (database, worker log)")
    args = parser.parse_args()

    from models import clock
    from models.db import close_database, open_database, sqlite_url
    from models.seed import seed
    from test_concurrency import percentile, run_load

    folder = Path(tempfile.mkdtemp(prefix="bench-load-"))
    clock.freeze(None)
    seeded = folder / "seeded.db"
    open_database(sqlite_url(seeded))
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
    print(f"{args.workers} writers + 1 worker on one SQLite database (WAL), {args.seconds:.0f} s of writes, "
          f"{args.patients} patients; {time.perf_counter() - started:.0f} s in all")
    print(result.report())
    print(f"summary: writes/s {sum(w['writes'] / w['seconds'] for w in result.writers):.1f}, errors "
          f"{result.errors + len(result.lock_events)}, write p95 {percentile(every, 0.95):.1f} ms, worker sent/s "
          f"{result.sent_during_load / result.seconds:.1f}")
    if args.keep:
        print(f"kept: {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if result.errors or result.lock_events else 0


if __name__ == "__main__":
    sys.exit(main())
