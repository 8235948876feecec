"""Staff accounts and access: password hashing, the permission table, signing in (open mode, accounts mode over
trusted SSH, with a password on the console), what each role may do in the app and on the command line, and the
`referdesk users` verbs. Snapshots of the login and refusal screens at 80×24 and 120×40."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import peewee as pw
import pytest
from textual.widgets import Input, Static

from models.access import ACTIONS, ROLES, AccessDenied, can, require, who_may
from models.config import load_config
from models.db import sqlite_url
from models.referral_history import list_referrals
from models.referrals import Referral
from models.users import (UserError, add_account, hash_password, migrate_users, os_login, set_password,
                          verify_password, who_is_here)
from pilot_keys import press, settle
from referral_nav import open_note, signed_note
from tui.app import ReferdeskApp
from tui.dialogs.mark_received import MarkReceivedDialog
from tui.dialogs.send_referral import SendReferralDialog
from tui.screens.direct_setup import DirectSetupScreen
from tui.screens.login import LoginScreen, RefusalScreen
from tui.screens.note_view import NoteViewScreen
from tui.screens.patient_search import PatientSearchScreen
from tui.screens.referral_detail import ReferralDetailScreen
from tui.screens.referrals import ReferralsScreen

SIZES = [(80, 24), (120, 40)]
size_ids = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
PASSWORD = "correct horse battery"
SSH = "192.0.2.10 50022 192.0.2.1 22"
TO_DELIVERED = ("f3", "s", "enter", "d", "enter", "enter")  # F3, status filter: Delivered, open the first


@pytest.fixture
def login_as(monkeypatch):
    """Be this operating-system login (models.users.os_login), over a trusted SSH login unless ssh=False."""
    def be(login: str, *, ssh: bool = True) -> None:
        monkeypatch.setattr("models.users.os_login", lambda env=None: login)
        if ssh:
            monkeypatch.setenv("SSH_CONNECTION", SSH)
        else:
            monkeypatch.delenv("SSH_CONNECTION", raising=False)

    return be


def access_config(tmp_path, db_url: str, *, mode: str = "accounts", trusted_ssh: bool = True):
    path = tmp_path / "access.toml"
    path.write_text(f'[access]\nmode = "{mode}"\ntrusted_ssh = {str(trusted_ssh).lower()}\n')
    return path, load_config(path, db_url=db_url, env={})


@pytest.fixture
def accounts(seeded, tmp_path, db_path):
    """A configuration in accounts mode on the seeded database (users frontdesk, hpark, admin)."""
    return access_config(tmp_path, sqlite_url(db_path))[1]


def messages(app) -> list[str]:
    return [n.message for n in app._notifications]


# --- hashing -----------------------------------------------------------------------------------------------------


def test_hash_format_verify_and_salt():
    encoded = hash_password(PASSWORD)
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert verify_password(PASSWORD, encoded)
    assert not verify_password(PASSWORD + "!", encoded)
    assert not verify_password("", encoded)
    again = hash_password(PASSWORD)
    assert again != encoded and again.split("$")[4] != salt  # a new salt each time
    assert verify_password(PASSWORD, again)


@pytest.mark.parametrize("encoded", ["", "scrypt", "bcrypt$16384$8$1$AAAA$AAAA", "scrypt$1000$8$1$AAAA$AAAA",
                                     "scrypt$16384$8$1$!!$AAAA", "scrypt$4194304$8$1$AAAA$AAAA",
                                     "scrypt$16384$8$1$$"])
def test_a_malformed_or_outrageous_hash_never_verifies(encoded):
    assert not verify_password(PASSWORD, encoded)


def test_a_short_password_is_refused():
    with pytest.raises(UserError, match="at least 8 characters"):
        hash_password("hunter2")


# --- permissions ---------------------------------------------------------------------------------------------------

TABLE = {
    "search": {"front-desk", "clinician", "admin"},
    "view-chart": {"front-desk", "clinician", "admin"},
    "prepare-referral": {"front-desk", "clinician", "admin"},
    "send-referral": {"front-desk", "clinician", "admin"},
    "sign-note": {"clinician"},
    "mark-received": {"clinician"},
    "setup": {"admin"},
    "certificates": {"admin"},
    "users": {"admin"},
    "audit": {"admin"},
}


def test_permission_table():
    assert set(ACTIONS) == set(TABLE)
    for action, allowed in TABLE.items():
        assert {role for role in ROLES if can(role, action)} == allowed, action
        assert not can(None, action) and not can("janitor", action)
    assert who_may("mark-received") == "clinicians"
    with pytest.raises(ValueError):
        can("admin", "launch-missiles")


def test_require_says_who_may():
    from types import SimpleNamespace

    desk = SimpleNamespace(username="frontdesk", role="front-desk", active=True)
    require(desk, "send-referral")
    with pytest.raises(AccessDenied) as refused:
        require(desk, "mark-received")
    assert str(refused.value) == ("Only clinicians may mark a consultant's report received; you are signed in as "
                                  "frontdesk (front desk).")
    with pytest.raises(AccessDenied, match="deactivated"):
        require(SimpleNamespace(username="old", role="clinician", active=False), "mark-received")
    with pytest.raises(AccessDenied, match="nobody is signed in"):
        require(None, "search")


# --- who is at the keyboard ------------------------------------------------------------------------------------------


def test_the_login_is_the_real_user_and_the_override_is_for_root_only(monkeypatch):
    import pwd

    real = pwd.getpwuid(__import__("os").getuid()).pw_name
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert os_login({"REFERDESK_OS_USER": "admin", "USER": "admin", "LOGNAME": "admin"}) == real
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert os_login({"REFERDESK_OS_USER": "hpark"}) == "hpark"
    assert os_login({}) == real


def test_who_is_here(seeded, tmp_path, db_path, login_as):
    _, accounts_config = access_config(tmp_path, sqlite_url(db_path))
    login_as("frontdesk")
    here = who_is_here(None)
    assert (here.mode, here.login, here.username, here.refused) == ("open", "frontdesk", "frontdesk", False)
    assert here.can("mark-received") and here.can("setup")  # open mode: everything
    here = who_is_here(accounts_config)
    assert here.username == "frontdesk" and not here.needs_password and not here.refused
    assert here.can("send-referral") and not here.can("mark-received") and not here.can("setup")
    login_as("mallory")
    assert who_is_here(None).account is None and who_is_here(None).can("setup")
    assert who_is_here(accounts_config).refusal == "mallory has no referdesk account; ask your administrator"
    assert not who_is_here(accounts_config).can("search")
    login_as("hpark", ssh=False)
    assert "has no password set" in who_is_here(accounts_config).refusal
    set_password("hpark", PASSWORD)
    assert who_is_here(accounts_config).needs_password


def test_a_mistyped_mode_fails_closed(seeded, tmp_path, db_path, login_as):
    login_as("admin")
    _, config = access_config(tmp_path, sqlite_url(db_path), mode="acounts")
    here = who_is_here(config)
    assert here.refused and "[access] mode must be" in here.refusal and not here.can("search")


def test_migrate_users_adds_the_columns_once(tmp_path):
    db = pw.SqliteDatabase(str(tmp_path / "old.db"))
    db.execute_sql('CREATE TABLE "user" (id INTEGER PRIMARY KEY, username VARCHAR(255) NOT NULL UNIQUE, '
                   'display_name VARCHAR(255) NOT NULL, role VARCHAR(255) NOT NULL, provider_id INTEGER, '
                   'active INTEGER NOT NULL)')
    db.execute_sql("INSERT INTO \"user\" VALUES (1, 'frontdesk', 'Front Desk', 'front-desk', NULL, 1)")
    migrate_users(db)
    migrate_users(db)  # a second run changes nothing
    assert {"os_user", "password_hash"} <= {c.name for c in db.get_columns("user")}
    assert db.execute_sql('SELECT os_user, password_hash FROM "user"').fetchall() == [("", "")]


# --- the app in accounts mode ----------------------------------------------------------------------------------------


async def test_an_unknown_login_sees_only_the_refusal(accounts, login_as):
    login_as("mallory")
    app = ReferdeskApp(config=accounts)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, RefusalScreen)
        assert str(app.screen.query_one("#refusal-reason", Static).content) == (
            "mallory has no referdesk account; ask your administrator.")
        for key in ("f2", "f3", "f4", "f5", "f1", "ctrl+p"):
            await press(pilot, key)
            assert isinstance(app.screen, RefusalScreen)
        assert not any(isinstance(s, (PatientSearchScreen, ReferralsScreen)) for s in app.screen_stack)
        assert app.outbox is None
        await pilot.press("enter")
        await pilot.pause()
    assert app.return_code == 1


async def test_front_desk_sends_but_may_not_mark_received_or_set_up_direct(accounts, login_as):
    login_as("frontdesk")
    delivered = list_referrals(status="delivered")[0]
    note = signed_note()
    app = ReferdeskApp(config=accounts)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, PatientSearchScreen) and app.username == "frontdesk"
        await open_note(pilot, note, by_keys=False)
        await press(pilot, "t", "d")  # Direct is not set up, and setting it up is the administrator's
        assert isinstance(app.screen, NoteViewScreen)
        assert any("only administrators may set it up" in m for m in messages(app))
        await press(pilot, "f")  # eFax: front desk may send
        assert isinstance(app.screen, SendReferralDialog)
        await press(pilot, "escape", "f2", *TO_DELIVERED)
        assert isinstance(app.screen, ReferralDetailScreen) and app.screen.referral_id == delivered.id
        await press(pilot, "m")
        assert isinstance(app.screen, ReferralDetailScreen)  # no dialog
        assert any(m.startswith("Only clinicians may mark") for m in messages(app))
    assert Referral.get_by_id(delivered.id).status == "delivered"


async def test_a_clinician_marks_the_report_received(accounts, login_as):
    login_as("hpark")
    delivered = list_referrals(status="delivered")[0]
    app = ReferdeskApp(config=accounts)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(pilot, *TO_DELIVERED, "m")
        assert isinstance(app.screen, MarkReceivedDialog)
        await press(pilot, "enter")
    assert Referral.get_by_id(delivered.id).status == "report-received"


async def test_the_administrator_opens_direct_set_up_and_front_desk_is_refused_it(accounts, login_as):
    login_as("admin")
    app = ReferdeskApp(config=accounts, start="direct-setup")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, DirectSetupScreen)
    login_as("frontdesk")
    app = ReferdeskApp(config=accounts, start="direct-setup")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, RefusalScreen)
        assert "Only administrators may change the practice's set-up" in str(
            app.screen.query_one("#refusal-reason", Static).content)
        await pilot.press("escape")
        await pilot.pause()
    assert app.return_code == 1 and app.return_value is None


async def test_the_administrator_sending_by_direct_is_walked_through_set_up(accounts, login_as):
    login_as("admin")
    app = ReferdeskApp(config=accounts)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_note(pilot, signed_note(), by_keys=False)
        await press(pilot, "t", "d")
        assert isinstance(app.screen, DirectSetupScreen)


async def test_trusted_ssh_asks_no_password(accounts, login_as):
    set_password("hpark", PASSWORD)
    login_as("hpark", ssh=True)
    app = ReferdeskApp(config=accounts)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, PatientSearchScreen)


async def test_untrusted_ssh_asks_for_the_password_anyway(seeded, tmp_path, db_path, login_as):
    set_password("hpark", PASSWORD)
    login_as("hpark", ssh=True)
    _, config = access_config(tmp_path, sqlite_url(db_path), trusted_ssh=False)
    app = ReferdeskApp(config=config)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, LoginScreen)


async def sign_in(pilot, password: str) -> None:
    pilot.app.screen.query_one("#password", Input).insert_text_at_cursor(password)
    await pilot.press("enter")
    await settle(pilot)


def sign_in_rows() -> list[tuple[str, str, str, str]]:
    """The audit log's sign-ins and refusals, oldest first: (user, action, outcome, detail)."""
    from models.referrals import AuditEvent

    rows = (AuditEvent.select().where(AuditEvent.action.in_(("session.start", "access.denied")))
            .order_by(AuditEvent.id))
    return [(r.username, r.action, r.outcome, r.detail) for r in rows]


async def test_on_the_console_the_right_password_lets_in(accounts, login_as):
    set_password("hpark", PASSWORD)
    login_as("hpark", ssh=False)
    app = ReferdeskApp(config=accounts)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, LoginScreen)
        for key in ("f2", "f3", "ctrl+p"):
            await press(pilot, key)
            assert isinstance(app.screen, LoginScreen)
        await press(pilot, "enter")  # nothing typed: nothing checked, no try used
        assert app.screen.tries_left == 3
        await sign_in(pilot, "not it at all")
        assert isinstance(app.screen, LoginScreen)
        assert "Wrong password (2 tries left)" in str(app.screen.query_one("#login-message", Static).content)
        assert app.screen.query_one("#password", Input).value == ""
        await sign_in(pilot, PASSWORD)
        assert isinstance(app.screen, PatientSearchScreen) and app.username == "hpark"
        await press(pilot, "f3")
        assert isinstance(app.screen, ReferralsScreen)
    assert sign_in_rows() == [("hpark", "access.denied", "denied", "via=tui; reason=password"),
                              ("hpark", "session.start", "ok", "via=tui; sign-in=password")]


async def test_three_wrong_passwords_close_referdesk(accounts, login_as):
    set_password("hpark", PASSWORD)
    login_as("hpark", ssh=False)
    app = ReferdeskApp(config=accounts)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for attempt in ("guess one", "guess two"):
            await sign_in(pilot, attempt)
        # the third closes the app: no waiting on its workers after that (they are cancelled as it exits)
        pilot.app.screen.query_one("#password", Input).insert_text_at_cursor("guess three")
        await pilot.press("enter")
        for _ in range(100):
            if app.return_code is not None:
                break
            await asyncio.sleep(0.05)
    assert app.return_code == 1
    assert not any(isinstance(s, PatientSearchScreen) for s in app.screen_stack)
    assert sign_in_rows() == [("hpark", "access.denied", "denied", "via=tui; reason=password")] * 3


async def test_a_deactivated_account_is_refused(accounts, login_as):
    from models.users import set_active

    set_active("frontdesk", False)
    login_as("frontdesk")
    app = ReferdeskApp(config=accounts)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, RefusalScreen)
        assert "is deactivated" in str(app.screen.query_one("#refusal-reason", Static).content)
    assert sign_in_rows() == [("frontdesk", "access.denied", "denied", "via=tui; reason=no-account")]


async def test_open_mode_is_as_before(seeded, tmp_path, db_path, login_as):
    """Open mode: everything allowed, whoever the login is; a login with an account only names the user."""
    login_as("frontdesk", ssh=False)
    _, config = access_config(tmp_path, sqlite_url(db_path), mode="open")
    delivered = list_referrals(status="delivered")[0]
    app = ReferdeskApp(config=config)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, PatientSearchScreen) and app.username == "frontdesk"
        assert all(app.can(action) for action in ACTIONS)
        await press(pilot, *TO_DELIVERED, "m")
        assert isinstance(app.screen, MarkReceivedDialog)
        await press(pilot, "enter")
    assert Referral.get_by_id(delivered.id).status == "report-received"
    login_as("nobody-known")
    app = ReferdeskApp()  # no configuration at all
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, PatientSearchScreen) and app.username == ""
        assert app.can("setup") and app.can("users")


# --- snapshots --------------------------------------------------------------------------------------------------------


@size_ids
def test_snapshot_login_screen_after_a_wrong_password(accounts, login_as, snap_compare, size):
    set_password("hpark", PASSWORD)
    login_as("hpark", ssh=False)

    async def wrong_once(pilot) -> None:
        await pilot.pause()
        await sign_in(pilot, "not it at all")

    assert snap_compare(ReferdeskApp(config=accounts), terminal_size=size, run_before=wrong_once)


@size_ids
def test_snapshot_refusal_screen(accounts, login_as, snap_compare, size):
    login_as("mallory")
    assert snap_compare(ReferdeskApp(config=accounts), terminal_size=size)


# --- the command line ------------------------------------------------------------------------------------------------


@pytest.fixture
def users_cli(cli, monkeypatch):
    """`cli` with the users verbs and sign-in wired as tui/cli.py wires them (added here while it does not)."""
    from tui import cli as cli_module
    from tui.commands_users import add_users_parser, authorize_cli

    build, open_ = cli_module.build_parser, cli_module._open

    def build_parser():
        parser = build()
        commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        if "users" not in commands.choices:
            add_users_parser(commands)
        return parser

    def _open(args):
        config = open_(args)
        authorize_cli(args, config)
        return config

    monkeypatch.setattr(cli_module, "build_parser", build_parser)
    monkeypatch.setattr(cli_module, "_open", _open)
    return cli


@pytest.fixture
def cli_accounts(data_dir, tmp_path):
    path = tmp_path / "access.toml"
    path.write_text('[access]\nmode = "accounts"\n')
    return ("--config", path, "--data-dir", data_dir)


def test_cli_unknown_login_gets_exit_1_and_nothing(users_cli, cli_accounts, login_as):
    login_as("mallory")
    code, out, err = users_cli(*cli_accounts, "search", "1000001", "--json")
    assert code == 1 and out == ""
    assert err.strip() == "referdesk: mallory has no referdesk account; ask your administrator"
    code, out, err = users_cli(*cli_accounts, "users", "list")
    assert code == 1 and out == ""


def test_cli_front_desk_searches_and_sends_but_manages_no_accounts(users_cli, cli_accounts, data_dir, login_as):
    from test_cli import _contact

    contact = _contact(data_dir, "verified")
    login_as("frontdesk")
    code, out, _ = users_cli(*cli_accounts, "search", "1000001", "--json")
    assert code == 0 and json.loads(out)[0]
    code, out, err = users_cli(*cli_accounts, "send", "--patient", "1000001", "--via", "direct", "--to",
                               contact.direct_address)
    assert code == 0, err
    code, out, err = users_cli(*cli_accounts, "users", "list")
    assert code == 1 and "Only administrators may manage staff accounts" in err
    code, out, err = users_cli(*cli_accounts, "directory", "import", data_dir / "none.csv")
    assert code == 1 and "Only administrators may change the practice's set-up" in err


def test_cli_password_where_ssh_is_not_trusted(users_cli, cli_accounts, login_as, monkeypatch):
    login_as("admin")
    monkeypatch.setenv("REFERDESK_NEW_PASSWORD", PASSWORD)
    assert users_cli(*cli_accounts, "users", "passwd", "admin")[0] == 0
    login_as("admin", ssh=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal to ask at
    code, _, err = users_cli(*cli_accounts, "users", "list")
    assert code == 1 and "REFERDESK_PASSWORD" in err
    monkeypatch.setenv("REFERDESK_PASSWORD", "wrong password")
    code, _, err = users_cli(*cli_accounts, "users", "list")
    assert code == 1 and "is not the password of the referdesk account admin" in err
    monkeypatch.setenv("REFERDESK_PASSWORD", PASSWORD)
    code, out, _ = users_cli(*cli_accounts, "users", "list", "--json")
    assert code == 0 and {a["username"] for a in json.loads(out)} == {"admin", "frontdesk", "hpark"}


def test_cli_users_verbs(users_cli, cli_accounts, login_as, monkeypatch):
    login_as("admin")
    monkeypatch.setenv("REFERDESK_NEW_PASSWORD", PASSWORD)
    code, _, err = users_cli(*cli_accounts, "users", "add", "dreyes", "--name", "Dana  Reyes", "--role",
                             "front-desk", "--os-user", "dana", "--password")
    assert code == 0, err
    assert "added dreyes (Dana Reyes, front desk), login dana" in err
    code, out, _ = users_cli(*cli_accounts, "users", "list", "--json")
    (dana,) = [a for a in json.loads(out) if a["username"] == "dreyes"]
    assert dana == {"username": "dreyes", "display_name": "Dana Reyes", "role": "front-desk", "os_user": "dana",
                    "active": True, "has_password": True, "provider_npi": ""}
    code, _, err = users_cli(*cli_accounts, "users", "add", "dana2", "--name", "Dana Two", "--role", "clinician",
                             "--os-user", "dana")
    assert code == 1 and "already maps to the account 'dreyes'" in err
    assert users_cli(*cli_accounts, "users", "set-role", "dreyes", "clinician")[0] == 0

    login_as("dana", ssh=False)  # on the console: her password
    monkeypatch.setenv("REFERDESK_PASSWORD", PASSWORD)
    code, out, err = users_cli(*cli_accounts, "search", "1000001", "--json")
    assert code == 0, err
    monkeypatch.setenv("REFERDESK_NEW_PASSWORD", "a new long passphrase")
    assert users_cli(*cli_accounts, "users", "passwd", "dreyes")[0] == 0  # her own
    assert users_cli(*cli_accounts, "search", "1000001")[0] == 1  # the old one no longer signs in
    monkeypatch.setenv("REFERDESK_PASSWORD", "a new long passphrase")
    code, _, err = users_cli(*cli_accounts, "users", "passwd", "hpark")  # someone else's
    assert code == 1 and "Only administrators may manage staff accounts" in err

    login_as("admin")
    assert users_cli(*cli_accounts, "users", "deactivate", "dreyes")[0] == 0
    code, _, err = users_cli(*cli_accounts, "users", "deactivate", "admin")
    assert code == 1 and "last active administrator" in err
    login_as("dana")
    code, out, err = users_cli(*cli_accounts, "search", "1000001")
    assert code == 1 and out == "" and "dana's referdesk account (dreyes) is deactivated" in err


def test_add_account_checks_what_it_is_given(seeded):
    with pytest.raises(UserError, match="not a login-style name"):
        add_account("Dana Reyes", "Dana Reyes", "front-desk")
    with pytest.raises(UserError, match="unknown role"):
        add_account("dreyes", "Dana Reyes", "doctor")
    with pytest.raises(UserError, match="already an account"):
        add_account("hpark", "Helen Park", "clinician", os_user="helen")
    with pytest.raises(UserError, match="already maps to the account 'admin'"):
        add_account("boss", "The Boss", "admin", os_user="admin")


# --- who the audit log names, on the command line ------------------------------------------------------------------


def audit_rows(data_dir, action: str) -> list:
    from models.audit import verify_chain
    from models.db import close_database, open_database
    from models.referrals import AuditEvent

    open_database(sqlite_url(data_dir / "referdesk.db"))
    try:
        assert verify_chain().ok
        return [(r.username, r.patient_mrn, r.outcome, r.detail)
                for r in AuditEvent.select().where(AuditEvent.action == action).order_by(AuditEvent.id)]
    finally:
        close_database()


def test_cli_send_goes_as_the_signed_in_account_and_refuses_another(cli, cli_accounts, data_dir, login_as):
    from test_cli import _contact

    contact = _contact(data_dir, "verified")
    send = ("send", "--patient", "1000001", "--via", "direct", "--to", contact.direct_address)
    login_as("frontdesk")
    code, out, err = cli(*cli_accounts, *send, "--user", "hpark")
    assert code == 1 and out == ""
    assert err.strip() == ("referdesk: --user hpark: you are signed in as frontdesk, and a referral is sent as the "
                           "signed-in account; leave out --user (or give --user frontdesk)")
    assert audit_rows(data_dir, "referral.create") == []  # nothing was sent
    assert audit_rows(data_dir, "access.denied") == [
        ("frontdesk", "", "denied", "via=cli; verb=send; permission=send-referral; reason=other-user")]
    code, out, err = cli(*cli_accounts, *send, "--user", "frontdesk")
    assert code == 0, err
    code, out, err = cli(*cli_accounts, *send)
    assert code == 0, err
    assert [row[0] for row in audit_rows(data_dir, "referral.create")] == ["frontdesk", "frontdesk"]

    login_as("admin")  # an administrator may not send as someone else either
    code, _, err = cli(*cli_accounts, *send, "--user", "hpark")
    assert code == 1 and "you are signed in as admin" in err


def test_cli_send_in_open_mode_names_the_user_given_or_the_login(cli, data_dir, login_as):
    from test_cli import _contact

    contact = _contact(data_dir, "verified")
    login_as("someone")  # a login with no account
    send = ("--data-dir", data_dir, "send", "--patient", "1000001", "--via", "direct", "--to", contact.direct_address)
    assert cli(*send, "--user", "hpark")[0] == 0
    assert cli(*send)[0] == 0
    assert [row[0] for row in audit_rows(data_dir, "referral.create")] == ["hpark", "someone"]


def test_cli_audit_is_for_administrators_and_reading_it_is_recorded(cli, cli_accounts, data_dir, login_as):
    login_as("frontdesk")
    code, out, err = cli(*cli_accounts, "audit")
    assert code == 1 and out == "" and "Only administrators may read the audit log" in err
    login_as("mallory")
    assert cli(*cli_accounts, "search", "1000001")[0] == 1
    assert audit_rows(data_dir, "access.denied") == [
        ("frontdesk", "", "denied", "via=cli; verb=audit; permission=audit; reason=role"),
        ("mallory", "", "denied", "via=cli; verb=search; permission=search; reason=no-account")]
    login_as("admin")
    code, out, err = cli(*cli_accounts, "audit", "--action", "access", "--json")
    assert code == 0, err
    assert [r["username"] for r in json.loads(out)] == ["mallory", "frontdesk"]
    code, out, err = cli(*cli_accounts, "audit", "--verify")
    assert code == 0 and out.startswith("audit chain intact")
    assert audit_rows(data_dir, "audit.view") == [("admin", "", "ok", "via=cli; rows=2; action=access")]
    assert [row[:3] for row in audit_rows(data_dir, "audit.verify")] == [("admin", "", "intact")]


def test_cli_reads_name_the_signed_in_account(cli, cli_accounts, data_dir, login_as):
    login_as("hpark")
    assert cli(*cli_accounts, "search", "1000001")[0] == 0
    assert cli(*cli_accounts, "notes", "--patient", "1000001")[0] == 0
    assert audit_rows(data_dir, "patient.search") == [("hpark", "1000001", "ok", "via=cli; rows=1; patients=1")]
    assert [row[:3] for row in audit_rows(data_dir, "note.list")] == [("hpark", "1000001", "ok")]


def test_cli_account_changes_are_recorded(cli, cli_accounts, data_dir, login_as, monkeypatch):
    login_as("admin")
    monkeypatch.setenv("REFERDESK_NEW_PASSWORD", PASSWORD)
    assert cli(*cli_accounts, "users", "add", "dreyes", "--name", "Dana Reyes", "--role", "front-desk",
               "--password")[0] == 0
    assert cli(*cli_accounts, "users", "set-role", "dreyes", "clinician")[0] == 0
    assert cli(*cli_accounts, "users", "deactivate", "dreyes")[0] == 0
    assert cli(*cli_accounts, "users", "activate", "dreyes")[0] == 0
    assert cli(*cli_accounts, "users", "passwd", "dreyes")[0] == 0
    login_as("frontdesk")
    assert cli(*cli_accounts, "users", "passwd", "hpark")[0] == 1
    got = {action: audit_rows(data_dir, action) for action in ("users.add", "users.set-role", "users.deactivate",
                                                              "users.activate", "users.passwd")}
    assert got == {"users.add": [("admin", "", "ok", "via=cli; role=front-desk; password=set")],
                   "users.set-role": [("admin", "", "ok", "via=cli; role=clinician")],
                   "users.deactivate": [("admin", "", "ok", "via=cli")],
                   "users.activate": [("admin", "", "ok", "via=cli")],
                   "users.passwd": [("admin", "", "ok", "via=cli")]}
    assert audit_rows(data_dir, "access.denied") == [
        ("frontdesk", "", "denied", "via=cli; verb=users-passwd; permission=users; reason=not-self")]
