"""Search keys for names: the one place that decides how typed text and stored names are compared."""

from __future__ import annotations

import re
import unicodedata


def normalize(text: str) -> str:
    """Search key of a name: accents stripped, casefolded, letters and digits only ("O'Brien" -> "obrien")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed.casefold() if ch.isalnum() and not unicodedata.combining(ch))


# How people type letters their keyboard lacks: "Mueller" for Müller, "Oeberg" for Øberg.
_SPELLED_OUT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "ø": "oe", "å": "aa", "æ": "ae",
                              "œ": "oe", "ł": "l", "đ": "d", "þ": "th"})


def spelled_out(text: str) -> str:
    """The search key of `text` with umlauts and the like written out ("Müller" -> "mueller")."""
    return normalize(text.casefold().translate(_SPELLED_OUT))


def name_tokens(*names: str) -> set[str]:
    """Extra search keys for a name: each part of a multi-part name ("lopez" of Garcia-Lopez) and the
    spelled-out form of names with umlauts — every key that differs from the whole name's own key."""
    tokens: set[str] = set()
    for name in names:
        whole = normalize(name)
        for part in re.split(r"[\s\-'’.]+", name) + [name]:
            for key in (normalize(part), spelled_out(part)):
                if key and key != whole:
                    tokens.add(key)
    return tokens
