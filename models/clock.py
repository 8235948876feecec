"""The one clock referdesk reads. Times are stored as naive UTC; tests and demos can freeze it."""

from __future__ import annotations

import datetime as dt
import os

_frozen: dt.datetime | None = None


def freeze(at: dt.datetime | None) -> None:
    """Make `now()` return `at` (naive UTC) until unfrozen with None."""
    global _frozen
    _frozen = at


def now() -> dt.datetime:
    if _frozen is not None:
        return _frozen
    env = os.environ.get("REFERDESK_FROZEN_TIME")
    if env:
        return dt.datetime.fromisoformat(env)
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def today() -> dt.date:
    return now().date()


def local(value: dt.datetime) -> dt.datetime:
    """A stored (naive UTC) time in the machine's local time zone, for display."""
    return value.replace(tzinfo=dt.timezone.utc).astimezone().replace(tzinfo=None)
