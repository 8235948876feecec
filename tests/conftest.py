"""Shared fixtures: every test gets its own SQLite file (never :memory:, which each thread sees empty)."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest

from models import clock
from models.db import close_database, open_database, sqlite_url

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


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "referdesk.db"


@pytest.fixture
def db(db_path):
    """An empty, fully migrated database."""
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
def seeded(seeded_template, tmp_path):
    """A private copy of the seeded database, open."""
    import shutil

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
