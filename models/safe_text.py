"""Text from outside made safe to show: the one place that decides which characters never reach a terminal raw.

Names, notes, subjects, file names and C-CDA narratives come from other systems (a received C-CDA, a message
header, a zip member's name) or from the database. A terminal obeys the control characters in them: ESC starts
a sequence that can clear the screen, set the clipboard (OSC 52), plant a hyperlink (OSC 8) or retitle the
window; C1 controls (U+0080–U+009F, e.g. U+009B CSI) do the same on terminals that honour them; CR overwrites a
line; bidi overrides (U+202E) make a name read backwards. XML cannot carry most C0 controls, but headers, zip
names and database rows can, and XML can carry C1 controls and bidi overrides.

What is stored stays as it came (a record is not rewritten); what is shown goes through `display_text` (every
such character made visible: ESC as ␛, other C0 controls as their Control Pictures, DEL as ␡, C1 controls and
bidi controls as U+FFFD) or, where the width of the text is already laid out, `strip_unsafe` (removed: they take
no cells, so nothing moves).

One character is the exception to "stored as it came": NUL (U+0000). PostgreSQL text cannot hold it ("A string
literal cannot contain NUL"), and C code reading the value stops at it, so a name with a NUL means different
things to different readers. `storable` drops it; the database layer (models/db.py) applies it to every text
value a statement carries, on SQLite and PostgreSQL alike, so both engines keep the same text and no NUL ever
reaches SQL. Dropped, not replaced: a NUL carries nothing a reader of a name or a note needs, and a
replacement character would be a character the sender never wrote.
"""

from __future__ import annotations

import re

#: C0 controls except tab, newline and the CR of a CR LF line ending; DEL; C1 controls; the bidi embedding,
#: override and isolate controls.
UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")
_SHOWN = {**{code: chr(0x2400 + code) for code in range(0x20)}, 0x7F: "\u2421"}  # ␀ … ␟, ␡
REPLACEMENT = "\ufffd"
NUL = "\x00"


def storable(text: str) -> str:
    """`text` as the store keeps it: without NUL characters (see the module notes); anything else as it is."""
    return text.replace(NUL, "") if NUL in text else text


def storable_params(params):
    """Statement parameters with every text value `storable`; the same sequence when none holds a NUL."""
    if not any(type(value) is str and NUL in value for value in params):
        return params
    return [value.replace(NUL, "") if type(value) is str else value for value in params]


def has_unsafe(text: str) -> bool:
    return bool(text) and UNSAFE.search(text) is not None


def _shown(match: re.Match) -> str:
    return _SHOWN.get(ord(match.group(0)), REPLACEMENT)


def display_text(text: str | None) -> str:
    """`text` with every control character a terminal would obey made visible; line endings (LF, CR LF) and
    tabs kept."""
    if not text:
        return ""
    return UNSAFE.sub(_shown, text) if UNSAFE.search(text) else text


def one_line(text: str | None, limit: int | None = None) -> str:
    """`display_text` on one line: runs of whitespace (newlines, tabs) become one space; at most `limit`
    characters."""
    line = " ".join(display_text(text).split())
    return line if limit is None else line[:limit]


def strip_unsafe(text: str) -> str:
    """`text` without the characters `display_text` would replace (for text already laid out in cells)."""
    return UNSAFE.sub("", text) if text and UNSAFE.search(text) else text
