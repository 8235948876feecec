"""The database handle: deferred, so importing the models opens nothing and creates no folder.

`open_database()` binds the proxy to a real database (SQLite by default, PostgreSQL by URL), applies the
pragmas the store relies on and brings the schema up to date. Only this module knows which engine it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import peewee

database = peewee.DatabaseProxy()

#: SQLite settings every connection gets: WAL so the TUI's reader and the worker's writer do not block each
#: other, foreign keys enforced, and a busy timeout long enough for a second worker's write to finish.
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 5000,
    "synchronous": "normal",
    "cache_size": -32000,
}

#: How every transaction (`database.atomic()`) begins on SQLite: IMMEDIATE takes the write lock at BEGIN, waiting
#: out the busy timeout. A DEFERRED transaction that reads first (a lookup before an INSERT, as most do) and
#: then writes cannot wait: if another process wrote meanwhile, or holds the lock, its upgrade fails at once
#: with "database is locked" whatever the busy timeout (tests/test_concurrency.py). A transaction that only
#: reads and wants no lock asks for `database.atomic("DEFERRED")`.
SQLITE_LOCK_TYPE = "IMMEDIATE"


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class DatabaseError(Exception):
    """A database that cannot be opened or used as it is; the message says what to do."""


def sqlite_path_from_url(url: str) -> Path | None:
    """The file path of a `sqlite:///…` URL, or None for any other engine."""
    parsed = urlparse(url)
    if parsed.scheme not in ("sqlite", "sqlite3"):
        return None
    # sqlite:////abs/path -> path "//abs/path"; sqlite:///rel -> "/rel" (relative to cwd).
    path = unquote(parsed.path)
    path = path[1:] if path.startswith("/") else path
    return Path(path)


def sqlite_url(path: Path | str) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def _create_private_file(path: Path) -> None:
    """Create the SQLite file (and its folder) readable by its owner only: it holds PHI."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def make_database(url: str) -> peewee.Database:
    """A peewee database for `url` (not yet connected)."""
    sqlite_path = sqlite_path_from_url(url)
    if sqlite_path is not None:
        _create_private_file(sqlite_path)
        return peewee.SqliteDatabase(str(sqlite_path), pragmas=SQLITE_PRAGMAS, check_same_thread=False,
                                     lock_type=SQLITE_LOCK_TYPE)
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        from playhouse.db_url import connect

        try:
            return connect(url)
        except ImportError as exc:  # pragma: no cover - depends on the site's install
            raise DatabaseError("PostgreSQL needs the psycopg2 package: pip install psycopg2-binary") from exc
    raise DatabaseError(f"unsupported database URL scheme {parsed.scheme!r}: use sqlite:///PATH or postgresql://…")


def open_database(url: str, *, migrate: bool = True) -> peewee.Database:
    """Bind the models to the database at `url`, connect, and bring its schema up to date.

    Raises DatabaseError when the file is not a database or its schema is newer than this program.
    """
    from models.migrations import migrate_to_latest

    db = make_database(url)
    database.initialize(db)
    try:
        db.connect(reuse_if_open=True)
        if migrate:
            migrate_to_latest(db)
    except peewee.DatabaseError as exc:
        db.close()
        raise DatabaseError(f"cannot open the database at {url}: {exc}") from exc
    except DatabaseError:
        db.close()
        raise
    return db


def close_database() -> None:
    if database.obj is not None and not database.is_closed():
        database.close()


def starts_with(column: peewee.Field, key: str) -> peewee.Expression:
    """`column` begins with `key`, as a range an ordinary index serves (LIKE and GLOB need engine-specific
    collations to use one). U+10FFFF sorts after every character, in SQLite's bytes and PostgreSQL's "C"."""
    return (column >= key) & (column < key + "\U0010ffff")


def is_sqlite() -> bool:
    return isinstance(database.obj, peewee.SqliteDatabase)


def bulk_insert(model: type[BaseModel], fields: list[str], rows: list[tuple]) -> None:
    """Insert many rows fast. Seeding 100,000 patients writes millions of rows; peewee's per-value query
    building would dominate, so this hands the driver one prepared statement and the plain tuples."""
    if not rows:
        return
    db = database.obj
    columns = [model._meta.fields[name].column_name for name in fields]
    open_q, close_q = db.quote[0], db.quote[1]
    quoted = ", ".join(f"{open_q}{c}{close_q}" for c in columns)
    placeholders = ", ".join([db.param] * len(columns))
    sql = f"INSERT INTO {open_q}{model._meta.table_name}{close_q} ({quoted}) VALUES ({placeholders})"
    flags = [i for i, name in enumerate(fields) if isinstance(model._meta.fields[name], peewee.BooleanField)]
    if flags and not isinstance(db, peewee.SqliteDatabase):  # PostgreSQL will not take 0/1 for a boolean
        rows = [tuple(bool(v) if i in flags and v is not None else v for i, v in enumerate(row)) for row in rows]
    db.cursor().executemany(sql, rows)
    if "id" in fields and isinstance(db, peewee.PostgresqlDatabase):  # ids given: move the sequence past them
        table = model._meta.table_name
        db.execute_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                       f"(SELECT COALESCE(MAX(id), 1) FROM {open_q}{table}{close_q}))")
