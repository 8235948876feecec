"""The database handle: deferred, so importing the models opens nothing and creates no folder.

`open_database()` binds the proxy to a real database (SQLite by default, PostgreSQL by URL), applies the
pragmas the store relies on and brings the schema up to date. Only this module knows which engine it is.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlparse

import peewee

from models.safe_text import storable_params

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


class _NoNulText:
    """Every text value a statement carries without NUL (`models.safe_text.storable`): PostgreSQL text cannot
    hold one, and SQLite keeps the same text so the two engines never differ."""

    def execute_sql(self, sql, params=None):
        return super().execute_sql(sql, storable_params(params) if params else params)


class SqliteStore(_NoNulText, peewee.SqliteDatabase):
    def rollback(self):
        # On SQLITE_FULL (and some I/O errors) SQLite rolls the transaction back itself; peewee's ROLLBACK would
        # then fail with "no transaction is active" and hide the error that matters ("database or disk is full").
        connection = self._state.conn
        if connection is not None and not connection.in_transaction:
            return None
        return super().rollback()


class PostgresqlStore(_NoNulText, peewee.PostgresqlDatabase):
    pass


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class DatabaseError(Exception):
    """A database that cannot be opened or used as it is; the message says what to do."""


class StorageError(DatabaseError):
    """A write the database refused for a reason outside referdesk (disk full, locked too long); nothing of it
    was kept. The message says so and what to do."""


def database_problem(exc: BaseException) -> str | None:
    """What to tell the user about a database error that is not a bug — the disk is full, another process
    holds the lock, the file cannot be written — or None for any other error. Every message says that
    nothing was saved (the transaction was rolled back) and what to do."""
    text = str(exc).lower()
    # peewee wraps the driver's exception as its first argument; psycopg2's carries the SQLSTATE as pgcode
    candidates = [exc, *(getattr(exc, "args", ()) or ())[:1], exc.__cause__, exc.__context__]
    code = next((c.pgcode for c in candidates if getattr(c, "pgcode", None)), None)
    if "database or disk is full" in text or "no space left" in text or code == "53100":
        return ("the database is full (no space left on the disk that holds it): nothing was saved. Free some "
                "disk space, then try again.")
    if "database is locked" in text or "database table is locked" in text or code in ("55P03", "40P01"):
        return ("the database is busy: another referdesk process kept it locked for too long. Nothing was "
                "saved; try again in a moment (if this keeps happening, look for a stuck referdesk process).")
    if "readonly database" in text or "read-only" in text:
        return ("the database cannot be written (read-only file or folder): nothing was saved. Check the "
                "permissions of the data folder.")
    if "disk i/o error" in text or code == "58030":
        return ("the disk holding the database reported an input/output error: nothing was saved. Check the "
                "disk, then try again.")
    return None


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


#: SQLite's companions of a database file: they hold the same PHI (the WAL holds recent writes in full).
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_folder(path: Path) -> Path:
    """`path` as a folder only its owner can enter: created 0700 whatever the umask, or tightened to 0700 when
    it exists with looser modes — it holds PHI, and a folder others can list lets them see (or, with write,
    replace) the files in it. A folder that is not ours to tighten (another owner, a sticky shared folder like
    /tmp, the home folder or /) is left as it is, with a warning in the log: the files in it are still 0600."""
    path = Path(path)
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        return path
    info = os.stat(path)
    if stat.S_IMODE(info.st_mode) & 0o077:
        resolved = path.resolve()
        shared = info.st_mode & stat.S_ISVTX or resolved in (Path.home().resolve(), Path("/"))
        if info.st_uid == os.geteuid() and not shared:
            os.chmod(path, 0o700)
        else:
            logging.getLogger(__name__).warning(
                "the folder %s can be read by other users (mode %o) and is not referdesk's to change: keep the "
                "database in a folder of its own (--data-dir), mode 0700", path, stat.S_IMODE(info.st_mode))
    return path


def private_file(path: Path) -> None:
    """Mode 0600 for a file referdesk keeps PHI in, if it exists (tightened when it was looser)."""
    try:
        if stat.S_IMODE(os.stat(path).st_mode) != 0o600:
            os.chmod(path, 0o600)
    except FileNotFoundError:
        pass


def _create_private_file(path: Path) -> None:
    """Create the SQLite file (and its folder) readable by its owner only: it holds PHI. A file or folder
    that exists with looser modes (copied in, restored from a backup, made under umask 022) is tightened, and
    so are the WAL and shared-memory files an earlier run left (SQLite gives new ones the database's mode)."""
    private_folder(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    for suffix in SQLITE_COMPANIONS:
        private_file(path.with_name(path.name + suffix))


def make_database(url: str) -> peewee.Database:
    """A peewee database for `url` (not yet connected)."""
    sqlite_path = sqlite_path_from_url(url)
    if sqlite_path is not None:
        _create_private_file(sqlite_path)
        return SqliteStore(str(sqlite_path), pragmas=SQLITE_PRAGMAS, check_same_thread=False,
                           lock_type=SQLITE_LOCK_TYPE)
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        from playhouse.db_url import parse

        settings = parse(url)
        if not settings.get("database"):
            raise DatabaseError(f"{url} names no database: postgresql://user@host/DATABASE")
        try:
            return PostgresqlStore(**settings)
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
        raise DatabaseError(f"cannot open the database at {url}: {database_problem(exc) or exc}") from exc
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
