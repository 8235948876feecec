"""Wall time of `referdesk seed --patients N` into a fresh database, as the user runs it.

    python bench/bench_seed.py --patients 100000 [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--keep", help="seed into this folder and keep it (for bench_search.py --db)")
    args = parser.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="referdesk-bench-")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tui.cli", "--data-dir", folder, "seed", "--patients",
                    str(args.patients)], check=True, cwd=os.path.join(os.path.dirname(__file__), ".."))
    elapsed = time.perf_counter() - started
    size = os.path.getsize(os.path.join(folder, "referdesk.db")) / 1e6
    print(f"seed --patients {args.patients}: {elapsed:.1f} s wall, database {size:.0f} MB")
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
