"""Is this recipient usable? The verdict the To: field and `referdesk send` act on.

A Direct address gets the real check (certificate discovery and trust, transports/direct/recipient.py) when
trust anchors are configured, and the address book remembers the answer. Without them — Direct not set up —
only its form and what the address book last recorded can be told, and the verdict says so (`source`), so
the screen never presents a stored state as a fresh check.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from models import clock
from models.address_book import contact_by_address, remember_verification
from models.audit import record
from models.addresses import AddressError, check_direct_address, check_fax_number, format_fax

VERIFIED, INVALID, UNVERIFIED = "verified", "invalid", "unverified"


@dataclass(frozen=True)
class Verdict:
    recipient: str  # in its stored form (normalised address, 10-digit fax number, absolute folder)
    state: str
    reason: str = ""
    source: str = ""  # form | address-book | none | local | dns | ldap
    checked_at: dt.datetime | None = None
    kind: str = ""  # the Direct verdict: verified, no-certificate, untrusted, expired, revoked, dns-error, …
    detail: object = None  # the full DirectVerdict (certificate subject, issuer, expiry, fingerprint)

    @property
    def ok(self) -> bool:
        return self.state == VERIFIED


def direct_settings(config):
    """The settings for a real check, or None when no trust anchors are configured (Direct not set up)."""
    if config is None or not str(config.section("direct").get("trust_anchors") or "").strip():
        return None
    from transports.direct.recipient import DirectSettings

    return DirectSettings.from_config(config)


def verify_direct_address(text: str, settings=None, *, username: str = "") -> Verdict:
    """`username`: who asked, for the audit row of a real check (the form and the address book are not checks)."""
    try:
        address = check_direct_address(text)
    except AddressError as exc:
        return Verdict(text.strip(), INVALID, str(exc), "form", kind="malformed-address")
    if settings is not None:
        return _checked_now(address, settings, username)
    contact = contact_by_address(address)
    if contact is None or contact.verification not in (VERIFIED, INVALID):
        return Verdict(address, UNVERIFIED,
                       "no verification on record: certificate discovery is not available in this version",
                       "none" if contact is None else "address-book")
    return Verdict(address, contact.verification, contact.verification_reason, "address-book", contact.verified_at)


def _checked_now(address: str, settings, username: str = "") -> Verdict:
    from transports.direct.recipient import check_recipient

    found = check_recipient(address, settings)
    at = found.checked_at or clock.now()
    remember_verification(address, found.state, found.reason, found.fingerprint, at)
    record("direct.verify", username=username, object_type="direct_address", object_id=address,
           outcome="ok" if found.ok else found.state, detail=f"source={found.source or 'dns'}")
    state = VERIFIED if found.ok else UNVERIFIED if found.temporary else INVALID
    reason = found.reason
    if found.ok:
        reason = (f"{found.binding}-bound certificate from {found.issuer}, valid until {found.not_after:%m/%d/%Y}"
                  if found.not_after else found.reason)
    return Verdict(address, state, reason, found.source or "dns", at, kind=found.state, detail=found)


def verify_fax_number(text: str) -> Verdict:
    try:
        number = check_fax_number(text)
    except AddressError as exc:
        return Verdict(text.strip(), INVALID, str(exc), "form")
    return Verdict(number, VERIFIED, f"fax number {format_fax(number)}", "form")


from transports.print_job import PRINTER_PREFIX  # noqa: E402 - kept beside the print check that uses it

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
    probe = folder
    while not probe.exists() and probe != probe.parent:  # the folders still to make are made 0700 on saving
        probe = probe.parent
    if folder.exists() and not folder.is_dir():
        return Verdict(str(folder), INVALID, f"{folder} is a file, not a folder", "local")
    if not probe.is_dir():
        return Verdict(str(folder), INVALID, f"{probe} is a file, not a folder", "local")
    if not os.access(probe, os.W_OK | os.X_OK):
        return Verdict(str(folder), INVALID, f"no permission to write in {probe}", "local")
    return Verdict(str(folder), VERIFIED, "folder is writable" if folder.exists() else "folder will be created",
                   "local")


def verify_recipient(channel: str, text: str, settings=None, *, username: str = "") -> Verdict:
    """`settings`: DirectSettings for a real Direct check (see direct_settings), else the stored knowledge;
    `username`: who asked (the audit row of a Direct check)."""
    if channel == "direct":
        return verify_direct_address(text, settings, username=username)
    if channel == "efax":
        return verify_fax_number(text)
    return verify_print_folder(text)
