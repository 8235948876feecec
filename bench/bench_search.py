"""Patient-search latency: p50/p95/max over varied 2–3 letter queries (plus a few names, MRNs and dates).

    python bench/bench_search.py --patients 100000            # seeds a temp database first
    python bench/bench_search.py --db sqlite:////path/x.db    # an existing seeded database
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from models.db import open_database, sqlite_url  # noqa: E402
from models.patients import Patient  # noqa: E402
from models.search import search_patients  # noqa: E402
from models.seed import seed  # noqa: E402


def queries(count: int) -> list[str]:
    """Prefixes of real surnames and first names as a user would type them, plus MRNs, dates and odd input."""
    rng = random.Random(7)
    last = [r[0] for r in Patient.select(Patient.last_name).distinct().tuples()]
    first = [r[0] for r in Patient.select(Patient.first_name).distinct().tuples()]
    out = []
    while len(out) < count:
        kind = rng.random()
        if kind < 0.45:
            name = rng.choice(last)
            out.append(name[: rng.choice((2, 3))].lower())
        elif kind < 0.75:
            name = rng.choice(first)
            out.append(name[: rng.choice((2, 3))].lower())
        elif kind < 0.85:
            out.append(f"{rng.choice(last)[:3]}, {rng.choice(first)[:2]}")
        elif kind < 0.9:
            out.append(str(1_000_000 + rng.randrange(1, Patient.select().count())))
        elif kind < 0.95:
            out.append(Patient.get_by_id(rng.randrange(1, 1000)).birth_date.strftime("%m/%d/%Y"))
        else:
            out.append(rng.choice(["zz", "qx", "o'b", "*", "é", "ab'", "x" * 500]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--db")
    parser.add_argument("--queries", type=int, default=400)
    args = parser.parse_args()
    if args.db:
        open_database(args.db)
    else:
        path = os.path.join(tempfile.mkdtemp(prefix="referdesk-bench-"), "bench.db")
        open_database(sqlite_url(path))
        report = seed(args.patients)
        print(f"seeded {report.patients} patients in {report.seconds:.1f} s", file=sys.stderr)
    total = Patient.select().count()
    qs = queries(args.queries)
    for q in qs[:20]:  # warm the page cache as a running app would be
        search_patients(q)
    timings = []
    for q in qs:
        started = time.perf_counter()
        search_patients(q)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    p95 = timings[int(len(timings) * 0.95) - 1]
    print(f"patients={total} queries={len(qs)} p50={statistics.median(timings):.2f}ms "
          f"p95={p95:.2f}ms max={timings[-1]:.2f}ms")


if __name__ == "__main__":
    main()
