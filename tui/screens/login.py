"""Signing in (models/users.py decides who is at the keyboard; this only asks and shows).

`LoginScreen` asks the account's password when the SSH login is not trusted to have authenticated the person
(the local console, or `[access] trusted_ssh = false`): three tries, then referdesk closes. `RefusalScreen` is
all an unknown login, a deactivated account or a refused start (`referdesk setup direct` by a non-administrator)
ever sees: one sentence saying why and whom to ask, and no practice data. Neither has a header, so nothing on
them opens the command palette or another screen (the app refuses its own keys until someone is signed in).
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static
from textual.worker import Worker, WorkerState

from models.safe_text import one_line
from models.users import Account

TRIES = 3


def full_stop(text: str) -> str:
    """A reason as a sentence. Not capitalised: reasons begin with a login, and logins are lower-case."""
    return text if text.endswith(".") else text + "."


class LoginScreen(Screen[bool | None]):
    """The account's password; dismissed True when it is right, False after the last wrong try, None on Esc."""

    CSS_PATH = "login.tcss"
    BINDINGS = [
        Binding("enter", "sign_in", "Sign in", id="login.sign_in", priority=True),
        Binding("escape", "leave", "Quit", id="login.quit"),
    ]

    def __init__(self, login: str, account: Account) -> None:
        super().__init__()
        self.login = login
        self.account = account
        self.tries_left = TRIES
        self.checking = False

    def compose(self) -> ComposeResult:
        account = self.account
        with Vertical(id="login-box", classes="access-box"):
            yield Static("referdesk — sign in", classes="access-title")
            yield Static(f"Logged in to this computer as {one_line(self.login)}: the referdesk account "
                         f"{one_line(account.username)} ({one_line(account.display_name)}, {account.role_name}).",
                         id="login-who", markup=False)
            yield Label("Password", id="password-label")
            yield Input(password=True, max_length=1024, id="password")
            yield Static("", id="login-message", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        box = self.query_one("#password", Input)
        box.cursor_blink = getattr(self.app, "cursor_blink", False)
        box.focus()

    def action_sign_in(self) -> None:
        box = self.query_one("#password", Input)
        if self.checking:
            return
        if not box.value:
            self._say("Type the password of your referdesk account, then Enter.", error=False)
            return
        self.checking = True
        box.disabled = True
        self._say("Checking…", error=False)
        self._check(box.value)

    @work(thread=True, exclusive=True, group="login", exit_on_error=False)
    def _check(self, password: str) -> None:
        from models.db import database
        from models.users import check_password

        with database.connection_context():
            right = check_password(self.account.username, password)
            if not right:
                _record_wrong_password(self.account.username)
        self.app.call_from_thread(self._checked, right)

    def _checked(self, right: bool) -> None:
        self.checking = False
        if right:
            self.dismiss(True)
            return
        self.tries_left -= 1
        if self.tries_left <= 0:
            self.dismiss(False)
            return
        box = self.query_one("#password", Input)
        box.disabled = False
        box.value = ""
        box.focus()
        tries = f"{self.tries_left} {'try' if self.tries_left == 1 else 'tries'} left"
        self._say(f"Wrong password ({tries}). After {TRIES} wrong ones referdesk closes.", error=True)

    @on(Worker.StateChanged)
    def _check_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.group == "login":
            self.checking = False
            box = self.query_one("#password", Input)
            box.disabled = False
            box.focus()
            self._say(f"The password could not be checked ({type(event.worker.error).__name__}): the database "
                      "did not answer. Try again.", error=True)

    def _say(self, text: str, *, error: bool) -> None:
        message = self.query_one("#login-message", Static)
        message.update(text)
        message.set_class(error, "-error")

    def action_leave(self) -> None:
        self.dismiss(None)


def _record_wrong_password(username: str) -> None:
    """Each wrong password is an `access.denied` row (a guessing attempt shows in the log); never raises."""
    from models.audit import record

    try:
        record("access.denied", username=username, outcome="denied", detail="via=tui; reason=password")
    except Exception:  # noqa: BLE001 - the refusal the person sees matters more than the row
        pass


class RefusalScreen(Screen[None]):
    """Why this person cannot use referdesk (or cannot do what they started it for), and nothing else."""

    CSS_PATH = "login.tcss"
    BINDINGS = [Binding("escape,enter,q", "leave", "Close", id="refusal.close")]

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = full_stop(reason)

    def compose(self) -> ComposeResult:
        with Vertical(id="refusal-box", classes="access-box"):
            yield Static("referdesk — not available", classes="access-title")
            yield Static(self.reason, id="refusal-reason", markup=False)
            yield Static("Press Enter or Esc to close.", id="refusal-hint")
        yield Footer(compact=True)

    def action_leave(self) -> None:
        self.dismiss(None)
