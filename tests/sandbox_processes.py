"""Which sandbox partner processes are running: the demo and sandbox tests check none is left behind.
Not a test module."""

from __future__ import annotations

from pathlib import Path


def partner_processes(folder: Path) -> list[str]:
    """Pids of partner processes serving `folder` (read from /proc: no procps needed)."""
    wanted = ["transports.sandbox.partner", "--data-dir", str(folder)]
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if entry.name.isdigit() and all(part in argv for part in wanted):
            found.append(entry.name)
    return found
