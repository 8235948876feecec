"""Keeping PHI out of logs: patient names, dates of birth, MRNs and note text never reach a log line.

Two layers, because neither alone is enough:

* **Patterns** every log line goes through: dates (a date of birth looks like any other date, so all dates go),
  runs of six or more digits (MRNs, HL7 birth times like 19580312), and `label: value` pairs whose label names
  patient data (MRN, DOB, patient, name, note…).
* **Known values**: the identifiers of the patients this process is handling (`remember_patient()`, called
  where a referral is made and where its documents are read for sending or filed on receipt). Names have no
  pattern; these do. The set is bounded (oldest forgotten first) so a long-lived worker does not grow.

`install()` puts the redaction into every log record this process creates (a LogRecord factory, so a handler
added later — a site's own logging set-up, pytest's capture — gets redacted records too) and sets peewee's
query log to show SQL without its parameters (the parameters are the patient data). `configure_logging()` is
the command line's set-up: install, then one stderr handler at `$REFERDESK_LOG_LEVEL` (default WARNING).

Nothing happens at import time.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import sys
import threading
import traceback
from typing import Any, Iterable

PLACEHOLDER = "[redacted]"
LOG_LEVEL_ENV = "REFERDESK_LOG_LEVEL"
MAX_KNOWN = 5000  # known values kept (a few per patient)

_DATE = re.compile(
    r"\b(?:1[89]|20)\d\d-[01]?\d-[0-3]?\d\b"  # 1958-03-12
    r"|\b[01]?\d/[0-3]?\d/(?:1[89]|20)?\d\d\b"  # 03/12/1958, 3/12/58
    r"|\b[0-3]?\d\.[01]?\d\.(?:1[89]|20)\d\d\b"  # 12.03.1958
    r"|\b(?:\d{1,2} )?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.? \d{1,2},? (?:1[89]|20)\d\d\b",
    re.IGNORECASE,
)
_LONG_NUMBER = re.compile(r"(?<![\w.])\d{6,}(?![\w.])")  # MRNs, HL7 dates; not ports, not referral ids
_LABELLED = re.compile(  # an identifier after its label: one token
    r"\b(mrn|medical record(?: number)?|dob|date of birth|birth ?date|birth ?time|ssn)(\s*[:=#]\s*)"
    r"(\"[^\"]*\"|'[^']*'|[^\s,;)\]}]+)",
    re.IGNORECASE,
)
_LABELLED_TEXT = re.compile(  # a name or note text after its label: up to the end of the clause
    r"\b(patient(?: name)?|first[_ ]name|last[_ ]name|given(?: name)?|family(?: name)?|note(?: text)?|"
    r"sections_json)(\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^;\n)\]}]{1,60})",
    re.IGNORECASE,
)

_known: "collections.OrderedDict[str, None]" = collections.OrderedDict()
_known_pattern: re.Pattern | None = None
_lock = threading.Lock()
_installed = False


def remember(*values: Any) -> None:
    """Treat these values (a name, an MRN, a date of birth) as PHI in every later log line of this process."""
    global _known_pattern
    changed = False
    with _lock:
        for value in values:
            text = str(value or "").strip()
            if len(text) < 2:  # an initial or an empty middle name would redact half the alphabet
                continue
            if text in _known:
                _known.move_to_end(text)
                continue
            _known[text] = None
            changed = True
            while len(_known) > MAX_KNOWN:
                _known.popitem(last=False)
        if changed:
            terms = sorted(_known, key=len, reverse=True)
            _known_pattern = re.compile("|".join(_boundary(re.escape(t), t) for t in terms), re.IGNORECASE)


def _boundary(escaped: str, text: str) -> str:
    start = r"\b" if text[0].isalnum() else ""
    end = r"\b" if text[-1].isalnum() else ""
    return f"{start}{escaped}{end}"


def remember_patient(patient) -> None:
    """A Patient row's identifiers (names, MRN, date of birth in the forms a message might show)."""
    if patient is None:
        return
    birth = getattr(patient, "birth_date", None)
    dates = []
    if birth is not None and hasattr(birth, "strftime"):
        dates = [birth.isoformat(), birth.strftime("%Y%m%d"), birth.strftime("%m/%d/%Y")]
    remember(getattr(patient, "first_name", ""), getattr(patient, "middle_name", ""),
             getattr(patient, "last_name", ""), getattr(patient, "mrn", ""), *dates)


def forget_all() -> None:
    """For tests: an empty set of known values."""
    global _known_pattern
    with _lock:
        _known.clear()
        _known_pattern = None


def redact(text: Any) -> str:
    """`text` with patient data replaced by [redacted]."""
    text = str(text)
    pattern = _known_pattern
    if pattern is not None:
        text = pattern.sub(PLACEHOLDER, text)
    labelled = lambda m: f"{m.group(1)}{m.group(2)}{PLACEHOLDER}"  # noqa: E731
    text = _LABELLED_TEXT.sub(labelled, _LABELLED.sub(labelled, text))
    text = _DATE.sub(PLACEHOLDER, text)
    return _LONG_NUMBER.sub(PLACEHOLDER, text)


def redact_lines(lines: Iterable[str]) -> list[str]:
    return [redact(line) for line in lines]


# --- logging -------------------------------------------------------------------------------------------------


def _peewee_message(record: logging.LogRecord) -> str | None:
    """peewee logs each query as a (sql, params) tuple at DEBUG: the SQL only, never the parameters."""
    if record.name != "peewee" or not isinstance(record.msg, tuple) or len(record.msg) != 2:
        return None
    sql, params = record.msg
    count = len(params) if isinstance(params, (list, tuple)) else 0
    return f"{redact(sql)} -- {count} parameter(s) not logged"


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record in place: its message (args merged in), its exception text and stack."""
    if getattr(record, "_referdesk_redacted", False):
        return record
    try:
        message = _peewee_message(record)
        if message is None:
            message = redact(record.getMessage())
    except Exception:  # a record whose args do not fit its format: keep nothing of the args
        message = redact(str(record.msg))
    record.msg, record.args = message, None
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._referdesk_redacted = True
    return record


class RedactingFilter(logging.Filter):
    """For a handler (or logger) that should redact: every record passes, redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install() -> None:
    """Redact every log record this process creates from now on (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args, **kwargs):
            return redact_record(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a test's capture, a redirected stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_handler: logging.Handler | None = None


def configure_logging(level: str | int | None = None) -> logging.Handler:
    """The command line's logging: redaction installed, one handler on stderr at `level` (else
    $REFERDESK_LOG_LEVEL, else WARNING). Idempotent: a second call only changes the level. Returns the handler."""
    global _handler
    install()
    if level is None:
        level = os.environ.get(LOG_LEVEL_ENV, "") or "WARNING"
    if isinstance(level, str):
        level = logging.getLevelName(level.strip().upper())
        if not isinstance(level, int):
            level = logging.WARNING
    root = logging.getLogger()
    if _handler is None:
        _handler = _StderrHandler()
        _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _handler.addFilter(RedactingFilter())  # records made before install(), or by a foreign factory
        root.addHandler(_handler)
    root.setLevel(level)
    # aiosmtpd logs envelope addresses at INFO and each DATA line at DEBUG: the message itself. Never below WARNING.
    logging.getLogger("mail.log").setLevel(max(level, logging.WARNING))
    return _handler
