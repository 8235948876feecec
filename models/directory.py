"""The provider directory: import it from the files directories publish, and search it as the user types.

Two formats come in: the NPPES Endpoint Reference File (CSV, one endpoint per row, from the NPPES downloadable
file) and a FHIR R4/R5 Bundle of Practitioner, PractitionerRole, Organization and Endpoint resources. Both become
`DirectoryEntry` rows keyed on (endpoint, NPI), so importing a newer file updates entries instead of duplicating
them. An import is one transaction: a file that cannot be read as a whole raises `DirectoryImportError` and
changes nothing; a bad row or entry is skipped and reported with its line or entry number, never dropped quietly.

Search follows `models.search`: user text is reduced to letters and digits by `normalize` and only ever used as
a query parameter, as a prefix range over an indexed, normalised column.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import peewee as pw

from models.contacts import DirectoryEntry
from models.db import database
from models.search import normalize
from models.seed import npi_with_check_digit

MAX_FILE_BYTES = 200 * 1024 * 1024
CHUNK = 500
MAX_QUERY_LENGTH = 200
MAX_QUERY_WORDS = 6
MIN_CONTAINS_LENGTH = 3
#: Longest value a CharField holds everywhere (PostgreSQL enforces VARCHAR(255); SQLite does not).
MAX_FIELD = 255
_TOP = "\U0010ffff"

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
CONNECTION_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"

_FIELDS = ("npi", "name", "organization", "specialty", "endpoint_type", "endpoint", "use_code", "address_line",
           "city", "state", "postal_code", "country", "source", "name_norm", "organization_norm", "city_norm")
_DIRECT_ADDRESS = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


class DirectoryImportError(Exception):
    """A directory file that cannot be imported at all; the message says why and what was expected."""


@dataclass
class ImportReport:
    """What an import did. `skipped` holds (CSV line number or Bundle entry number, reason)."""

    imported: int
    updated: int
    skipped: list[tuple[int, str]] = field(default_factory=list)
    format: str = ""


class _Skip(Exception):
    """One row or entry that cannot be imported; the message is the reason shown to the user."""


# --- reading the file -------------------------------------------------------------------------------------


def import_directory_file(path: str | os.PathLike) -> ImportReport:
    """Import an NPPES Endpoint Reference File (CSV) or a FHIR Bundle (JSON) into the directory."""
    text = _read_text(Path(path))
    stripped = text.lstrip()
    if not stripped:
        raise DirectoryImportError(f"{path}: the file is empty; {_EXPECTED}")
    if stripped[0] in "{[":
        return _import_fhir(_parse_bundle(path, text))
    return _import_nppes(path, text)


_EXPECTED = ("expected a FHIR Bundle (JSON with \"resourceType\": \"Bundle\") or an NPPES Endpoint Reference File "
             "(CSV whose header has the columns \"NPI\" and \"Endpoint\")")


def _read_text(path: Path) -> str:
    """The whole file as text; every reason it cannot be read becomes one clear DirectoryImportError."""
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise DirectoryImportError(f"{path} is a folder, not a directory file")
        if size > MAX_FILE_BYTES:
            raise DirectoryImportError(
                f"{path} is {size / 1024 / 1024:.0f} MB; files over {MAX_FILE_BYTES // 1024 // 1024} MB are refused "
                "(split it, or import the state's extract)")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DirectoryImportError(f"{path}: no such file") from exc
    except OSError as exc:
        raise DirectoryImportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DirectoryImportError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}, offset {exc.start}); "
            "save it as UTF-8 and import it again") from exc


def _parse_bundle(path: str | os.PathLike, text: str) -> dict:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DirectoryImportError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    kind = document.get("resourceType") if isinstance(document, dict) else None
    if kind != "Bundle":
        found = f"resourceType {kind!r}" if kind else "no resourceType"
        raise DirectoryImportError(f"{path}: JSON but not a FHIR Bundle ({found}); {_EXPECTED}")
    if not isinstance(document.get("entry", []), list):
        raise DirectoryImportError(f"{path}: Bundle.entry must be a list of entries")
    return document


# --- writing entries --------------------------------------------------------------------------------------


def _clean(value: object) -> str:
    """One line of text, whitespace collapsed, cut to what the column holds."""
    return " ".join(str(value or "").split())[:MAX_FIELD]


@functools.lru_cache(maxsize=65536)
def _norm(text: str) -> str:
    """`normalize`, cached: directory files repeat the same organisations and cities thousands of times."""
    return normalize(text)


def _row(source: str, endpoint: str, **values: str) -> tuple:
    """A DirectoryEntry row as a tuple in `_FIELDS` order, with its search keys filled in."""
    values = {key: _clean(value) for key, value in values.items()}
    values.update(endpoint=endpoint, source=source)
    values.update(name_norm=_norm(values["name"]), organization_norm=_norm(values.get("organization", "")),
                  city_norm=_norm(values.get("city", "")))
    return tuple(values.get(name, "") for name in _FIELDS)


def _unique(rows: Iterable[tuple[int, tuple]], unit: str, skipped: list) -> Iterator[tuple]:
    """Rows whose (endpoint, NPI) is new in this file; a repeat is skipped, naming the first occurrence."""
    seen: dict[tuple[str, str], int] = {}
    endpoint_at, npi_at = _FIELDS.index("endpoint"), _FIELDS.index("npi")
    for where, row in rows:
        key = (row[endpoint_at], row[npi_at])
        if key in seen:
            skipped.append((where, f"same endpoint and NPI as {unit} {seen[key]}"))
            continue
        seen[key] = where
        yield row


def _chunks(rows: Iterable[tuple], size: int = CHUNK) -> Iterator[list[tuple]]:
    chunk: list[tuple] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _save_chunk(rows: list[tuple]) -> int:
    """Upsert rows on (endpoint, npi), keeping existing ids; return how many already existed."""
    endpoint_at, npi_at = _FIELDS.index("endpoint"), _FIELDS.index("npi")
    endpoints = list({row[endpoint_at] for row in rows})
    existing = set(
        DirectoryEntry.select(DirectoryEntry.endpoint, DirectoryEntry.npi)
        .where(DirectoryEntry.endpoint.in_(endpoints))
        .tuples()
    )
    fields = [DirectoryEntry._meta.fields[name] for name in _FIELDS]
    (DirectoryEntry.insert_many(rows, fields=fields)
     .on_conflict(conflict_target=[DirectoryEntry.endpoint, DirectoryEntry.npi],
                  preserve=[f for f in fields if f.name not in ("endpoint", "npi")])
     .execute())
    return sum((row[endpoint_at], row[npi_at]) in existing for row in rows)


def _save(rows: Iterable[tuple[int, tuple]], unit: str, report: ImportReport) -> ImportReport:
    """Write every row in one transaction; any exception rolls the whole import back."""
    with database.atomic():
        for chunk in _chunks(_unique(rows, unit, report.skipped)):
            updated = _save_chunk(chunk)
            report.updated += updated
            report.imported += len(chunk) - updated
    report.skipped.sort(key=lambda item: item[0])
    return report


def _valid_npi(value: str) -> str:
    """The NPI if it is 10 digits with a correct Luhn check digit, else _Skip."""
    if not re.fullmatch(r"\d{10}", value):
        raise _Skip(f"invalid NPI {value[:20]!r}: an NPI is 10 digits")
    if npi_with_check_digit(value[:9]) != value:
        raise _Skip(f"invalid NPI {value!r}: wrong check digit")
    return value


def _direct_address(value: str) -> str:
    """A Direct address without `mailto:`, or _Skip when it is not local@domain.tld."""
    address = value.strip()
    if address[:7].lower() == "mailto:":
        address = address[7:].strip()
    if not address:
        raise _Skip("no Direct address")
    if not _DIRECT_ADDRESS.fullmatch(address):
        raise _Skip(f"invalid Direct address {address[:80]!r}: expected name@domain.example")
    if len(address) > MAX_FIELD:
        raise _Skip(f"Direct address longer than {MAX_FIELD} characters")
    return address


# --- NPPES Endpoint Reference File ------------------------------------------------------------------------

_NPPES_COLUMNS = {
    "npi": "npi",
    "endpoint type": "endpoint_type",
    "endpoint": "endpoint",
    "endpoint description": "description",
    "affiliation legal business name": "business_name",
    "use code": "use_code",
    "affiliation address line one": "line1",
    "affiliation address line two": "line2",
    "affiliation address city": "city",
    "affiliation address state": "state",
    "affiliation address country": "country",
    "affiliation address postal code": "postal_code",
}
_SINGLE_LINE = ("npi", "endpoint", "endpoint_type", "city", "state", "postal_code")


