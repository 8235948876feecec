"""Patient search as the user types: 2–3 letters of a name, "last, first", an MRN or a date of birth.

Every query is a prefix range over an indexed, normalised column (`key >= q AND key < q + U+10FFFF`), one small
query per kind of match, each with a LIMIT. On PostgreSQL those columns compare in COLLATE "C" (migration 8), so
a range means what it means in SQLite, code-point prefixes in code-point order, whatever the database's own
collation, and the same btree indexes serve it (tests/test_search_postgres.py checks both).

User text never reaches SQL as text: it is reduced to letters and digits by `normalize` and passed as a
parameter, so `o'brien`, quotes, `*` or emoji cannot break a query.

Ranking: date of birth, MRN, then exact last name, last-name prefix, exact first name, first-name prefix,
then a later part of a multi-part name ("lopez" in Garcia-Lopez). Within a rank: by the name matched (last
then first, or first then last), then birth date; MRNs in MRN order.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass

import peewee as pw

from models.db import starts_with
from models.patients import Patient, PatientNameToken
from models.text import normalize

DEFAULT_LIMIT = 50
MAX_QUERY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class PatientHit:
    id: int
    mrn: str
    last_name: str
    first_name: str
    birth_date: dt.date
    sex: str

    def as_json(self) -> dict:
        data = asdict(self)
        data["birth_date"] = self.birth_date.isoformat()
        return data


_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%m-%d-%Y", "%d.%m.%Y", "%Y%m%d", "%m%d%Y", "%m/%d/%y")


def parse_birth_date(text: str) -> dt.date | None:
    text = text.strip()
    if not re.fullmatch(r"[\d/.\-]{6,10}", text):
        return None
    for fmt in _DATE_FORMATS:
        try:
            parsed = dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
        if fmt == "%m/%d/%y" and parsed.year > dt.date.today().year:
            parsed = parsed.replace(year=parsed.year - 100)
        return parsed
    return None


_FIELDS = (Patient.id, Patient.mrn, Patient.last_name, Patient.first_name, Patient.birth_date, Patient.sex)
# Each kind of match is ordered along the index that finds it, so SQLite reads rows in order and stops at
# the LIMIT instead of sorting every "Jam…" or "10…" in a million patients.
BY_LAST = (Patient.last_norm, Patient.first_norm, Patient.birth_date, Patient.id)
BY_FIRST = (Patient.first_norm, Patient.last_norm, Patient.birth_date, Patient.id)
BY_MRN = (Patient.mrn,)
#: How many name-part matches to consider; a part is rarely shared by more patients than this.
TOKEN_CANDIDATES = 400



def _candidates(query: str) -> list[tuple[pw.Expression, tuple]]:
    """The WHERE clauses to try, best rank first, each with the order that its index gives for free."""
    text = query.strip()
    clauses: list[tuple[pw.Expression, tuple]] = []
    birth = parse_birth_date(text)
    if birth is not None:
        clauses.append((Patient.birth_date == birth, BY_LAST))
    digits = re.sub(r"\D", "", text)
    if digits and digits == normalize(text):
        clauses += [(Patient.mrn == digits, BY_MRN), (starts_with(Patient.mrn, digits), BY_MRN)]
    if "," in text:
        last, first = (normalize(part) for part in text.split(",", 1))
        if last and first:
            clauses += [((Patient.last_norm == last) & starts_with(Patient.first_norm, first), BY_LAST),
                        (starts_with(Patient.last_norm, last) & starts_with(Patient.first_norm, first), BY_LAST)]
        elif last:
            clauses += [(Patient.last_norm == last, BY_LAST), (starts_with(Patient.last_norm, last), BY_LAST)]
        return clauses
    words = [normalize(w) for w in text.split()]
    words = [w for w in words if w]
    whole = "".join(words)
    if not whole:
        return clauses
    if len(words) == 2:  # "first last" or "last first"
        first, last = words
        clauses += [((Patient.last_norm == last) & starts_with(Patient.first_norm, first), BY_LAST),
                    ((Patient.last_norm == first) & starts_with(Patient.first_norm, last), BY_LAST),
                    (starts_with(Patient.last_norm, last) & starts_with(Patient.first_norm, first), BY_LAST),
                    (starts_with(Patient.last_norm, first) & starts_with(Patient.first_norm, last), BY_LAST)]
    clauses += [
        (Patient.last_norm == whole, BY_LAST),
        (starts_with(Patient.last_norm, whole), BY_LAST),
        (Patient.first_norm == whole, BY_FIRST),
        (starts_with(Patient.first_norm, whole), BY_FIRST),
    ]
    if len(words) == 1:
        token_ids = (
            PatientNameToken.select(PatientNameToken.patient)
            .where(starts_with(PatientNameToken.token, whole))
            .order_by(PatientNameToken.token, PatientNameToken.patient)
            .limit(TOKEN_CANDIDATES)
        )
        clauses.append((Patient.id.in_(token_ids), BY_LAST))
    return clauses


def search_patients(query: str, limit: int = DEFAULT_LIMIT) -> list[PatientHit]:
    """Patients matching what the user typed, best first; an empty list for input that matches nothing."""
    query = (query or "")[:MAX_QUERY_LENGTH]
    hits: dict[int, PatientHit] = {}
    for clause, order in _candidates(query):
        if len(hits) >= limit:
            break
        rows = (
            Patient.select(*_FIELDS)
            .where(clause)
            .order_by(*order)
            .limit(limit)
            .tuples()
        )
        for row in rows:
            if row[0] not in hits:
                hits[row[0]] = PatientHit(*row)
                if len(hits) >= limit:
                    break
    return list(hits.values())
