"""Stand-in `lp` commands for tests: CUPS (its daemon and queues) is not available in CI, so these small
executables play lp's part at the process boundary — same argv, same stdout/stderr lines, same exit codes.

Each returns the path of an executable to pass as `lp=`; `recording_lp` also writes the argv it received (JSON,
exact, without argv[0]) to `<dir>/lp-argv.json`, and its environment's LC_ALL to `<dir>/lp-locale`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(f"#!{sys.executable}\nimport json, os, sys, time\n{body}")
    os.chmod(path, 0o755)
    return path


def recording_lp(directory: Path, job: str = "QUEUE-42") -> Path:
    """Accepts anything, records argv, answers like lp does: "request id is QUEUE-42 (1 file(s))"."""
    record = directory / "lp-argv.json"
    locale = directory / "lp-locale"
    return _script(
        directory,
        "lp-ok",
        f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        f"open({str(locale)!r}, 'w').write(os.environ.get('LC_ALL', ''))\n"
        f"print('request id is {job} (1 file(s))')\n",
    )


def failing_lp(directory: Path, message: str = "lp: The printer or class does not exist.") -> Path:
    """Exits 1 with lp's message on stderr, as lp does for an unknown queue."""
    return _script(directory, "lp-fail", f"sys.stderr.write({message + chr(10)!r})\nsys.exit(1)\n")


def hanging_lp(directory: Path, seconds: float = 30) -> Path:
    """Never answers (a stuck cupsd): sleeps far past any test timeout."""
    return _script(directory, "lp-hang", f"time.sleep({seconds})\n")
