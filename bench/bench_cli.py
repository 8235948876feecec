"""Wall time of `referdesk --help` (target < 0.3 s): the console script as a user runs it, median of 15.

    python bench/bench_cli.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time


def timed(argv: list[str], runs: int = 15) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    script = shutil.which("referdesk", path=os.path.dirname(sys.executable)) or shutil.which("referdesk")
    if script is None:
        sys.exit("referdesk is not installed in this environment (scripts/test installs it)")
    for label, argv in (("referdesk --help", [script, "--help"]), ("python -c pass", [sys.executable, "-c", "pass"])):
        times = timed(argv)
        print(f"{label}: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
