"""Direct set-up: saving [direct]/[smtp] safely, the checks end to end against a loopback SMTP server, and the
wizard screen — snapshots of every step at 80x24 and 120x40, and a keyboard-only Pilot run."""

from __future__ import annotations

import datetime as dt
import os
import stat
import tomllib
from pathlib import Path

import pytest
from textual.widgets import Button, Input

from direct_pki import (ADDRESS, NOW, LoopbackSmtp, make_ca, make_leaf, server_context, write_key, write_p12,
                        write_pem)
from models.config import ConfigError, load_config
from transports.direct.setup import (direct_settings_missing, run_direct_checks, save_direct_settings)
from tui.app import ReferdeskApp
from tui.screens.direct_setup import DirectSetupScreen

SIZES = [(80, 24), (120, 40)]
PASSPHRASE = "correct horse battery"

EXISTING = """\
# Clinic configuration, kept by hand.
[database]
url = "sqlite:////var/lib/referdesk/referdesk.db"  # the shared database

[practice]
name = "Harbor Family Medicine"
npi = "1234567893"

[direct]
address = "old@direct.example.org"
mdn_timeout_minutes = 90

# Outgoing mail
[smtp]
host = "old.example.net"
port = 25

[ui]
cursor_blink = false
"""


# --- save_direct_settings ------------------------------------------------------------------------------

def test_save_keeps_every_other_section_value_and_comment(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(EXISTING)
    save_direct_settings(path, {"address": ADDRESS, "certificate": "/etc/referdesk/practice.p12",
                                "password_env": "REFERDESK_P12_PASSWORD", "trust_anchors": "/etc/referdesk/anchors"},
                         {"host": "smtp.hisp.example.net", "port": 587, "starttls": True, "username": "clinic",
                          "password_env": "REFERDESK_SMTP_PASSWORD", "ca_file": ""})
    values = tomllib.loads(path.read_text())
    before = tomllib.loads(EXISTING)
    for section in ("database", "practice", "ui"):
        assert values[section] == before[section]
    assert values["direct"] == {"address": ADDRESS, "mdn_timeout_minutes": 90,
                                "certificate": "/etc/referdesk/practice.p12",
                                "password_env": "REFERDESK_P12_PASSWORD", "trust_anchors": "/etc/referdesk/anchors"}
    assert values["smtp"] == {"host": "smtp.hisp.example.net", "port": 587, "starttls": True, "username": "clinic",
                              "password_env": "REFERDESK_SMTP_PASSWORD"}
    text = path.read_text()
    for comment in ("# Clinic configuration, kept by hand.", "# the shared database", "# Outgoing mail"):
        assert comment in text
    assert text.index("# Outgoing mail") < text.index("[smtp]")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temp file left behind


def test_save_creates_the_folder_and_a_private_file(tmp_path):
    path = tmp_path / "new" / "referdesk" / "config.toml"
    save_direct_settings(path, {"address": ADDRESS}, {"host": "smtp.hisp.example.net"})
    assert tomllib.loads(path.read_text()) == {"direct": {"address": ADDRESS},
                                               "smtp": {"host": "smtp.hisp.example.net"}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_config(path).section("direct")["address"] == ADDRESS


def test_save_never_writes_secrets(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(EXISTING)
    for direct, smtp in [({"password": PASSPHRASE}, {}), ({}, {"password": PASSPHRASE}),
                         ({"passphrase": PASSPHRASE}, {}), ({"address": PASSPHRASE.encode()}, {}),
                         ({"password_env": PASSPHRASE}, {})]:
        with pytest.raises(ValueError):
            save_direct_settings(path, direct, smtp)
    assert path.read_text() == EXISTING
    save_direct_settings(path, {"password_env": "MY_P12_PASS"}, {"password_env": "MY_SMTP_PASS"})
    assert PASSPHRASE not in path.read_text()


def test_save_refuses_to_overwrite_a_broken_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[direct\naddress = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        save_direct_settings(path, {"address": ADDRESS}, {})
    assert path.read_text() == "[direct\naddress = "


def test_save_with_a_layout_the_line_editor_cannot_follow_still_keeps_values(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('direct.address = "old@direct.example.org"\n[practice]\nname = "Clinic"\n')
    save_direct_settings(path, {"certificate": "/p.p12"}, {"host": "h.example.net"})
    assert tomllib.loads(path.read_text()) == {"direct": {"address": "old@direct.example.org",
                                                          "certificate": "/p.p12"},
                                               "practice": {"name": "Clinic"}, "smtp": {"host": "h.example.net"}}


def test_direct_settings_missing(tmp_path):
    assert direct_settings_missing(None) == ["direct.address", "direct.certificate", "direct.trust_anchors",
                                             "smtp.host"]
    path = tmp_path / "config.toml"
    path.write_text(EXISTING)
    assert direct_settings_missing(load_config(path)) == ["direct.certificate", "direct.trust_anchors"]
    save_direct_settings(path, {"certificate": "/p.p12", "trust_anchors": "  "}, {})
    assert direct_settings_missing(load_config(path)) == ["direct.trust_anchors"]


# --- a practice to set up: files under a temporary HOME ---------------------------------------------------

@pytest.fixture(scope="session")
def pki():
    root = make_ca("Referdesk Test Root")
    return {
        "root": root,
        "good": make_leaf(root, emails=[ADDRESS]),
        "bad": make_leaf(root, emails=["intake@direct.example.org"], start=dt.datetime(2024, 1, 1),
                         end=dt.datetime(2025, 1, 1)),
        "other_root": make_ca("Another Root"),
        "hisp_ca": (hisp_ca := make_ca("HISP Test CA")),
        "hisp": make_leaf(hisp_ca, dns=["localhost"], ips=["127.0.0.1"], cn="hisp", usage=None),
    }


@pytest.fixture
def home(tmp_path, monkeypatch, pki):
    """~ is the test folder, so paths read the same in every run: ~/practice.p12, ~/anchors, ~/hisp-ca.pem."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("REFERDESK_P12_PASSWORD", raising=False)
    monkeypatch.delenv("REFERDESK_SMTP_PASSWORD", raising=False)
    write_p12(tmp_path / "practice.p12", pki["good"], PASSPHRASE.encode())
    write_p12(tmp_path / "wrong.p12", pki["bad"], PASSPHRASE.encode())
    for name in ("practice.p12", "wrong.p12"):
        os.chmod(tmp_path / name, 0o600)
    (tmp_path / "anchors").mkdir()
    write_pem(tmp_path / "anchors" / "root.pem", pki["root"].cert)
    (tmp_path / "other-anchors").mkdir()
    write_pem(tmp_path / "other-anchors" / "other.pem", pki["other_root"].cert)
    write_pem(tmp_path / "hisp-ca.pem", pki["hisp_ca"].cert)
    write_pem(tmp_path / "hisp.pem", pki["hisp"].cert)
    write_key(tmp_path / "hisp.key", pki["hisp"].key)
    return tmp_path


@pytest.fixture
def hisp(home):
    """A real STARTTLS submission server on 127.0.0.1, its certificate from ~/hisp-ca.pem."""
    with LoopbackSmtp(tls_context=server_context(home / "hisp.pem", home / "hisp.key")) as server:
        yield server


def direct_values(p12="~/practice.p12", anchors="~/anchors"):
    return {"address": ADDRESS, "certificate": p12, "password_env": "REFERDESK_P12_PASSWORD",
            "trust_anchors": anchors}


def smtp_values(port, host="127.0.0.1"):
    return {"host": host, "port": port, "starttls": True, "username": "", "password_env": "REFERDESK_SMTP_PASSWORD",
            "ca_file": "~/hisp-ca.pem"}


async def test_all_checks_pass_for_a_good_setup(home, hisp):
    findings = await run_direct_checks(direct_values(), smtp_values(hisp.port), password=PASSPHRASE.encode(),
                                       now=NOW, env={"REFERDESK_P12_PASSWORD": PASSPHRASE})
    assert [f.level for f in findings] == ["ok"] * len(findings), findings
    messages = [f.message for f in findings]
    assert "Certificate chains to trust anchor “Referdesk Test Root”" in messages
    assert "SMTP server 127.0.0.1 answered (STARTTLS)" in messages
    assert "The passphrase comes from $REFERDESK_P12_PASSWORD, which is set here" in messages


async def test_checks_report_each_problem(home, hisp):
    findings = await run_direct_checks(direct_values("~/wrong.p12", "~/other-anchors"),
                                       {**smtp_values(hisp.port), "ca_file": "", "username": "clinic"},
                                       password=PASSPHRASE.encode(), now=NOW, env={})
    errors = [f.message for f in findings if f.level == "error"]
    assert "Certificate expired on 2025-01-01 (valid 2024-01-01 to 2025-01-01)" in errors
    assert any(e.startswith(f"Certificate is not bound to {ADDRESS}") for e in errors)
    assert any("“Referdesk Test Root” is not among them" in e for e in errors)
    assert any("is not signed by a CA in this system's CA list" in e for e in errors)
    warnings = [f.message for f in findings if f.level == "warning"]
    assert any(w.startswith("$REFERDESK_P12_PASSWORD is not set here") for w in warnings)
    assert any(w.startswith("$REFERDESK_SMTP_PASSWORD is not set here") for w in warnings)


async def test_checks_with_a_wrong_passphrase_and_nothing_else(home):
    findings = await run_direct_checks(direct_values(), {}, password=b"wrong", now=NOW, env={})
    assert [(f.level, f.message) for f in findings] == [
        ("ok", f"Direct address {ADDRESS} is well formed"),
        ("error", "~/practice.p12: wrong passphrase (the file could not be decrypted with it)"),
        ("ok", "1 trust anchor read from ~/anchors"),
        ("error", "No SMTP host given (the HISP's submission server)"),
    ]


# --- the wizard ----------------------------------------------------------------------------------------

def write_config(home: Path, direct: dict | None = None, smtp: dict | None = None) -> Path:
    path = home / "config.toml"
    path.write_text(EXISTING.replace('[direct]\naddress = "old@direct.example.org"\nmdn_timeout_minutes = 90\n', "")
                    .replace('[smtp]\nhost = "old.example.net"\nport = 25\n', ""))
    if direct or smtp:
        save_direct_settings(path, direct or {}, smtp or {})
    return path


def wizard_app(home: Path, *, env: dict | None = None, direct=None, smtp=None):
    config = load_config(write_config(home, direct, smtp), data_dir=home / "data")
    app = ReferdeskApp(config)
    app.setup_result = []
    app.setup_env = env or {}
    return app


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def open_wizard(pilot) -> DirectSetupScreen:
    await pilot.pause()
    app = pilot.app
    screen = DirectSetupScreen(env=app.setup_env)
    app.push_screen(screen, app.setup_result.append)
    await pilot.pause()
    return screen


def at_step(step: int, *keys: str):
    """Open the wizard, go forward `step - 1` steps with PgDn, then press `keys`."""
    async def run_before(pilot) -> None:
        await open_wizard(pilot)
        for _ in range(step - 1):
            await pilot.press("pagedown")
            await settle(pilot)
        if keys:
            await pilot.press(*keys)
        await settle(pilot)

    return run_before


STATIC_SMTP = {"host": "smtp.hisp.example.net", "port": 587, "starttls": True, "username": "harbor-clinic",
               "password_env": "REFERDESK_SMTP_PASSWORD"}
sized = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")


@sized
def test_snapshot_step1_address_empty(db, home, snap_compare, size):
    assert snap_compare(wizard_app(home), terminal_size=size, run_before=at_step(1))


@sized
def test_snapshot_step1_malformed_address(db, home, snap_compare, size):
    keys = [*"referrals@@direct.example", "pagedown"]
    assert snap_compare(wizard_app(home), terminal_size=size, run_before=at_step(1, *keys))


@sized
def test_snapshot_step2_certificate(db, home, snap_compare, size):
    app = wizard_app(home, direct=direct_values(), smtp=STATIC_SMTP)
    assert snap_compare(app, terminal_size=size, run_before=at_step(2))


@sized
def test_snapshot_step2_wrong_passphrase(db, home, snap_compare, size):
    app = wizard_app(home, direct=direct_values(), smtp=STATIC_SMTP)
    keys = ["tab", "tab", *"not the passphrase", "shift+tab"]
    assert snap_compare(app, terminal_size=size, run_before=at_step(2, *keys))


@sized
def test_snapshot_step3_smtp(db, home, snap_compare, size):
    app = wizard_app(home, direct=direct_values(), smtp=STATIC_SMTP)
    assert snap_compare(app, terminal_size=size, run_before=at_step(3))


@sized
def test_snapshot_step4_anchors_read(db, home, snap_compare, size):
    app = wizard_app(home, direct=direct_values(), smtp=STATIC_SMTP)
    assert snap_compare(app, terminal_size=size, run_before=at_step(4, "tab"))


@sized
def test_snapshot_step5_checks_all_passing(db, home, hisp, snap_compare, size):
    app = wizard_app(home, env={"REFERDESK_P12_PASSWORD": PASSPHRASE}, direct=direct_values(),
                     smtp=smtp_values(hisp.port))
    assert snap_compare(app, terminal_size=size, run_before=at_step(5))


def failing_app(home):
    """Expired certificate for another address, anchors that do not issue it, and no SMTP server on port 9."""
    return wizard_app(home, direct=direct_values("~/wrong.p12", "~/other-anchors"),
                      smtp={**smtp_values(9), "username": "harbor-clinic"})


@sized
def test_snapshot_step5_checks_failing(db, home, snap_compare, size):
    async def run_before(pilot) -> None:
        await at_step(2, "tab", "tab", *PASSPHRASE)(pilot)  # passphrase typed: not in the environment
        for _ in range(3):
            await pilot.press("pagedown")
            await settle(pilot)

    assert snap_compare(failing_app(home), terminal_size=size, run_before=run_before)


@sized
def test_snapshot_step6_save_with_errors(db, home, snap_compare, size):
    async def run_before(pilot) -> None:
        await at_step(2, "tab", "tab", *PASSPHRASE)(pilot)
        for _ in range(4):
            await pilot.press("pagedown")
            await settle(pilot)

    assert snap_compare(failing_app(home), terminal_size=size, run_before=run_before)


# --- keyboard-only runs ---------------------------------------------------------------------------------

async def test_fill_the_wizard_by_keys_and_save(db, home, hisp):
    app = wizard_app(home)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_wizard(pilot)
        await pilot.press(*"referrals@direct.example.org", "enter")
        assert screen.step == 1
        await pilot.press(*"~/practice.p12", "enter", "enter", *PASSPHRASE, "enter")
        await settle(pilot)
        assert screen.step == 2
        await pilot.press(*"127.0.0.1", "enter", "backspace", "backspace", "backspace", *str(hisp.port), "enter",
                          *"harbor-clinic", "enter", "enter", *"~/hisp-ca.pem", "enter")
        assert screen.step == 3
        await pilot.press(*"~/anchors", "enter")
        await settle(pilot)
        assert screen.step == 4
        errors = [f for f in screen.findings if f.level == "error"]
        assert not errors, errors
        await pilot.press("pagedown")
        await pilot.pause()
        save = screen.query_one("#save", Button)
        assert not save.disabled and save.has_focus
        await pilot.press("enter")
        await pilot.pause()
        assert app.setup_result == [True]
        assert app.screen is not screen
        assert app.config.section("direct")["address"] == ADDRESS  # the app sees the new settings at once

    path = home / "config.toml"
    text = path.read_text()
    assert PASSPHRASE not in text
    values = tomllib.loads(text)
    assert values["direct"] == {"address": ADDRESS, "certificate": "~/practice.p12",
                                "password_env": "REFERDESK_P12_PASSWORD", "trust_anchors": "~/anchors"}
    assert values["smtp"] == {"host": "127.0.0.1", "port": hisp.port, "starttls": True, "username": "harbor-clinic",
                              "password_env": "REFERDESK_SMTP_PASSWORD", "ca_file": "~/hisp-ca.pem"}
    assert values["practice"]["name"] == "Harbor Family Medicine"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_save_anyway_needs_a_confirmation(db, home):
    app = failing_app(home)
    before = (home / "config.toml").read_text()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_wizard(pilot)
        for _ in range(4):
            await pilot.press("pagedown")
            await settle(pilot)
        await pilot.press("pagedown")
        await pilot.pause()
        assert screen.query_one("#save", Button).disabled
        await pilot.press("enter")  # focus is on "Save anyway…"
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is screen and (home / "config.toml").read_text() == before
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert app.setup_result == [True]
    assert tomllib.loads((home / "config.toml").read_text())["smtp"]["port"] == 9


async def test_escape_leaves_at_once_when_nothing_was_typed(db, home):
    app = wizard_app(home)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_wizard(pilot)
        await pilot.press("escape")
        await pilot.pause()
        assert app.setup_result == [False]


async def test_escape_asks_before_dropping_what_was_typed(db, home):
    app = wizard_app(home)
    before = (home / "config.toml").read_text()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_wizard(pilot)
        await pilot.press(*"referrals@direct.example.org", "escape")
        await pilot.pause()
        await pilot.press("n")  # stay
        await pilot.pause()
        assert app.screen is screen and screen.query_one("#address", Input).value == ADDRESS
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert app.setup_result == [False]
    assert (home / "config.toml").read_text() == before


async def test_malformed_address_keeps_the_wizard_on_step_one(db, home):
    app = wizard_app(home)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_wizard(pilot)
        await pilot.press(*"referrals at clinic", "pagedown")
        await pilot.pause()
        assert screen.step == 0
        assert "cannot contain spaces" in str(screen.query_one("#address-status").content)


async def test_prefilled_from_the_configuration(db, home):
    app = wizard_app(home, direct=direct_values(), smtp=STATIC_SMTP)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_wizard(pilot)
        assert screen.query_one("#address", Input).value == ADDRESS
        assert screen.query_one("#host", Input).value == "smtp.hisp.example.net"
        assert screen.query_one("#username", Input).value == "harbor-clinic"
        assert not screen.is_dirty()
