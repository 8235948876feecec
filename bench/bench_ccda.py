"""C-CDA reading speed: HL7's example CCD grown to about 1 MB (its body repeated), read by documents.ccda_view.

    python bench/bench_ccda.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from documents.ccda_view import read_ccda  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    args = parser.parse_args()
    source = (Path(args.shared) / "standards/cda/examples/hl7-c-cda-examples/Documents/CCD/CCD 1/CCD.XML").read_bytes()
    start, end = source.index(b"<structuredBody>") + 16, source.index(b"</structuredBody>")
    body = source[start:end]
    data = source[:start] + body * (1_048_576 // len(body) + 1) + source[end:]
    timings = []
    for _ in range(10):
        started = time.perf_counter()
        view = read_ccda(data)
        timings.append((time.perf_counter() - started) * 1000)
    print(f"read_ccda of a {len(data) / 1_048_576:.2f} MB CCD ({len(view.sections)} sections): "
          f"median {statistics.median(timings):.1f} ms, max {max(timings):.1f} ms")


if __name__ == "__main__":
    main()
