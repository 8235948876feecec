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
    """Sign in and check `action` (by default the verb's, from CLI_ACTIONS). Nothing at all in open mode."""
    from models.access import refusal
    from models.users import UserError, access_settings
    from tui.cli import CommandError

    if action is None:
        name = getattr(getattr(args, "handler", None), "__name__", "")
        if name in CLI_ACTIONS and CLI_ACTIONS[name] is None:
            return
        action = CLI_ACTIONS.get(name, DEFAULT_ACTION)
    try:
        if access_settings(config).mode == "open":
            return
    except UserError as exc:
        raise CommandError(str(exc)) from exc
    identity = sign_in_cli(args, config)
    if not identity.can(action):
        account = identity.account
        raise CommandError(refusal(action, account.username, account.role)[:-1])


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
    _say(f"added {account.username} ({account.display_name}, {account.role_name}), login {account.os_user}"
         + ("" if account.has_password else "; no password: signs in over SSH only"))
    return 0


def cmd_users_set_role(args: argparse.Namespace) -> int:
    from tui.cli import _say

    _opened(args)
    from models.users import set_role

    account = _changed(lambda: set_role(args.username, args.role))
    _say(f"{account.username} is now {account.role_name}")
    return 0


def cmd_users_deactivate(args: argparse.Namespace) -> int:
    from tui.cli import _say

    _opened(args)
    from models.users import set_active

    account = _changed(lambda: set_active(args.username, False))
    _say(f"{account.username} is deactivated: login {account.os_user} can no longer use referdesk")
    return 0


def cmd_users_activate(args: argparse.Namespace) -> int:
    from tui.cli import _say

    _opened(args)
    from models.users import set_active

    account = _changed(lambda: set_active(args.username, True))
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
            raise CommandError(refusal("users", account.username, account.role)[:-1]
                               + f"; you may set your own with: referdesk users passwd {account.username}")
    from models.users import get_account

    _changed(lambda: get_account(args.username))  # an unknown name is said before the password is asked
    password = read_new_password(args.username)
    account = _changed(lambda: set_password(args.username, password))
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
