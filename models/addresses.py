"""Recipient addresses as typed: Direct addresses and fax numbers, checked for form before anything is sent.

Form only: whether a Direct address has a trusted certificate is the transports' question.
"""

from __future__ import annotations

import re

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
    """A North American fax number as 10 digits (a leading 1 is dropped); AddressError otherwise."""
    raw = (text or "").strip()
    if re.search(r"[^\d\s()+.\-]", raw):
        raise AddressError("a fax number has only digits, spaces, ( ) + . and -")
    digits = re.sub(r"\D", "", raw)
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) != 10:
        raise AddressError(f"a fax number needs 10 digits (area code and number); this has {len(digits)}")
    if digits[0] in "01" or digits[3] in "01":
        raise AddressError("not a valid US/Canada number: area code and exchange cannot start with 0 or 1")
    return digits


def format_fax(digits: str) -> str:
    return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}" if len(digits) == 10 else digits
