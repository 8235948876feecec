"""`referdesk demo` start-up (issue 8 targets: an interactive screen in under 3 s on a first run, certificate
generation and seeding included, and under 1.5 s on later runs): process spawn → the patient-search screen
ready for keys (headless), with the whole sandbox (DNS, CRL, HISP, fax gateway, partner process, listener)
started behind it; then the app quits and the time to a clean exit is measured too.

    python bench/bench_demo.py [--runs 5] [--patients 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

CHILD = r"""
import sys, time
import tui.cli as cli
from tui.app import ReferdeskApp
from tui.screens.patient_search import PatientSearchScreen

def run_app(config, *, demo=False, start="search"):
    async def ready(pilot):
        while not isinstance(pilot.app.screen, PatientSearchScreen) or pilot.app.focused is None:
            await pilot.pause(0.005)
        print("ready", time.time(), flush=True)
        pilot.app.exit()
    ReferdeskApp(config=config, demo=demo).run(headless=True, auto_pilot=ready)

cli._run_app = run_app
cli.main(["--data-dir", sys.argv[1], "demo", "--patients", sys.argv[2]])
"""


def once(folder: str, patients: int) -> tuple[float, float]:
    """(seconds to the ready screen, seconds from then to the process's exit)."""
    env = {k: v for k, v in os.environ.items() if k != "REFERDESK_FROZEN_TIME"}
    env["PYTHONPATH"] = ROOT
    started = time.time()
    done = subprocess.run([sys.executable, "-c", CHILD, folder, str(patients)], capture_output=True, text=True,
                          cwd=ROOT, env=env, check=True)
    ended = time.time()
    ready = next(float(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("ready"))
    return ready - started, ended - ready


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--patients", type=int, default=2000)
    args = parser.parse_args()
    firsts, laters, exits = [], [], []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as folder:
            first, leave = once(os.path.join(folder, "demo"), args.patients)
            firsts.append(first)
            exits.append(leave)
            if not laters:
                for _ in range(args.runs):
                    later, leave = once(os.path.join(folder, "demo"), args.patients)
                    laters.append(later)
                    exits.append(leave)
    print(f"referdesk demo ({args.patients} patients): first run {statistics.median(firsts):.2f} s "
          f"(median of 3; min {min(firsts):.2f}, max {max(firsts):.2f}); later runs "
          f"{statistics.median(laters):.2f} s (median of {len(laters)}; max {max(laters):.2f}); "
          f"quit to exit {statistics.median(exits):.2f} s")


if __name__ == "__main__":
    main()
