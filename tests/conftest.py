"""Shared fixtures: every test gets its own SQLite file (never :memory:, which each thread sees empty)."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest

# Helper modules that hold asserts and are imported by several test modules (direct_ca is also a plugin): registered
# here, before any test module imports one, so pytest rewrites their asserts wherever they are first imported.
pytest.register_assert_rewrite("direct_ca")

from models import clock  # noqa: E402
from models.db import close_database, open_database, sqlite_url  # noqa: E402

# Deterministic by construction: one time zone, one "now" (the day after the seed data's reference date).
os.environ["TZ"] = "UTC"
time.tzset()
FROZEN_NOW = dt.datetime(2026, 11, 2, 10, 0, 0)


@pytest.fixture(autouse=True)
def frozen_clock():
    clock.freeze(FROZEN_NOW)
    yield FROZEN_NOW
    clock.freeze(None)


@pytest.fixture(autouse=True)
def fresh_direct_caches():
    """Certificate lookups are cached in-process for their TTL, which never runs out under a frozen clock:
    each test starts with empty caches, as a new process would."""
    import sys

    yield
    recipient = sys.modules.get("transports.direct.recipient")
    if recipient is not None:
        recipient.DEFAULT_CACHES.clear()


#: Set to a PostgreSQL server URL (e.g. postgresql://postgres@127.0.0.1:5432/) to run the database fixtures
#: (`db`, `seeded`) on PostgreSQL: each test gets its own database, made from a seeded template database.
TEST_PG = os.environ.get("REFERDESK_TEST_PG", "").rstrip("/")


class PgDatabases:
    """Create and drop per-test databases on the PostgreSQL server named by REFERDESK_TEST_PG."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.count = 0

    def url(self, name: str) -> str:
        return f"{self.server}/{name}"

    def _admin(self, sql: str) -> None:
        import psycopg2

        connection = psycopg2.connect(self.url("postgres"))
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    def create(self, template: str | None = None) -> str:
        self.count += 1
        name = f"rd_test_{os.getpid()}_{self.count}"
        self._admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def drop(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg():
    if not TEST_PG:
        yield None
        return
    databases = PgDatabases(TEST_PG)
    made: list[str] = []
    original = databases.create
    databases.create = lambda template=None: made.append(original(template)) or made[-1]
    yield databases
    for name in made:
        databases.drop(name)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "referdesk.db"


@pytest.fixture(scope="session")
def empty_pg_template(pg):
    """An empty, fully migrated PostgreSQL database (REFERDESK_TEST_PG), made once per session: copying it is
    a tenth of the time running the migrations for every test takes."""
    name = pg.create()
    open_database(pg.url(name))
    close_database()
    return name


@pytest.fixture
def db(db_path, pg, request):
    """An empty, fully migrated database (on PostgreSQL when REFERDESK_TEST_PG is set)."""
    if pg is not None:
        name = pg.create(template=request.getfixturevalue("empty_pg_template"))
        database = open_database(pg.url(name))
        yield database
        close_database()
        pg.drop(name)
        return
    database = open_database(sqlite_url(db_path))
    yield database
    close_database()


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory):
    """A database seeded once per session with 300 patients; tests copy it rather than reseed."""
    from models.seed import seed

    path = tmp_path_factory.mktemp("seeded") / "referdesk.db"
    open_database(sqlite_url(path))
    seed(300)
    close_database()
    return path


@pytest.fixture
def sqlite_db(db_path):
    """An empty, fully migrated SQLite file, whatever REFERDESK_TEST_PG says (tests of the SQLite store)."""
    database = open_database(sqlite_url(db_path))
    yield database
    close_database()


@pytest.fixture(scope="session")
def seeded_pg_template(pg, request):
    """The seeded database as a PostgreSQL template (REFERDESK_TEST_PG), made once per session."""
    from models.seed import seed

    name = pg.create(template=request.getfixturevalue("empty_pg_template"))
    open_database(pg.url(name))
    seed(300)
    close_database()
    return name


@pytest.fixture
def seeded(seeded_template, tmp_path, pg, request):
    """A private copy of the seeded database, open (on PostgreSQL when REFERDESK_TEST_PG is set)."""
    import shutil

    if pg is not None:
        name = pg.create(template=request.getfixturevalue("seeded_pg_template"))
        database = open_database(pg.url(name))
        yield database
        close_database()
        pg.drop(name)
        return
    path = tmp_path / "referdesk.db"
    shutil.copy(seeded_template, path)
    database = open_database(sqlite_url(path))
    yield database
    close_database()


@pytest.fixture(scope="session")
def direct_world(seeded_template, tmp_path_factory):
    """Certificates for the seeded Direct contacts, as the address book describes them (tests/direct_site.py)."""
    from direct_site import build_world
    from loopback_http import LoopbackHttp

    with LoopbackHttp() as http:
        yield build_world(seeded_template, tmp_path_factory.mktemp("direct-world"), http)


@pytest.fixture
def direct_dns(direct_world):
    """A real DNS server on 127.0.0.1 publishing the world's CERT records."""
    dns = direct_world.serve()
    yield dns
    dns.stop()


@pytest.fixture
def direct_ready_config(tmp_path, db_path, direct_world, direct_dns, monkeypatch):
    """A configuration with the practice's Direct identity set (so Direct skips the first-use wizard) and
    recipient checks against the loopback DNS; the HISP port is closed and the in-app worker off."""
    from direct_pki import closed_port
    from direct_site import P12_PASSWORD, P12_PASSWORD_ENV, config_text
    from models.config import load_config

    monkeypatch.setenv(P12_PASSWORD_ENV, P12_PASSWORD)
    path = tmp_path / "config.toml"
    path.write_text(config_text(direct_world, direct_dns, smtp_port=closed_port()))
    return load_config(path, db_url=sqlite_url(db_path), env={})


@pytest.fixture
def data_dir(seeded_template, tmp_path):
    """A data folder holding a copy of the seeded database, for command-line tests."""
    import shutil

    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(seeded_template, folder / "referdesk.db")
    return folder


@pytest.fixture
def cli(capsys):
    """Run `referdesk ARGS…` in-process; returns (exit status, stdout, stderr)."""
    from tui.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
