"""Search keys for names: the one place that decides how typed text and stored names are compared."""

from __future__ import annotations

import re
import unicodedata


def normalize(text: str) -> str:
    """Search key of a name: accents stripped, casefolded, letters and digits only ("O'Brien" -> "obrien")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed.casefold() if ch.isalnum() and not unicodedata.combining(ch))


def name_tokens(*names: str) -> set[str]:
    """The parts of multi-part names worth a token row: each part whose key differs from the whole name's."""
    tokens: set[str] = set()
    for name in names:
        whole = normalize(name)
        for part in re.split(r"[\s\-'’.]+", name):
            key = normalize(part)
            if key and key != whole:
                tokens.add(key)
    return tokens
