"""Directory import throughput: an NPPES Endpoint CSV of N synthetic rows, imported then re-imported.

    python bench/bench_directory.py --rows 100000
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from models.db import open_database, sqlite_url  # noqa: E402
from models.directory import import_directory_file  # noqa: E402
from models.seed import npi_with_check_digit  # noqa: E402

HEADER = ["NPI", "Endpoint Type", "Endpoint Type Description", "Endpoint", "Affiliation", "Endpoint Description",
          "Affiliation Legal Business Name", "Use Code", "Use Description", "Other Use Description", "Content Type",
          "Content Description", "Other Content Description", "Affiliation Address Line One",
          "Affiliation Address Line Two", "Affiliation Address City", "Affiliation Address State",
          "Affiliation Address Country", "Affiliation Address Postal Code"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="referdesk-bench-")
    path = os.path.join(folder, "endpoints.csv")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(args.rows):
            writer.writerow([npi_with_check_digit(f"19{i:07d}"), "DIRECT", "Direct Messaging Address",
                             f"doc{i}@direct.org{i % 900}.example", "Y", "", f"Organization {i % 900}", "HIE",
                             "Health Information Exchange", "", "", "", "", f"{i} Main St", "", f"City {i % 70}",
                             "IL", "US", "62704"])
    open_database(sqlite_url(os.path.join(folder, "referdesk.db")))
    for label in ("import", "re-import"):
        started = time.perf_counter()
        report = import_directory_file(path)
        print(f"{label} {args.rows:,} rows: {time.perf_counter() - started:.2f} s "
              f"(imported {report.imported}, updated {report.updated}, skipped {len(report.skipped)})")


if __name__ == "__main__":
    main()
