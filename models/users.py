"""Staff accounts and signing in: which account the person at the keyboard is, and whether they need a password.

`[access] mode` in the configuration decides how strict this is:

- `open` (the default: a single-user install, the demo, the tests): everything is allowed, as it always was.
  The operating-system login's account, when one maps to it, only names who did what (the audit log, "resent
  by …"); otherwise the user is nobody in particular.
- `accounts` (a practice server that staff reach over SSH): the operating-system login must map to an active
  account, or referdesk shows nothing at all. What the account may then do is its role's (models/access.py).
  When the SSH login already authenticated the person (`SSH_CONNECTION` is set and `[access] trusted_ssh` is
  true, the default) no second password is asked; otherwise — the local console, or `trusted_ssh = false` —
  the account's own password is.

An account's login (`os_user`) defaults to its username. The login is the real user id's name (`pwd`), never
`$USER` or `$LOGNAME`, which anyone can set: `REFERDESK_OS_USER` overrides it only for root, who could become
that user anyway (`sudo REFERDESK_OS_USER=hpark referdesk` lets an administrator try an account).
`SSH_CONNECTION` can be set by hand too, but only by someone already logged in as that login, so it grants no
more than an SSH login as that login would.

Passwords are stored as `scrypt$n$r$p$salt$hash` (RFC 7914 scrypt, a 16-byte random salt, base64) and compared
in constant time. Passwords come from a prompt or the environment, never from an argument or the file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import peewee as pw

from models.access import ROLE_NAMES, ROLES
from models.access import can as role_can
from models.db import database
from models.practice import User

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
#: Bounds on the parameters a stored hash may ask for, so a tampered row cannot make a check take minutes.
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16

MODES = ("open", "accounts")
OS_USER_ENV = "REFERDESK_OS_USER"
_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")  # a POSIX-style login name


class UserError(Exception):
    """An account change that cannot be made as asked; the message says what to do instead."""


# --- password hashing -----------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$16384$8$1$<salt>$<hash>` for `password` (checked for length first)."""
    check_password_strength(password)
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=HASH_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` is the one `encoded` was made from. False for an empty or malformed hash."""
    try:
        scheme, n_text, r_text, p_text, salt_text, hash_text = encoded.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt = base64.b64decode(salt_text, validate=True)
        expected = base64.b64decode(hash_text, validate=True)
    except (ValueError, AttributeError):
        return False
    if (scheme != "scrypt" or not 1 < n <= _MAX_N or n & (n - 1) or not 0 < r <= _MAX_R or not 0 < p <= _MAX_P
            or not salt or not expected):
        return False
    if len(password) > MAX_PASSWORD:
        return False
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(expected),
                            maxmem=128 * r * (n + p + 2) + (1 << 20))
    return hmac.compare_digest(digest, expected)


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters; a few words together are easy "
                        "to remember and hard to guess")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"a password may have at most {MAX_PASSWORD} characters")


# --- accounts ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """A staff account as the screens and the command line see it (never its password hash)."""

    username: str
    display_name: str
    role: str
    os_user: str  # the login that maps to it (its username unless set otherwise)
    active: bool
    has_password: bool
    provider_npi: str = ""

    @property
    def role_name(self) -> str:
        return ROLE_NAMES.get(self.role, self.role)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _account(user: User) -> Account:
    npi = user.provider.npi if user.provider_id is not None else ""
    return Account(username=user.username, display_name=user.display_name, role=user.role,
                   os_user=user.os_user or user.username, active=bool(user.active),
                   has_password=bool(user.password_hash), provider_npi=npi)


def _logging_in_as(login: str) -> pw.Expression:
    """The accounts `login` maps to: its own os_user, or no os_user and that username."""
    return (User.os_user == login) | ((User.os_user == "") & (User.username == login))


def _get(username: str) -> User:
    user = User.get_or_none(User.username == username)
    if user is None:
        raise UserError(f"there is no account {username!r}; see them with: referdesk users list")
    return user


def _check_name(value: str, what: str) -> str:
    value = value.strip()
    if not _NAME.match(value):
        raise UserError(f"{what} {value!r} is not a login-style name: lower-case letters, digits, '.', '_' or "
                        "'-', starting with a letter or '_', at most 64 characters")
    return value


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
    return role


def list_accounts() -> list[Account]:
    return [_account(u) for u in User.select().order_by(User.username)]


def get_account(username: str) -> Account:
    return _account(_get(username))


def add_account(username: str, display_name: str, role: str, *, os_user: str = "",
                password: str | None = None) -> Account:
    """Create an active account. `os_user` defaults to the username; no two accounts share a login."""
    username = _check_name(username, "username")
    os_user = _check_name(os_user, "login") if os_user.strip() else username
    display_name = " ".join(display_name.split())
    if not display_name or not display_name.isprintable():
        raise UserError("give the person's name with --name, e.g. --name 'Dana Reyes'")
    _check_role(role)
    password_hash = hash_password(password) if password else ""
    with database.atomic():
        if User.select().where(User.username == username).exists():
            raise UserError(f"there is already an account {username!r}")
        taken = User.select().where(_logging_in_as(os_user)).first()
        if taken is not None:
            raise UserError(f"the login {os_user!r} already maps to the account {taken.username!r}; "
                            "give this one its own with --os-user LOGIN")
        user = User.create(username=username, display_name=display_name, role=role, os_user=os_user,
                           password_hash=password_hash, active=True)
    return _account(user)


def _last_admin(user: User) -> bool:
    if user.role != "admin" or not user.active:
        return False
    return not User.select().where(User.role == "admin", User.active == True,  # noqa: E712
                                   User.id != user.id).exists()


def set_role(username: str, role: str) -> Account:
    _check_role(role)
    with database.atomic():
        user = _get(username)
        if role != "admin" and _last_admin(user):
            raise UserError(f"{username} is the last active administrator; make another account an "
                            "administrator first, or nobody could manage accounts")
        user.role = role
        user.save()
    return _account(user)


def set_active(username: str, active: bool) -> Account:
    """Deactivate (the account can no longer sign in; its history keeps its name) or reactivate."""
    with database.atomic():
        user = _get(username)
        if not active and _last_admin(user):
            raise UserError(f"{username} is the last active administrator; make another account an "
                            "administrator first, or nobody could manage accounts")
        user.active = active
        user.save()
    return _account(user)


def set_password(username: str, password: str) -> Account:
    password_hash = hash_password(password)
    user = _get(username)
    user.password_hash = password_hash
    user.save()
    return _account(user)


def check_password(username: str, password: str) -> bool:
    """Whether `password` is the active account `username`'s. Slow on purpose (scrypt): call it off the UI."""
    user = User.get_or_none(User.username == username, User.active == True)  # noqa: E712
    return user is not None and verify_password(password, user.password_hash)


# --- who is at the keyboard -----------------------------------------------------------------------------------


def os_login(env: Mapping[str, str] | None = None) -> str:
    """The operating-system login running referdesk: the real user id's name, not `$USER`. Root (only) may
    name another with REFERDESK_OS_USER, since root can become any login anyway."""
    env = os.environ if env is None else env
    override = (env.get(OS_USER_ENV) or "").strip()
    if override and hasattr(os, "geteuid") and os.geteuid() == 0:
        return override
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # no passwd entry for this uid (a bare container), or not POSIX
        import getpass

        return getpass.getuser()


@dataclass(frozen=True)
class AccessSettings:
    mode: str = "open"
    trusted_ssh: bool = True


def access_settings(config: Any) -> AccessSettings:
    """`[access]` of the configuration (a models.config.Config, or None for the defaults). Raises UserError
    for a value that is not understood, so a typo never opens a practice server."""
    values = config.section("access") if config is not None else {}
    mode = values.get("mode", "open")
    trusted = values.get("trusted_ssh", True)
    if mode not in MODES:
        raise UserError(f"[access] mode must be \"open\" or \"accounts\", not {mode!r}; fix the configuration")
    if not isinstance(trusted, bool):
        raise UserError(f"[access] trusted_ssh must be true or false, not {trusted!r}; fix the configuration")
    return AccessSettings(mode=mode, trusted_ssh=trusted)


@dataclass(frozen=True)
class Identity:
    """Who is at the keyboard and what happens next: refused (with the sentence why), asked for the account's
    password, or straight in."""

    mode: str
    login: str
    account: Account | None = None
    refusal: str = ""
    needs_password: bool = False

    @property
    def username(self) -> str:
        return self.account.username if self.account is not None else ""

    @property
    def refused(self) -> bool:
        return bool(self.refusal)

    def can(self, action: str) -> bool:
        """Open mode allows everything; in accounts mode it is the account's role's (none when refused)."""
        if self.mode == "open":
            role_can(None, action)  # still rejects an unknown action
            return True
        return not self.refusal and self.account is not None and role_can(self.account.role, action)


def _find(login: str) -> tuple[Account | None, str]:
    """The active account `login` maps to, or None and the sentence why not."""
    users = list(User.select().where(_logging_in_as(login)).order_by(User.username))
    active = [u for u in users if u.active]
    if len(active) == 1:
        return _account(active[0]), ""
    if len(active) > 1:
        names = ", ".join(u.username for u in active)
        return None, (f"{login} is the login of more than one referdesk account ({names}); ask your administrator "
                      "to give each account its own login")
    if users:
        return None, f"{login}'s referdesk account ({users[0].username}) is deactivated; ask your administrator"
    return None, f"{login} has no referdesk account; ask your administrator"


def who_is_here(config: Any, env: Mapping[str, str] | None = None) -> Identity:
    """Work out who is using referdesk now (see the module's docstring). Reads one indexed row."""
    env = os.environ if env is None else env
    login = os_login(env)
    try:
        settings = access_settings(config)
    except UserError as exc:
        return Identity(mode="accounts", login=login, refusal=str(exc))
    if settings.mode == "open":
        account = _find(login)[0] if database.obj is not None else None
        return Identity(mode="open", login=login, account=account)
    account, why = _find(login)
    if account is None:
        return Identity(mode="accounts", login=login, refusal=why)
    if settings.trusted_ssh and env.get("SSH_CONNECTION"):
        return Identity(mode="accounts", login=login, account=account)
    if not account.has_password:
        where = ("here: only an SSH login is trusted without one" if settings.trusted_ssh
                 else "and this practice asks for one at every sign-in")
        return Identity(mode="accounts", login=login, account=account,
                        refusal=f"{login}'s referdesk account ({account.username}) has no password set, {where}; "
                                f"ask your administrator to set one (referdesk users passwd {account.username})")
    return Identity(mode="accounts", login=login, account=account, needs_password=True)


# --- schema ------------------------------------------------------------------------------------------------------

#: The columns this change adds to `user`, as written now (not read from the model, which may change later).
_USER_COLUMNS = [
    ("os_user", "VARCHAR(255) NOT NULL DEFAULT ''"),
    ("password_hash", "VARCHAR(255) NOT NULL DEFAULT ''"),
]


def migrate_users(db: pw.Database) -> None:
    """Schema step: each account's operating-system login and password hash. Plain ALTER TABLE ADD COLUMN with
    a default, skipped for a column already there (a new database gets them from the model)."""
    table = User._meta.table_name
    have = {column.name for column in db.get_columns(table)}
    open_q, close_q = db.quote[0], db.quote[1]
    for name, ddl in _USER_COLUMNS:
        if name not in have:
            db.execute_sql(f"ALTER TABLE {open_q}{table}{close_q} ADD COLUMN {open_q}{name}{close_q} {ddl}")
