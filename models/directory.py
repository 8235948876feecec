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
from models.db import database, starts_with
from models.safe_text import storable
from models.search import normalize
from models.seed import npi_with_check_digit

MAX_FILE_BYTES = 200 * 1024 * 1024
CHUNK = 500
MAX_QUERY_LENGTH = 200
MAX_QUERY_WORDS = 6
MIN_CONTAINS_LENGTH = 3
#: Longest value a CharField holds everywhere (PostgreSQL enforces VARCHAR(255); SQLite does not).
MAX_FIELD = 255

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
CONNECTION_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"

_FIELDS = ("npi", "name", "organization", "specialty", "endpoint_type", "endpoint", "use_code", "address_line",
           "city", "state", "postal_code", "country", "source", "name_norm", "organization_norm", "city_norm")
#: local@domain.tld: RFC 5322 dot-atom characters before the @, DNS labels after it (at least two).
_DIRECT_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


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
    """One line of text, whitespace collapsed, without NUL (`storable`), cut to what the column holds."""
    return " ".join(storable(str(value or "")).split())[:MAX_FIELD]


@functools.lru_cache(maxsize=65536)
def _norm(text: str) -> str:
    """`normalize`, cached: directory files repeat the same organisations and cities thousands of times."""
    return normalize(text)


def _row(source: str, endpoint: str, *, npi: str = "", name: str = "", organization: str = "",
         specialty: str = "", endpoint_type: str = "", use_code: str = "", address_line: str = "", city: str = "",
         state: str = "", postal_code: str = "", country: str = "") -> tuple:
    """A DirectoryEntry row as a tuple in `_FIELDS` order, with its search keys filled in."""
    name, organization, city = _clean(name), _clean(organization), _clean(city)
    endpoint = storable(endpoint)  # rows are written with executemany, past the database layer's NUL filter
    return (npi, name, organization, _clean(specialty), _clean(endpoint_type), endpoint, _clean(use_code),
            _clean(address_line), city, _clean(state), _clean(postal_code), _clean(country), source,
            _norm(name), _norm(organization), _norm(city))


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


def _upsert_sql(sample: tuple) -> str:
    """The INSERT … ON CONFLICT (endpoint, npi) DO UPDATE statement for one row, built by peewee.

    It is run with `executemany`: peewee building a 500-row VALUES list value by value costs more than the
    database's work on it (three quarters of a 100,000-row import)."""
    fields = [DirectoryEntry._meta.fields[name] for name in _FIELDS]
    query = (DirectoryEntry.insert_many([sample], fields=fields)
             .on_conflict(conflict_target=[DirectoryEntry.endpoint, DirectoryEntry.npi],
                          preserve=[f for f in fields if f.name not in ("endpoint", "npi")]))
    sql, params = query.sql()
    if len(params) != len(_FIELDS):
        raise RuntimeError("the directory upsert must take exactly one parameter per column")
    return sql


def _save(rows: Iterable[tuple[int, tuple]], unit: str, report: ImportReport) -> ImportReport:
    """Write every row in one transaction, in chunks; any exception rolls the whole import back.
    The keys already stored are read once, so telling updates from new entries costs no query per chunk."""
    endpoint_at, npi_at = _FIELDS.index("endpoint"), _FIELDS.index("npi")
    with database.atomic():
        existing = set(DirectoryEntry.select(DirectoryEntry.endpoint, DirectoryEntry.npi).tuples())
        sql = None
        for chunk in _chunks(_unique(rows, unit, report.skipped)):
            sql = sql or _upsert_sql(chunk[0])
            database.cursor().executemany(sql, chunk)
            updated = sum((row[endpoint_at], row[npi_at]) in existing for row in chunk)
            report.updated += updated
            report.imported += len(chunk) - updated
    report.skipped.sort(key=lambda item: item[0])
    return report


def _valid_npi(value: str) -> str:
    """The NPI if it is 10 digits with a correct Luhn check digit, else _Skip."""
    if not re.fullmatch(r"[0-9]{10}", value):
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


def _import_nppes(path: str | os.PathLike, text: str) -> ImportReport:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except csv.Error as exc:
        raise DirectoryImportError(f"{path}: line 1: unreadable CSV header: {exc}") from exc
    columns = _nppes_columns(path, header)
    report = ImportReport(imported=0, updated=0, skipped=[], format="nppes")
    return _save(_nppes_records(path, reader, columns, len(header), report.skipped), "line", report)


def _nppes_columns(path: str | os.PathLike, header: list[str]) -> dict[str, int]:
    """Where each column we use is, by header name (case and surrounding spaces ignored)."""
    positions: dict[str, int] = {}
    for i, name in enumerate(header):
        positions.setdefault(name.strip().casefold(), i)
    if "npi" not in positions or "endpoint" not in positions:
        found = ", ".join(repr(name.strip()[:40]) for name in header[:8]) or "nothing"
        more = ", …" if len(header) > 8 else ""
        raise DirectoryImportError(
            f"{path}: not a provider directory file: {_EXPECTED}; the first line has {found}{more}")
    return {key: positions[name] for name, key in _NPPES_COLUMNS.items() if name in positions}


def _nppes_records(path, reader, columns: dict[str, int], width: int,
                   skipped: list[tuple[int, str]]) -> Iterator[tuple[int, tuple]]:
    """(first physical line, row) for each good record; a bad record goes to `skipped` with its line."""
    while True:
        first = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DirectoryImportError(f"{path}: line {first}: unreadable CSV: {exc}") from exc
        if not any(value.strip() for value in record):
            continue  # a blank line
        try:
            yield first, _nppes_row(record, columns, width, (first, reader.line_num))
        except _Skip as exc:
            skipped.append((first, str(exc)))


def _nppes_row(record: list[str], columns: dict[str, int], width: int, lines: tuple[int, int]) -> tuple:
    """One endpoint-file record as a DirectoryEntry row, or _Skip saying what is wrong with it."""
    spans = lines[1] > lines[0]
    hint = f" (the record runs from line {lines[0]} to {lines[1]}: check for an unbalanced quote)" if spans else ""
    if len(record) != width:
        raise _Skip(f"{len(record)} columns where the header has {width}{hint}")

    def get(key: str) -> str:
        return record[columns[key]].strip() if key in columns else ""

    if spans and any(ch in get(key) for key in _SINGLE_LINE for ch in "\r\n"):
        raise _Skip(f"line break inside a field{hint}")
    npi = _valid_npi(get("npi"))
    kind = get("endpoint_type").upper()
    endpoint = get("endpoint")
    if not endpoint:
        raise _Skip("empty endpoint")
    if kind == "DIRECT":
        endpoint = _direct_address(endpoint)
    elif len(endpoint) > MAX_FIELD:
        raise _Skip(f"endpoint longer than {MAX_FIELD} characters")
    business = get("business_name")
    return _row(
        "nppes", endpoint, npi=npi, name=business or get("description") or endpoint, organization=business,
        endpoint_type=kind, use_code=get("use_code"),
        address_line=", ".join(part for part in (get("line1"), get("line2")) if part),
        city=get("city"), state=get("state"), postal_code=get("postal_code"), country=get("country"),
    )


# --- FHIR Bundle ------------------------------------------------------------------------------------------


class _Bundle:
    """The Bundle's resources with their entry numbers, and the references that find them."""

    def __init__(self, document: dict, skipped: list[tuple[int, str]]) -> None:
        self.resources: list[tuple[int, dict]] = []
        self.by_number: dict[int, dict] = {}
        self.by_reference: dict[str, tuple[int, dict]] = {}
        for number, entry in enumerate(document.get("entry") or [], start=1):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                skipped.append((number, "entry has no resource with a resourceType"))
                continue
            self.resources.append((number, resource))
            self.by_number[number] = resource
            if isinstance(resource.get("id"), str):
                self.by_reference[f"{resource['resourceType']}/{resource['id']}"] = (number, resource)
            if isinstance(entry.get("fullUrl"), str) and entry["fullUrl"]:
                self.by_reference[entry["fullUrl"]] = (number, resource)

    def of_type(self, kind: str) -> list[tuple[int, dict]]:
        return [(number, resource) for number, resource in self.resources if resource["resourceType"] == kind]

    def resolve(self, reference: object, kind: str) -> tuple[int, dict] | None:
        """(entry number, resource) a Reference points at; None for no reference or a display-only one;
        _Skip when it points at nothing of that type in the Bundle."""
        if reference is None:
            return None
        target = reference.get("reference") if isinstance(reference, dict) else None
        if target is None and isinstance(reference, dict):
            return None
        if not isinstance(target, str) or not target:
            raise _Skip(f"malformed {kind} reference")
        found = self.by_reference.get(target) or self.by_reference.get(_reference_tail(target))
        if found is None or found[1]["resourceType"] != kind:
            raise _Skip(f"{kind} reference {target[:80]!r} matches no {kind} in the bundle")
        return found


def _reference_tail(target: str) -> str:
    """`Type/id` of an absolute or versioned reference (`https://x/fhir/Practitioner/p1/_history/2`)."""
    return "/".join(target.split("/_history/")[0].rstrip("/").split("/")[-2:])


def _import_fhir(document: dict) -> ImportReport:
    report = ImportReport(imported=0, updated=0, skipped=[], format="fhir")
    bundle = _Bundle(document, report.skipped)
    return _save(_fhir_rows(bundle, report.skipped), "entry", report)


def _fhir_rows(bundle: _Bundle, skipped: list[tuple[int, str]]) -> list[tuple[int, tuple]]:
    """Rows from roles first, then organisation-level endpoints, then endpoints nothing references."""
    addresses: dict[int, str] = {}
    for number, endpoint in bundle.of_type("Endpoint"):
        try:
            addresses[number] = _endpoint_address(endpoint)
        except _Skip as exc:
            skipped.append((number, str(exc)))
    by_role: set[int] = set()
    referenced: set[int] = set()
    rows: list[tuple[int, tuple]] = []
    for number, role in bundle.of_type("PractitionerRole"):
        endpoints = _endpoint_refs(bundle, role, number, skipped)
        by_role.update(endpoints)
        rows += _guarded(skipped, number, role, lambda: _role_rows(bundle, role, endpoints, addresses))
    for number, org in bundle.of_type("Organization"):
        endpoints = [n for n in _endpoint_refs(bundle, org, number, skipped) if n not in by_role]
        rows += _guarded(skipped, number, org, lambda: _organization_rows(org, endpoints, addresses))
        referenced.update(endpoints)
    referenced |= by_role
    for number, endpoint in bundle.of_type("Endpoint"):
        if number in addresses and number not in referenced:
            rows += _guarded(skipped, number, endpoint,
                             lambda: [_lone_endpoint_row(bundle, endpoint, addresses[number])])
    return rows


def _guarded(skipped: list, number: int, resource: dict, build) -> list[tuple[int, tuple]]:
    """The rows `build()` makes for entry `number`, or none and a reason when the entry is bad."""
    try:
        return [(number, row) for row in build()]
    except _Skip as exc:
        skipped.append((number, str(exc)))
    except (AttributeError, TypeError) as exc:  # a resource whose shape is not FHIR's
        skipped.append((number, f"malformed {resource['resourceType']}: {exc}"))
    return []


def _endpoint_refs(bundle: _Bundle, owner: dict, number: int, skipped: list) -> list[int]:
    """Entry numbers of the Endpoints `owner` lists; each broken reference is reported and left out."""
    refs = owner.get("endpoint") or []
    found = []
    for ref in refs if isinstance(refs, list) else [refs]:
        try:
            target = bundle.resolve(ref, "Endpoint")
        except _Skip as exc:
            skipped.append((number, str(exc)))
            continue
        if target is not None:
            found.append(target[0])
    return found


def _endpoint_address(endpoint: dict) -> str:
    """The Direct address of a usable Direct endpoint, or _Skip saying why it is not one."""
    codings = _codings(endpoint.get("connectionType"))
    if not any(c.get("code") == "direct-project" and c.get("system", CONNECTION_TYPE_SYSTEM) == CONNECTION_TYPE_SYSTEM
               for c in codings):
        kinds = ", ".join(repr(str(c.get("code"))) for c in codings) or "none"
        raise _Skip(f"not a Direct endpoint (connection type {kinds}, expected 'direct-project')")
    if endpoint.get("status") in ("off", "entered-in-error"):
        raise _Skip(f"endpoint status is {endpoint['status']!r}")
    address = endpoint.get("address")
    if not isinstance(address, str) or not address.strip():
        raise _Skip("Direct endpoint has no address")
    return _direct_address(address)


def _codings(value: object) -> list[dict]:
    """The Codings in a Coding (R4 Endpoint.connectionType), a CodeableConcept, or a list of them (R5)."""
    codings: list[dict] = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and isinstance(item.get("coding"), list):
            codings += [c for c in item["coding"] if isinstance(c, dict)]
        elif isinstance(item, dict):
            codings.append(item)
    return codings


def _role_rows(bundle: _Bundle, role: dict, endpoints: list[int], addresses: dict[int, str]) -> list[tuple]:
    practitioner = _resource(bundle.resolve(role.get("practitioner"), "Practitioner"))
    organization = _resource(bundle.resolve(role.get("organization"), "Organization"))
    person = _human_name(practitioner) if practitioner else _display(role.get("practitioner"))
    org_name = _clean(organization.get("name")) if organization else _display(role.get("organization"))
    npi = _npi(practitioner) or _npi(organization)
    place = _address(organization) or _address(practitioner)
    return [
        _row("fhir", addresses[n], npi=npi, name=person or org_name or _endpoint_name(bundle, n, addresses),
             organization=org_name, specialty=_specialty(role), endpoint_type="DIRECT", **place)
        for n in endpoints if n in addresses
    ]


def _organization_rows(org: dict, endpoints: list[int], addresses: dict[int, str]) -> list[tuple]:
    name, npi, place = _clean(org.get("name")), _npi(org), _address(org)
    return [_row("fhir", addresses[n], npi=npi, name=name or addresses[n], organization=name,
                 endpoint_type="DIRECT", **place)
            for n in endpoints if n in addresses]


def _lone_endpoint_row(bundle: _Bundle, endpoint: dict, address: str) -> tuple:
    """An Endpoint nothing points at still tells where to send: named after itself or its managing org."""
    reference = endpoint.get("managingOrganization")
    org = _resource(bundle.resolve(reference, "Organization"))
    org_name = _clean(org.get("name")) if org else _display(reference)
    return _row("fhir", address, npi=_npi(org), name=_clean(endpoint.get("name")) or org_name or address,
                organization=org_name, endpoint_type="DIRECT", **_address(org))


def _resource(found: tuple[int, dict] | None) -> dict:
    return found[1] if found else {}


def _display(reference: object) -> str:
    return _clean(reference.get("display")) if isinstance(reference, dict) else ""


def _endpoint_name(bundle: _Bundle, number: int, addresses: dict[int, str]) -> str:
    return _clean(bundle.by_number[number].get("name")) or addresses[number]


def _strings(value: object) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [item.strip() for item in items if isinstance(item, str) and item.strip()]


def _human_name(practitioner: dict) -> str:
    """"Ana Ruiz, MD": given and family names, then suffixes (credentials). Prefixes such as "Dr." are left
    out so that typing the first name finds the entry (search matches the start of the name)."""
    names = [n for n in practitioner.get("name") or [] if isinstance(n, dict)]
    if not names:
        return ""
    chosen = next((n for n in names if n.get("use") == "official"), names[0])
    core = " ".join(_strings(chosen.get("given")) + _strings(chosen.get("family")))
    if not core:
        return _clean(chosen.get("text"))
    return _clean(", ".join([core] + _strings(chosen.get("suffix"))))


def _npi(resource: dict) -> str:
    """The resource's NPI identifier ("" when it has none); _Skip when it has one that is not valid."""
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == NPI_SYSTEM:
            return _valid_npi(str(identifier.get("value") or "").strip())
    return ""


def _address(resource: dict) -> dict[str, str]:
    addresses = resource.get("address") or []
    first = addresses[0] if isinstance(addresses, list) and addresses else addresses
    if not isinstance(first, dict) or not first:
        return {}
    return dict(address_line=", ".join(_strings(first.get("line"))), city=_clean(first.get("city")),
                state=_clean(first.get("state")), postal_code=_clean(first.get("postalCode")),
                country=_clean(first.get("country")))


def _specialty(role: dict) -> str:
    specialties = role.get("specialty") or []
    concept = specialties[0] if isinstance(specialties, list) and specialties else {}
    if not isinstance(concept, dict):
        return ""
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    return _clean((codings[0].get("display") if codings else "") or concept.get("text"))


# --- search -----------------------------------------------------------------------------------------------

_ORDER = (DirectoryEntry.name_norm, DirectoryEntry.id)
_NORM_COLUMNS = (DirectoryEntry.name_norm, DirectoryEntry.organization_norm, DirectoryEntry.city_norm)



def _every_word(words: list[str], match) -> pw.Expression:
    """Each word matches the name, organisation or city: "cardio springfield" finds Springfield cardiologists."""
    clause = None
    for word in words:
        either = match(_NORM_COLUMNS[0], word) | match(_NORM_COLUMNS[1], word) | match(_NORM_COLUMNS[2], word)
        clause = either if clause is None else clause & either
    return clause


def _contains(column: pw.Field, key: str) -> pw.Expression:
    return column.contains(key)  # key is letters and digits only, so it holds no LIKE wildcard


def _clauses(text: str) -> list[pw.Expression]:
    """The WHERE clauses to try, best rank first: NPI, name, organisation, city, every word, words inside."""
    words = [w for w in (normalize(part) for part in text.split()) if w][:MAX_QUERY_WORDS]
    whole = "".join(words)
    if not whole:
        return []
    clauses: list[pw.Expression] = []
    if re.fullmatch(r"[0-9]+", whole):
        if len(whole) == 10:
            clauses.append(DirectoryEntry.npi == whole)
        clauses.append(starts_with(DirectoryEntry.npi, whole))
    clauses += [starts_with(column, whole) for column in _NORM_COLUMNS]
    if len(words) > 1:
        clauses.append(_every_word(words, starts_with))
    if all(len(word) >= MIN_CONTAINS_LENGTH for word in words):
        clauses.append(_every_word(words, _contains))  # "cardio" inside "Valley Cardiology"; last resort
    return clauses


def search_directory(text: str, limit: int = 50) -> list[DirectoryEntry]:
    """Entries matching what the user typed, best first; blank text lists the first `limit` by name.
    Input that matches nothing (or is only punctuation or emoji) gives an empty list, never an error."""
    if limit <= 0:
        return []
    text = (text or "")[:MAX_QUERY_LENGTH]
    if not text.strip():
        return list(DirectoryEntry.select().order_by(*_ORDER).limit(limit))
    found: dict[int, DirectoryEntry] = {}
    for clause in _clauses(text):
        for entry in DirectoryEntry.select().where(clause).order_by(*_ORDER).limit(limit):
            found.setdefault(entry.id, entry)
            if len(found) >= limit:
                return list(found.values())
    return list(found.values())
