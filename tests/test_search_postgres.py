"""Patient search on PostgreSQL under a linguistic collation: the same hits in the same order as SQLite, and
every query an index scan.

Runs when REFERDESK_TEST_PG names a server (see conftest.py); the database it makes uses an ICU en-US collation,
as a practice's server might, whatever the test server's own default is.
"""

from __future__ import annotations

import os
import re

import pytest

from models.db import close_database, database, open_database, sqlite_url
from models.migrations import _m008_search_keys_and_indexes, migrate_to_latest
from models.patients import Patient
from models.search import search_patients
from models.seed import seed_patients

SERVER = os.environ.get("REFERDESK_TEST_PG", "").rstrip("/")
pytestmark = pytest.mark.skipif(not SERVER, reason="needs a PostgreSQL server: set REFERDESK_TEST_PG")

SEEDED = 3000
#: Names whose search keys a linguistic collation orders or matches differently from code-point order.
PEOPLE = [
    # mrn, last, first, birth date
    ("9000001", "Æbel", "Astrid", "1970-01-02"),
    ("9000002", "Aebi", "Hans", "1971-02-03"),
    ("9000003", "Kowalski", "Łukasz", "1980-03-04"),
    ("9000004", "Lukas", "Maria", "1981-04-05"),
    ("9000005", "Øberg", "Lars", "1982-05-06"),
    ("9000006", "Oberg", "Lena", "1983-06-07"),
    ("9000007", "Børresen", "Kari", "1984-07-08"),
    ("9000008", "Bzura", "Jan", "1985-08-09"),
    ("9000009", "Đorđević", "Ana", "1986-09-10"),
    ("9000010", "Dorsey", "Ana", "1987-10-11"),
    ("9000011", "Papadopoulos", "Νίκος", "1988-11-12"),
    ("9000012", "Smith", "John", "1961-04-12"),
    ("9000013", "Smith-Jones", "Mary", "1975-02-28"),
    ("9000014", "O'Brien", "Sean", "1983-11-30"),
]
QUERIES = [
    "ae", "æ", "æb", "lu", "łu", "ł", "ob", "øb", "ø", "o", "b", "bo", "bø", "bz", "d", "do", "đo", "đ", "ka", "an",
    "νί", "ν", "sm", "smith", "smith, jo", "jo", "ma", "ng", "ga", "ng, m", "john smith", "bri", "jones",
    "9000001", "900000", "9", "1000", "100012", "01/02/1970", "1983-11-30", "zz", "o'b", "*", "%", "_", "😀",
]


def _fill() -> None:
    seed_patients(SEEDED)
    for mrn, last, first, born in PEOPLE:
        Patient.create(mrn=mrn, last_name=last, first_name=first, birth_date=born, sex="U")


def _hits(query: str) -> list[str]:
    return [hit.mrn for hit in search_patients(query)]


def _admin(sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(f"{SERVER}/postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def on_sqlite(tmp_path_factory) -> dict[str, list[str]]:
    """What SQLite answers to each query, from the same patients."""
    open_database(sqlite_url(tmp_path_factory.mktemp("search-sqlite") / "referdesk.db"))
    try:
        _fill()
        return {query: _hits(query) for query in QUERIES}
    finally:
        close_database()


@pytest.fixture(scope="module")
def icu_url():
    """A database in ICU en-US collation holding the same patients, migrated and analysed."""
    name = f"rd_test_search_icu_{os.getpid()}"
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(f"CREATE DATABASE \"{name}\" LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8' TEMPLATE template0")
    url = f"{SERVER}/{name}"
    try:
        open_database(url)
        _fill()
        database.execute_sql("ANALYZE")
        close_database()
        yield url
    finally:
        close_database()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def icu(icu_url):
    db = open_database(icu_url)
    yield db
    close_database()


def test_the_database_really_has_a_linguistic_collation(icu):
    # Without migration 8 this collation would find "Æbel" for "ae" and sort "Børresen" before "Bzura".
    assert icu.execute_sql("SELECT 'æbel' >= 'ae' AND 'æbel' < 'ae' || chr(1114111), 'bø' < 'bz'").fetchone() == (
        True, True)
    assert icu.execute_sql("SELECT daticulocale FROM pg_database WHERE datname = current_database()").fetchone() == (
        "en-US",)


@pytest.mark.parametrize("query", QUERIES)
def test_search_gives_what_sqlite_gives(on_sqlite, icu, query):
    assert _hits(query) == on_sqlite[query]


def test_prefixes_are_exact_code_point_prefixes(icu):
    # Under en-US "ae" would also take "æbel" as a prefix match, "ł" would be "l", and "bø" would find "Bzura".
    assert _hits("ae") == ["9000002", "9000001"]  # Aebi by name, then Æbel by its spelled-out key only
    assert _hits("æ") == ["9000001"]
    assert _hits("bø") == ["9000007"] and _hits("bz") == ["9000008"]
    assert _hits("đo") == ["9000009"]
    assert "9000003" in _hits("łu") and "9000004" not in _hits("łu")
    assert "9000005" not in _hits("ob")
    assert _hits("νί") == ["9000011"]


def test_search_keys_are_in_byte_order_and_migration_8_is_idempotent(icu):
    collations = dict(icu.execute_sql(
        "SELECT table_name || '.' || column_name, collation_name FROM information_schema.columns "
        "WHERE (table_name, column_name) IN (('patient', 'last_norm'), ('patient', 'first_norm'), "
        "('patient', 'mrn'), ('patient_name_token', 'token'))").fetchall())
    assert collations == {"patient.last_norm": "C", "patient.first_norm": "C", "patient.mrn": "C",
                          "patient_name_token.token": "C"}
    with icu.atomic():
        _m008_search_keys_and_indexes(icu)  # a rerun changes nothing and does not fail
    assert migrate_to_latest(icu) == []
    indexes = {index.name: index.columns for index in icu.get_indexes("patient")}
    assert indexes["patient_last_first"] == ["last_norm", "first_norm", "birth_date", "id"]
    assert indexes["patient_first_last"] == ["first_norm", "last_norm", "birth_date", "id"]
    assert _hits("bø") == ["9000007"]


def _plans(db, query: str) -> list[str]:
    """The plan of every statement `search_patients(query)` runs, with sequential scans priced out: a statement
    that no index can serve still shows a Seq Scan. The statements are taken at the database's execute_sql (the
    real one runs), not from peewee's query log: that log is redacted once the command line has set logging up."""
    seen: list[tuple[str, tuple]] = []
    real = db.execute_sql

    def noting(sql, params=None, *args, **kwargs):
        if str(sql).lstrip().upper().startswith("SELECT"):
            seen.append((sql, params))
        return real(sql, params, *args, **kwargs)

    db.execute_sql = noting
    try:
        search_patients(query)
    finally:
        del db.execute_sql
    assert seen, "search ran no statement"
    plans = []
    with db.atomic():
        db.execute_sql("SET LOCAL enable_seqscan = off")
        for sql, params in seen:
            plans.append("\n".join(row[0] for row in db.execute_sql("EXPLAIN " + sql, params).fetchall()))
    return plans


@pytest.mark.parametrize("query, index", [
    ("sm", "patient_last_first"),  # last-name prefix
    ("sea", "patient_first_last"),  # first-name prefix
    ("smith, jo", "patient_last_first"),
    ("bri", "patient_name_token_pkey"),  # a later part of a name
    ("9000001", "patient_mrn"),
    ("900000", "patient_mrn"),
    ("01/02/1970", "patient_birth_date"),
])
def test_every_search_statement_is_an_index_scan(icu, query, index):
    plans = _plans(icu, query)
    for plan in plans:
        assert "Seq Scan" not in plan, plan
        assert re.search(r"Index (Only )?Scan", plan), plan
    assert any(f" on {index}" in plan or f"using {index}" in plan for plan in plans), plans
