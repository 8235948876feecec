"""`referdesk users …` (staff accounts) and the command line's side of signing in.

Wired into tui/cli.py by `add_users_parser(commands)`, and `authorize_cli(args, config)` in tui.cli._open: in
`[access] mode = "accounts"` every verb that opens the database first works out who is running it
(models.users.who_is_here) and stops with exit status 1 and the reason when that login has no active account,
then checks the verb's permission (CLI_ACTIONS, models/access.py). In open mode nothing is checked.

Passwords come from the environment (scripts) or a prompt without echo, never from an argument:
REFERDESK_PASSWORD signs in where a password is asked; REFERDESK_NEW_PASSWORD is the one `users add
--password` and `users passwd` set.
"""

from __future__ import annotations

import argparse
import os
import sys

PASSWORD_ENV = "REFERDESK_PASSWORD"
NEW_PASSWORD_ENV = "REFERDESK_NEW_PASSWORD"
PROMPT_TRIES = 3

#: The permission (models/access.py) each verb needs in accounts mode, by its handler's name. None: not checked
#: when the database is opened — the app signs in itself (tui, setup direct), the verb checks for itself
#: (users), or it is a service run by a system account with no staff account (worker, receive). A verb not
#: listed needs an account allowed to search, so a new verb is never open to a login without an account.
CLI_ACTIONS: dict[str, str | None] = {
    "cmd_tui": None,
    "cmd_setup_direct": None,
    "cmd_worker": None,
    "cmd_receive": None,
    "cmd_search": "search",
    "cmd_notes": "view-chart",
    "cmd_ccda": "view-chart",
    "cmd_referrals": "view-chart",
    "cmd_report_cms50": "view-chart",
    "cmd_verify": "prepare-referral",
    "cmd_directory_search": "prepare-referral",
    "cmd_send": "send-referral",
    "cmd_seed": "setup",
    "cmd_directory_import": "setup",
    "cmd_audit": "audit",
    "cmd_users_list": None,
    "cmd_users_add": None,
    "cmd_users_set_role": None,
    "cmd_users_activate": None,
    "cmd_users_deactivate": None,
    "cmd_users_passwd": None,
}
DEFAULT_ACTION = "search"


# --- signing in from the command line ---------------------------------------------------------------------------


def _prompt_allowed() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def sign_in_cli(args: argparse.Namespace, config):
    """Who is running this command (a models.users.Identity), asking the account's password when the login is
    not trusted (REFERDESK_PASSWORD, else a prompt). Raises CommandError when refused. Done once per command:
    the answer is kept on `args`."""
    from tui.cli import CommandError
    from models.users import check_password, who_is_here

    identity = getattr(args, "identity", None)
    if identity is not None:
        return identity
    identity = who_is_here(config)
    args.sign_in_attempt = identity  # who tried, for the audit row should this be refused
    if identity.refused:
        raise CommandError(identity.refusal)
    if identity.needs_password:
        username = identity.account.username
        if os.environ.get(PASSWORD_ENV):
            if not check_password(username, os.environ[PASSWORD_ENV]):
                raise CommandError(f"${PASSWORD_ENV} is not the password of the referdesk account {username}")
        elif not _prompt_allowed():
            raise CommandError(f"the referdesk account {username} needs its password here: run this in a terminal, "
                               f"or give it in ${PASSWORD_ENV}")
        else:
            import getpass

            for _ in range(PROMPT_TRIES):
                if check_password(username, getpass.getpass(f"Password for referdesk account {username}: ")):
                    break
                print("Wrong password.", file=sys.stderr)
            else:
                raise CommandError(f"{PROMPT_TRIES} wrong passwords for the referdesk account {username}")
    args.identity = identity
    return identity


def authorize_cli(args: argparse.Namespace, config, action: str | None = None) -> None:
    """Sign in and check `action` (by default the verb's, from CLI_ACTIONS). Nothing is checked in open mode,
    but who runs the command is still worked out (`actor_of`) for the audit log. A refusal — a login without
    an active account, a wrong password, a role not allowed the verb — is itself audited (`access.denied`)."""
    from models.access import refusal
    from models.users import UserError, access_settings
    from tui.cli import CommandError

    verb = getattr(getattr(args, "handler", None), "__name__", "").removeprefix("cmd_")
    if action is None:
        name = getattr(getattr(args, "handler", None), "__name__", "")
        if name in CLI_ACTIONS and CLI_ACTIONS[name] is None:
            try:  # not checked here; in open mode, still who it is, for the verb's own audit rows
                if access_settings(config).mode == "open":
                    _set_open_actor(args, config)
            except UserError:
                pass  # said by whatever the verb does next (the app's refusal screen, `users`'s own check)
            return
        action = CLI_ACTIONS.get(name, DEFAULT_ACTION)
    try:
        if access_settings(config).mode == "open":
            _set_open_actor(args, config)
            return
    except UserError as exc:
        raise CommandError(str(exc)) from exc
    try:
        identity = sign_in_cli(args, config)
    except CommandError:
        attempt = getattr(args, "sign_in_attempt", None)
        _record_denied(args, action, verb, "no-account" if attempt is None or attempt.refused else "password")
        raise
    args.actor = identity.username
    if not identity.can(action):
        account = identity.account
        _record_denied(args, action, verb, "role")
        raise CommandError(refusal(action, account.username, account.role)[:-1])


def _set_open_actor(args: argparse.Namespace, config) -> None:
    """Open mode: the account the operating-system login maps to, else the login itself, names who did it."""
    if getattr(args, "actor", ""):
        return
    from models.users import who_is_here

    identity = who_is_here(config)
    args.actor = identity.username or identity.login


def actor_of(args: argparse.Namespace) -> str:
    """The username a command's audit rows carry: the signed-in account in accounts mode; in open mode the
    account the login maps to, else the operating-system login (for verbs not signed in, e.g. `receive`)."""
    actor = getattr(args, "actor", "")
    if actor:
        return actor
    identity = getattr(args, "identity", None)
    if identity is not None and identity.username:
        return identity.username
    from models.users import os_login

    return os_login()


def acting_user(args: argparse.Namespace, config, named: str | None) -> str:
    """Who a referral is sent as (`referdesk send --user NAME`). Accounts mode: the signed-in account, always;
    a --user naming another account is refused (and audited), not honoured — not even for an administrator,
    since a row saying someone else sent it is exactly what the audit log must not hold. Open mode (one user,
    no sign-in): --user as given, else who runs it."""
    from models.users import UserError, access_settings
    from tui.cli import CommandError

    named = (named or "").strip()
    try:
        accounts = access_settings(config).mode == "accounts"
    except UserError as exc:
        raise CommandError(str(exc)) from exc
    if not accounts:
        return named or actor_of(args)
    identity = sign_in_cli(args, config)
    if named and named != identity.username:
        _record_denied(args, "send-referral", "send", "other-user")
        raise CommandError(f"--user {named}: you are signed in as {identity.username}, and a referral is sent "
                           f"as the signed-in account; leave out --user (or give --user {identity.username})")
    return identity.username


def _record_denied(args: argparse.Namespace, action: str, verb: str, reason: str) -> None:
    """An `access.denied` row: who (the account, else the login), which permission, which verb, and why in a
    word (role, password, no-account, not-self). Never raises: the refusal the person sees matters more."""
    from models.audit import record

    identity = getattr(args, "identity", None) or getattr(args, "sign_in_attempt", None)
    username = (identity.username or identity.login) if identity is not None else ""
    if not username:
        from models.users import os_login

        username = os_login()
    try:
        record("access.denied", username=username, outcome="denied",
               detail=f"via=cli; verb={verb.replace('_', '-')}; permission={action}; reason={reason}")
    except Exception:  # noqa: BLE001 - e.g. the database is read-only: the refusal still stands
        pass


def read_new_password(username: str) -> str:
    """The password to set: $REFERDESK_NEW_PASSWORD, else typed twice at a prompt."""
    from tui.cli import CommandError

    if os.environ.get(NEW_PASSWORD_ENV):
        return os.environ[NEW_PASSWORD_ENV]
    if not _prompt_allowed():
        raise CommandError(f"type the new password in a terminal, or give it in ${NEW_PASSWORD_ENV}; "
                           "never as an argument")
    import getpass

    first = getpass.getpass(f"New password for {username}: ")
    if getpass.getpass("Type it again: ") != first:
        raise CommandError("the two passwords differ; nothing was changed")
    return first


# --- the verbs -------------------------------------------------------------------------------------------------


def _opened(args: argparse.Namespace, action: str | None = "users"):
    from tui.cli import _open

    config = _open(args)
    if action is not None:
        authorize_cli(args, config, action)
    return config


def cmd_users_list(args: argparse.Namespace) -> int:
    from tui.cli import _print_json, _say

    _opened(args)
    from models.users import list_accounts

    accounts = list_accounts()
    if args.json:
        _print_json([a.as_json() for a in accounts])
        return 0
    if not accounts:
        _say("no accounts yet; add one with: referdesk users add USERNAME --name NAME --role ROLE")
    for a in accounts:
        state = "active" if a.active else "DEACTIVATED"
        password = "password" if a.has_password else "no password"
        print(f"{a.username:<16} {a.role:<10} login {a.os_user:<16} {state:<11} {password:<11}  {a.display_name}")
    return 0


def _audit_change(args: argparse.Namespace, action: str, account, detail: str = "") -> None:
    """A set-up change to staff accounts, by whom, on which account (its username; never the password)."""
    from models.audit import record

    record(action, username=actor_of(args), object_type="user", object_id=account.username,
           detail="; ".join(part for part in ("via=cli", detail) if part))


def _changed(action):
    from models.users import UserError
    from tui.cli import CommandError

    try:
        return action()
    except UserError as exc:
        raise CommandError(str(exc)) from exc


def cmd_users_add(args: argparse.Namespace) -> int:
    from tui.cli import _say

    _opened(args)
    from models.users import add_account, check_password_strength

    password = None
    if args.password:
        password = read_new_password(args.username)
        _changed(lambda: check_password_strength(password))
    account = _changed(lambda: add_account(args.username, args.name, args.role, os_user=args.os_user or "",
                                           password=password))
    _audit_change(args, "users.add", account, f"role={account.role}; password={'set' if password else 'none'}")
    _say(f"added {account.username} ({account.display_name}, {account.role_name}), login {account.os_user}"
         + ("" if account.has_password else "; no password: signs in over SSH only"))
    return 0


def cmd_users_set_role(args: argparse.Namespace) -> int:
    from tui.cli import _say

    _opened(args)
    from models.users import set_role

    account = _changed(lambda: set_role(args.username, args.role))
    _audit_change(args, "users.set-role", account, f"role={account.role}")
    _say(f"{account.username} is now {account.role_name}")
    return 0


def cmd_users_deactivate(args: argparse.Namespace) -> int:
    from tui.cli import _say

    _opened(args)
    from models.users import set_active

    account = _changed(lambda: set_active(args.username, False))
    _audit_change(args, "users.deactivate", account)
    _say(f"{account.username} is deactivated: login {account.os_user} can no longer use referdesk")
    return 0


def cmd_users_activate(args: argparse.Namespace) -> int:
    from tui.cli import _say

    _opened(args)
    from models.users import set_active

    account = _changed(lambda: set_active(args.username, True))
    _audit_change(args, "users.activate", account)
    _say(f"{account.username} is active again")
    return 0


def cmd_users_passwd(args: argparse.Namespace) -> int:
    """Set an account's password: an administrator's any, anyone's their own."""
    from models.access import refusal
    from models.users import access_settings, set_password
    from tui.cli import CommandError, _say

    config = _opened(args, action=None)
    if _changed(lambda: access_settings(config)).mode == "accounts":
        identity = sign_in_cli(args, config)
        if identity.username != args.username and not identity.can("users"):
            account = identity.account
            _record_denied(args, "users", "users_passwd", "not-self")
            raise CommandError(refusal("users", account.username, account.role)[:-1]
                               + f"; you may set your own with: referdesk users passwd {account.username}")
    from models.users import get_account

    _changed(lambda: get_account(args.username))  # an unknown name is said before the password is asked
    password = read_new_password(args.username)
    account = _changed(lambda: set_password(args.username, password))
    _audit_change(args, "users.passwd", account)
    _say(f"password set for {account.username}")
    return 0


def add_users_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `users` and its verbs to the top-level subcommands (`commands` in tui.cli.build_parser)."""
    from models.access import ROLES

    help_text = "staff accounts: list, add, set-role, deactivate, activate, passwd (administrators)"
    users = commands.add_parser("users", help=help_text, description=help_text)

    def usage(_args: argparse.Namespace) -> int:
        users.print_help(sys.stderr)
        return 2

    users.set_defaults(handler=usage)
    verbs = users.add_subparsers(title="users commands", metavar="VERB")

    listing = verbs.add_parser("list", help="every account: username, role, login, active, password set, name")
    listing.set_defaults(handler=cmd_users_list)
    listing.add_argument("--json", action="store_true")

    add = verbs.add_parser("add", help="add an account; its login defaults to its username")
    add.set_defaults(handler=cmd_users_add)
    add.add_argument("username", metavar="USERNAME")
    add.add_argument("--name", required=True, metavar="NAME", help="the person's name, e.g. 'Dana Reyes'")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--os-user", metavar="LOGIN", help="the operating-system login that is this account "
                     "(default: USERNAME)")
    add.add_argument("--password", action="store_true", help=f"set a password too: typed twice at a prompt, or "
                     f"${NEW_PASSWORD_ENV} (needed to sign in other than over a trusted SSH login)")

    set_role = verbs.add_parser("set-role", help="change an account's role")
    set_role.set_defaults(handler=cmd_users_set_role)
    set_role.add_argument("username", metavar="USERNAME")
    set_role.add_argument("role", metavar="ROLE", choices=ROLES, help=", ".join(ROLES))

    deactivate = verbs.add_parser("deactivate", help="stop an account signing in (its history keeps its name)")
    deactivate.set_defaults(handler=cmd_users_deactivate)
    deactivate.add_argument("username", metavar="USERNAME")

    activate = verbs.add_parser("activate", help="let a deactivated account sign in again")
    activate.set_defaults(handler=cmd_users_activate)
    activate.add_argument("username", metavar="USERNAME")

    passwd = verbs.add_parser("passwd", help=f"set an account's password (typed twice, or ${NEW_PASSWORD_ENV}); "
                              "anyone may set their own")
    passwd.set_defaults(handler=cmd_users_passwd)
    passwd.add_argument("username", metavar="USERNAME")
    return users
