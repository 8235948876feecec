"""The address book as the To: field uses it: suggestions as the user types, and what is known of an address."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from peewee import fn

from models.contacts import Contact
from models.db import starts_with
from models.text import normalize


@dataclass(frozen=True, slots=True)
class Suggestion:
    contact_id: int
    name: str
    organization: str
    specialty: str
    address: str  # the Direct address or the fax number, for the channel asked
    verification: str
    verification_reason: str
    verified_at: dt.datetime | None


def suggest_contacts(text: str, channel: str = "direct", limit: int = 8) -> list[Suggestion]:
    """Contacts whose name (any part) or address starts with what was typed, name matches first."""
    field = Contact.direct_address if channel == "direct" else Contact.fax
    key = normalize(text or "")[:100]
    typed = (text or "").strip().lower()[:254]
    if not key and not typed:
        return []
    has_address = field != ""
    lower = fn.LOWER(field)
    clauses = []
    if key:
        clauses += [starts_with(Contact.name_norm, key), Contact.name_norm.contains(key)]
    if typed:
        clauses.append(starts_with(lower, typed))
    seen: dict[int, Suggestion] = {}
    for clause in clauses:
        for contact in Contact.select().where(clause & has_address).order_by(Contact.name).limit(limit):
            if contact.id not in seen and len(seen) < limit:
                seen[contact.id] = _suggestion(contact, channel)
    return list(seen.values())


def _suggestion(contact: Contact, channel: str) -> Suggestion:
    return Suggestion(
        contact_id=contact.id,
        name=contact.name,
        organization=contact.organization,
        specialty=contact.specialty,
        address=contact.direct_address if channel == "direct" else contact.fax,
        verification=contact.verification if channel == "direct" else "",
        verification_reason=contact.verification_reason,
        verified_at=contact.verified_at,
    )


def contact_by_address(address: str) -> Contact | None:
    """The address-book entry for a Direct address (domain case-insensitive, as addresses are stored)."""
    return (
        Contact.select()
        .where(fn.LOWER(Contact.direct_address) == address.strip().lower())
        .first()
    )


def remember_verification(address: str, state: str, reason: str, fingerprint: str, at: dt.datetime) -> bool:
    """Keep the last certificate check of an address-book entry (state, reason, when, certificate fingerprint),
    so the To: field can say what was found last time. Addresses not in the book are not added."""
    stored = "verified" if state == "verified" else "invalid" if state not in ("dns-error", "") else None
    if stored is None:  # a check that could not be completed says nothing about the address
        return False
    changes = dict(verification=stored, verification_reason=reason[:250], verified_at=at)
    if fingerprint or stored == "verified":
        changes["cert_fingerprint"] = fingerprint
    return bool(Contact.update(**changes)
                .where(fn.LOWER(Contact.direct_address) == address.strip().lower()).execute())


def ensure_contact(name: str, *, organization: str = "", specialty: str = "", direct_address: str = "",
                   fax: str = "", phone: str = "") -> Contact:
    """An address-book entry for this Direct address (or fax number), added if missing and otherwise brought up
    to date; its verification is left to the next real check."""
    existing = (contact_by_address(direct_address) if direct_address
                else Contact.select().where(Contact.fax == fax, Contact.direct_address == "").first())
    contact = existing or Contact()
    contact.name, contact.organization, contact.specialty = name, organization, specialty
    contact.direct_address, contact.fax, contact.phone = direct_address, fax, phone
    contact.name_norm = normalize(name)
    if existing is None:
        contact.verification, contact.verification_reason = "unverified", ""
    contact.save()
    return contact
