"""Receiving speed: documents.ccda_reader.read_summary of HL7's example CCD grown to about 1 MB (its
structuredBody repeated). Target from issue 4: under 200 ms.

    python bench/bench_ccda_read.py [--shared ../shared] [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from documents.ccda_reader import read_summary  # noqa: E402


def grown_ccd(shared: Path, size: int = 1_048_576) -> bytes:
    """HL7's CCD 1 with the contents of its structuredBody repeated until the document is about `size` bytes."""
    source = (shared / "standards/cda/examples/hl7-c-cda-examples/Documents/CCD/CCD 1/CCD.XML").read_bytes()
    start, end = source.index(b"<structuredBody>") + len(b"<structuredBody>"), source.index(b"</structuredBody>")
    body = source[start:end]
    return source[:start] + body * (size // len(body) + 1) + source[end:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    data = grown_ccd(Path(args.shared))
    timings = []
    for _ in range(args.runs):
        started = time.perf_counter()
        summary = read_summary(data)
        timings.append((time.perf_counter() - started) * 1000)
    entries = sum(len(s.entries) for s in summary.sections)
    median = statistics.median(timings)
    print(f"read_summary of a {len(data) / 1_048_576:.2f} MB CCD ({len(summary.sections)} sections, {entries} "
          f"entries, {len(summary.findings)} findings): median {median:.1f} ms, max {max(timings):.1f} ms "
          f"(target < 200 ms: {'ok' if median < 200 else 'SLOW'})")


if __name__ == "__main__":
    main()
