"""Is this recipient usable? The verdict the To: field shows when the user leaves it.

Certificate discovery and trust (DNS CERT, LDAP, path validation) arrive with Direct sending; until then a
Direct address is judged by its form and by what the address book last recorded, and the verdict says so
(`source`), so the screen never presents a stored state as a fresh check.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from models.address_book import contact_by_address
from models.addresses import AddressError, check_direct_address, check_fax_number, format_fax

VERIFIED, INVALID, UNVERIFIED = "verified", "invalid", "unverified"


@dataclass(frozen=True)
class Verdict:
    recipient: str  # in its stored form (normalised address, 10-digit fax number, absolute folder)
    state: str
    reason: str = ""
    source: str = ""  # form | address-book | none | local
    checked_at: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return self.state == VERIFIED


def verify_direct_address(text: str) -> Verdict:
    try:
        address = check_direct_address(text)
    except AddressError as exc:
        return Verdict(text.strip(), INVALID, str(exc), "form")
    contact = contact_by_address(address)
    if contact is None or contact.verification not in (VERIFIED, INVALID):
        return Verdict(address, UNVERIFIED,
                       "no verification on record: certificate discovery is not available in this version",
                       "none" if contact is None else "address-book")
    return Verdict(address, contact.verification, contact.verification_reason, "address-book", contact.verified_at)


def verify_fax_number(text: str) -> Verdict:
    try:
        number = check_fax_number(text)
    except AddressError as exc:
        return Verdict(text.strip(), INVALID, str(exc), "form")
    return Verdict(number, VERIFIED, f"fax number {format_fax(number)}", "form")


PRINTER_PREFIX = "printer:"
_QUEUE = re.compile(r"[A-Za-z0-9_.\-]{1,127}")


def verify_print_folder(text: str) -> Verdict:
    """A folder the PDF can be written to (it exists, or its parent does, and is writable), or a printer given
    as `printer:QUEUE` (a CUPS queue name; whether the queue accepts jobs is the print transport's check)."""
    if not text.strip():
        return Verdict("", INVALID, "choose a folder, or printer:QUEUE", "local")
    if text.strip().lower().startswith(PRINTER_PREFIX):
        queue = text.strip()[len(PRINTER_PREFIX):].strip()
        if not _QUEUE.fullmatch(queue):
            return Verdict(text.strip(), INVALID, f"{queue!r} is not a printer queue name (letters, digits, . _ -)",
                           "local")
        return Verdict(f"{PRINTER_PREFIX}{queue}", VERIFIED, f"printer queue {queue}", "local")
    folder = Path(os.path.expanduser(text.strip())).resolve()
    probe = folder if folder.exists() else folder.parent
    if folder.exists() and not folder.is_dir():
        return Verdict(str(folder), INVALID, f"{folder} is a file, not a folder", "local")
    if not probe.is_dir():
        return Verdict(str(folder), INVALID, f"{probe} does not exist", "local")
    if not os.access(probe, os.W_OK | os.X_OK):
        return Verdict(str(folder), INVALID, f"no permission to write in {probe}", "local")
    return Verdict(str(folder), VERIFIED, "folder is writable" if folder.exists() else "folder will be created",
                   "local")


def verify_recipient(channel: str, text: str) -> Verdict:
    if channel == "direct":
        return verify_direct_address(text)
    if channel == "efax":
        return verify_fax_number(text)
    return verify_print_folder(text)
