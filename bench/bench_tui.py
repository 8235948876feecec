"""TUI figures from issue 3, on a database of N seeded patients (default 100,000):

- start-up: process spawn to an interactive patient-search screen (headless), median of 5;
- the app in a real 80×24 pseudo-terminal, typing the first 3 letters of 20 names: keystroke → last byte of
  the repaint (p50/p95 over the letters that search), bytes written per keystroke, and the app's peak RSS.

    python bench/bench_tui.py [--patients 100000 | --db sqlite:////path/referdesk.db]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

STARTUP_CHILD = r"""
import sys, time
from models.config import load_config
from models.db import open_database
from tui.app import ReferdeskApp
from tui.screens.patient_search import PatientSearchScreen

config = load_config(db_url=sys.argv[1], env={})
open_database(config.database_url)

async def ready(pilot):
    while not isinstance(pilot.app.screen, PatientSearchScreen) or pilot.app.focused is None:
        await pilot.pause(0.005)
    print(time.time(), flush=True)
    pilot.app.exit()

ReferdeskApp(config=config).run(headless=True, auto_pilot=ready)
"""


def startup(url: str) -> list[float]:
    times = []
    for _ in range(5):
        started = time.time()
        out = subprocess.run([sys.executable, "-c", STARTUP_CHILD, url], capture_output=True, text=True, cwd=ROOT,
                             check=True).stdout
        times.append(float(out.strip().splitlines()[-1]) - started)
    return times


def typing_in_a_terminal(url: str, words: list[str]) -> tuple[list[float], list[int], int]:
    """Run the app in a real 80×24 pseudo-terminal and type each word's first 3 letters, then clear the box.

    For each letter that runs a search (the 2nd and 3rd) it records the time from writing the key to the last
    byte of the repaint it causes, and the bytes written; also the peak RSS of the app process."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--db", url], stdin=slave, stdout=slave, stderr=slave,
                            cwd=ROOT, env=env, start_new_session=True)
    os.close(slave)

    def drain(quiet: float = 0.3, limit: float = 10.0) -> tuple[int, float]:
        total, deadline, last = 0, time.time() + limit, time.time()
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.01)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                total += len(chunk)
                last = time.time()
            elif time.time() - last > quiet:
                break
        return total, last

    latencies, sizes = [], []
    try:
        drain(quiet=1.5)  # start-up screen
        for word in words:
            for n, ch in enumerate(word[:3], 1):
                sent = time.time()
                os.write(master, ch.encode())
                size, last = drain()
                sizes.append(size)
                if n >= 2:
                    latencies.append((last - sent) * 1000)
            os.write(master, b"\x15")  # ctrl+u: clear the box
            drain()
        with open(f"/proc/{proc.pid}/status") as status:
            peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
        os.write(master, b"\x11")  # ctrl+q
        drain(quiet=0.3, limit=3)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.close(master)
    return latencies, sizes, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--db")
    args = parser.parse_args()
    url = args.db
    if not url:
        from models.db import close_database, open_database, sqlite_url
        from models.seed import seed

        url = sqlite_url(os.path.join(tempfile.mkdtemp(prefix="referdesk-bench-"), "referdesk.db"))
        open_database(url)
        seed(args.patients)
        close_database()
    times = startup(url)
    print(f"start-up to interactive search: median {statistics.median(times) * 1000:.0f} ms, "
          f"max {max(times) * 1000:.0f} ms")
    words = ["smith", "garcia", "nguyen", "obrien", "patel", "kim", "mueller", "johnson", "lopez", "okafor",
             "mary", "jose", "wei", "ana", "james", "fatima", "sean", "priya", "chen", "williams"]
    latencies, sizes, peak_kb = typing_in_a_terminal(url, words)
    latencies.sort()
    print(f"keystroke -> results painted in the terminal: p50 {statistics.median(latencies):.1f} ms, "
          f"p95 {latencies[int(len(latencies) * 0.95) - 1]:.1f} ms, max {latencies[-1]:.1f} ms "
          f"({len(latencies)} searching keystrokes)")
    print(f"bytes written per keystroke at 80x24: median {statistics.median(sizes):.0f}, max {max(sizes)} "
          f"({len(sizes)} keystrokes)")
    print(f"app peak RSS: {peak_kb / 1024:.0f} MB")


if __name__ == "__main__":
    main()
