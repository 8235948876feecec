"""Recipient addresses as typed: Direct addresses and fax numbers, checked for form before anything is sent.

Form only: whether a Direct address has a trusted certificate is the transports' question.
"""

from __future__ import annotations

import re

import phonenumbers

_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class AddressError(ValueError):
    """Why a typed address cannot be used, in words for the user."""


def check_direct_address(text: str) -> str:
    """The address, trimmed and with a lowercase domain; AddressError says what is malformed."""
    address = (text or "").strip()
    if address.lower().startswith("mailto:"):
        address = address[7:]
    if not address:
        raise AddressError("malformed: the address is empty")
    if any(ch.isspace() for ch in address):
        raise AddressError("malformed: an address cannot contain spaces")
    if not address.isascii():
        raise AddressError("malformed: Direct addresses use plain ASCII letters, digits and . - _")
    if len(address) > 254:
        raise AddressError("malformed: longer than 254 characters")
    if address.count("@") != 1:
        raise AddressError("malformed: a Direct address has exactly one @, as in name@direct.example.org")
    local, domain = address.split("@")
    if not local or not _LOCAL.fullmatch(local) or len(local) > 64:
        raise AddressError(f"malformed: {local!r} is not a valid name before the @")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise AddressError(f"malformed: {domain!r} is not a valid domain")
    return f"{local}@{domain.lower()}"


def check_fax_number(text: str) -> str:
    """A fax number in its stored form: 10 digits for the US and Canada (a leading 1 or +1 is dropped), else
    E.164 with its + ("+442079460958"). phonenumbers knows which area codes and exchanges exist, so a number
    that cannot be dialled is refused here, before a fax is ever attempted. AddressError says why."""
    raw = (text or "").strip()
    if not raw:
        raise AddressError("the fax number is empty")
    if re.search(r"[^\d\s()+.\-]", raw):
        raise AddressError("a fax number has only digits, spaces, ( ) + . and -")
    digits = re.sub(r"\D", "", raw)
    if not raw.startswith("+") and len(digits) not in (10, 11):
        raise AddressError(f"a fax number needs 10 digits (area code and number); this has {len(digits)}. "
                           "Outside the US and Canada, start with + and the country code")
    try:
        number = phonenumbers.parse(raw if raw.startswith("+") else digits, "US")
    except phonenumbers.NumberParseException as exc:
        raise AddressError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        if number.country_code == 1:
            raise AddressError("not a valid US/Canada number: no such area code or exchange")
        raise AddressError(f"not a valid number for country code +{number.country_code}")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164[2:] if number.country_code == 1 else e164


def fax_e164(stored: str) -> str:
    """The stored form as E.164, the form fax providers dial."""
    return stored if stored.startswith("+") else f"+1{stored}"


def format_fax(stored: str) -> str:
    """For people: (217) 555-0142 at home, +44 20 7946 0958 abroad."""
    if len(stored) == 10 and stored.isdigit():
        return f"({stored[:3]}) {stored[3:6]}-{stored[6:]}"
    try:
        return phonenumbers.format_number(phonenumbers.parse(stored, None),
                                          phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        return stored
