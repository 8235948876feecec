"""The referdesk Textual application: owns navigation, the theme, key bindings and the configuration.

Screens present and delegate; this class only knows how to get from one screen to another.
"""

from __future__ import annotations

from functools import partial
from typing import Iterable

from rich.segment import Segment
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.filter import LineFilter
from textual.screen import Screen

from models.config import Config
from models.safe_text import has_unsafe, strip_unsafe


class TerminalSafe(LineFilter):
    """The last line of defence for text from outside (models.safe_text): Textual and Rich pass ESC, C1 and
    bidi controls in a widget's text straight to the terminal, so they are removed from every rendered line.
    They take no cells, so nothing moves; the screens that show names make them visible first (display_text)."""

    def apply(self, segments: list[Segment], background) -> list[Segment]:
        if not any(not control and has_unsafe(text) for text, _, control in segments):
            return segments
        cleaned = [segment if segment.control else Segment(strip_unsafe(segment.text), segment.style)
                   for segment in segments]
        return [segment for segment in cleaned if segment.text or segment.control]


class ReferdeskApp(App[None]):
    TITLE = "referdesk"
    CSS_PATH = "app.tcss"
    # Global keys stay out of the footer (it shows the current screen's keys); Help and the palette list them.
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", show=False),
        Binding("f2,ctrl+f", "search_patients", "Patients", id="app.patients", show=False),
        Binding("f3,ctrl+r", "referrals", "Referrals", id="app.referrals", show=False),
        Binding("f4,ctrl+o", "practice_documents", "Documents", id="app.documents", show=False),
        Binding("f5,ctrl+g", "inbox", "Inbox", id="app.inbox", show=False),
        Binding("f7,ctrl+t", "audit_log", "Audit log", id="app.audit", show=False),
        Binding("f1,question_mark", "help", "Help", id="app.help"),
    ]
    # Screens lay out tighter on 24-line terminals ("-short") than on tall ones.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]

    def __init__(self, config: Config | None = None, *, demo: bool = False, username: str = "",
                 start: str = "search") -> None:
        super().__init__()
        self._filters.append(TerminalSafe())  # Textual's own hook for post-render filters (NO_COLOR uses it)
        self.start = start
        self.config = config
        self.demo = demo
        self.username = username
        self.outbox = None  # the in-app outbox worker (transports.outbox.BackgroundOutbox) when Direct is set up
        self.identity = None  # models.users.Identity: who is at the keyboard (set on mount)
        self.signed_in = False  # until then the app's own keys (F2, F3, the palette…) do nothing
        ui = config.section("ui") if config else {}
        self.cursor_blink = bool(ui.get("cursor_blink", False))
        if ui.get("theme"):
            self.theme = str(ui["theme"])
        if demo:
            self.sub_title = "demo — synthetic patients only"

    def on_mount(self) -> None:
        keymap = self.config.section("keymap") if self.config else {}
        if keymap:
            self.set_keymap({str(k): str(v) for k, v in keymap.items()})
        self.sign_in()

    # --- access (models/users.py, models/access.py) ---------------------------------------------------------

    def sign_in(self) -> None:
        """Refused (a screen saying why, then exit), asked for the account's password, or straight in."""
        from models.users import who_is_here

        identity = self.identity = who_is_here(self.config)
        if identity.mode == "accounts" or not self.username:
            self.username = identity.username
        if identity.refused:
            self._audit_access("access.denied", "denied", "reason=no-account")
            self._refuse(identity.refusal)
        elif identity.needs_password:
            from tui.screens.login import LoginScreen

            self.push_screen(LoginScreen(identity.login, identity.account), self._signed_in)
        else:
            self._signed_in(True)

    def _signed_in(self, ok: bool | None) -> None:
        if not ok:
            from tui.screens.login import TRIES

            self.exit(None, return_code=1, message=None if ok is None else
                      f"{TRIES} wrong passwords: referdesk closed. Ask your administrator if it is forgotten.")
            return
        self.signed_in = True
        if self.identity is not None and self.identity.mode == "accounts":
            how = "password" if self.identity.needs_password else "trusted-ssh"
            self._audit_access("session.start", "ok", f"sign-in={how}")
        self._start()

    def _audit_access(self, action: str, outcome: str, detail: str) -> None:
        """A sign-in or a refusal in the audit log (who: the account, else the login). Never stops the app: a
        refusal stands, and a sign-in goes on, if the row cannot be written."""
        from models.audit import record

        identity = self.identity
        who = (identity.username or identity.login) if identity is not None else ""
        try:
            record(action, username=who, outcome=outcome, detail=f"via=tui; {detail}")
        except Exception:  # noqa: BLE001 - e.g. a read-only database
            pass

    def _refuse(self, reason: str) -> None:
        from tui.screens.login import RefusalScreen, full_stop

        self.push_screen(RefusalScreen(reason), lambda _: self.exit(None, return_code=1, message=full_stop(reason)))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Until someone is signed in, only quitting and moving the focus work: no F2, F3, Help or palette."""
        return self.signed_in or action in ("quit", "help_quit", "focus_next", "focus_previous", "bell")

    def can(self, action: str) -> bool:
        """Whether the signed-in person may do `action` (models/access.py); everything in open mode."""
        return self.signed_in and self.identity is not None and self.identity.can(action)

    def allowed(self, action: str) -> bool:
        """`can`, saying who may when the answer is no: call it first in an action's handler."""
        if self.can(action):
            return True
        self.notify(self._refusal(action), title="Not allowed", severity="warning", markup=False, timeout=8)
        return False

    def _refusal(self, action: str) -> str:
        from models.access import refusal

        account = self.identity.account if self.identity is not None else None
        return refusal(action, account.username if account else "", account.role if account else None)

    # --- end of access ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        self.start_outbox()
        if self.start == "direct-setup":
            if not self.can("setup"):  # access: `referdesk setup direct` is the administrator's
                self._refuse(self._refusal("setup"))
                return
            from tui.screens.direct_setup import DirectSetupScreen

            self.push_screen(DirectSetupScreen(), self.exit)
            return
        from tui.screens.patient_search import PatientSearchScreen

        self.push_screen(PatientSearchScreen())

    def start_outbox(self) -> None:
        """Send queued referrals (Direct, eFax) while the app is open, so a single-user install needs no
        separate worker (`[worker] in_app = false` when a `referdesk worker` service does it)."""
        from transports.direct.setup import direct_settings_missing

        if self.outbox is not None or self.config is None or not self.config.section("worker").get("in_app", True):
            return
        if direct_settings_missing(self.config) and not self.config.section("efax").get("provider"):
            return
        from transports.outbox import BackgroundOutbox, OutboxWorker

        self.outbox = BackgroundOutbox(OutboxWorker(self.config),
                                       poll=float(self.config.section("worker").get("poll_seconds", 5)))
        self.outbox.start()

    def kick_outbox(self) -> bool:
        """Start sending now (a referral was just queued); False when no in-app worker runs."""
        if self.outbox is None:
            return False
        self.outbox.kick()
        return True

    def on_unmount(self) -> None:
        if self.outbox is not None:
            self.outbox.stop()

    # --- navigation ---------------------------------------------------------------------------------------

    def _leaving_would_lose_work(self) -> bool:
        """Global keys must not silently throw away a dialog, a message being written or the Direct set-up:
        those are left with Esc (which asks where something was typed)."""
        from textual.screen import ModalScreen

        from tui.screens.compose import ComposeScreen
        from tui.screens.direct_setup import DirectSetupScreen

        if isinstance(self.screen, (ModalScreen, ComposeScreen, DirectSetupScreen)):
            self.notify("Finish this window, or leave it with Esc, first.", severity="warning")
            return True
        return False

    def _back_to_search(self) -> None:
        from tui.screens.patient_search import PatientSearchScreen

        while len(self.screen_stack) > 2 and not isinstance(self.screen, PatientSearchScreen):
            self.pop_screen()

    def action_search_patients(self) -> None:
        """Back to patient search from anywhere, keeping nothing of the chart that was open."""
        if self._leaving_would_lose_work():
            return
        self._back_to_search()
        self.screen.query_one("#query").focus()

    def open_patient(self, mrn: str, section: str = "face") -> None:
        from tui.screens.chart import ChartScreen

        self.push_screen(ChartScreen(mrn, section=section))

    def open_note(self, note_id: int) -> None:
        from tui.screens.note_view import NoteViewScreen

        self.push_screen(NoteViewScreen(note_id))

    def start_referral(self, note_id: int, channel: str, direction: str) -> None:
        """Send Referral By …: the referral dialog, then the message window, then the outcome on the note.

        The first use of Direct walks the user through the practice's Direct identity first."""
        from transports.direct.setup import direct_settings_missing

        missing = direct_settings_missing(self.config) if channel == "direct" else []
        if not missing:
            self._referral_dialog(note_id, channel, direction)
            return
        if not self.can("setup"):  # access: only an administrator may set Direct up
            self.notify(f"Direct is not set up yet ({', '.join(missing)} missing), and only administrators may set "
                        "it up: ask your administrator. eFax and Download/Print still work.",
                        title="Nothing was sent", severity="warning", timeout=8)
            return
        from tui.screens.direct_setup import DirectSetupScreen

        def set_up(saved: bool | None) -> None:
            if saved:
                self.start_outbox()
                self._referral_dialog(note_id, channel, direction)
            else:
                self.notify(f"Direct is not set up ({', '.join(missing)} missing), so nothing was sent. "
                            "eFax and Download/Print still work.", severity="warning", timeout=8)

        self.push_screen(DirectSetupScreen(), set_up)

    def _referral_dialog(self, note_id: int, channel: str, direction: str) -> None:
        from models.charts import get_note, get_patient
        from tui.dialogs.send_referral import SendReferralDialog
        from tui.screens.compose import ComposeScreen

        note = get_note(note_id)
        note_screen = self.screen

        def sent(referral_id: int | None) -> None:
            if referral_id is not None and hasattr(note_screen, "show_outcome"):
                note_screen.show_outcome(referral_id)

        def chosen(draft) -> None:
            if draft is not None:
                printing = self.config.section("print") if self.config else {}
                self.push_screen(ComposeScreen(draft, default_folder=str(printing.get("folder") or "~/referrals"),
                                               printer=str(printing.get("printer") or "")), sent)

        self.push_screen(SendReferralDialog(note, get_patient(note.mrn), channel, direction), chosen)

    def action_referrals(self) -> None:
        from tui.screens.referrals import ReferralsScreen

        if not isinstance(self.screen, ReferralsScreen) and not self._leaving_would_lose_work():
            self._back_to_search()
            self.push_screen(ReferralsScreen())

    def action_practice_documents(self) -> None:
        from tui.screens.documents import PracticeDocumentsScreen

        if not isinstance(self.screen, PracticeDocumentsScreen) and not self._leaving_would_lose_work():
            self._back_to_search()
            self.push_screen(PracticeDocumentsScreen())

    def action_inbox(self) -> None:
        from tui.screens.inbox import InboxScreen

        if not isinstance(self.screen, InboxScreen) and not self._leaving_would_lose_work():
            self._back_to_search()
            self.push_screen(InboxScreen())

    def action_audit_log(self) -> None:
        from tui.screens.audit import AuditScreen

        if (not isinstance(self.screen, AuditScreen) and not self._leaving_would_lose_work()
                and self.allowed("audit")):
            self._back_to_search()
            self.push_screen(AuditScreen())

    def action_help(self) -> None:
        from tui.dialogs.help import HelpDialog

        if not isinstance(self.screen, HelpDialog):
            self.push_screen(HelpDialog(self.screen))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette lists what the current screen can do, then Textual's own commands."""
        seen = set()
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not binding.id or not binding.description or binding.action in seen or not active.enabled:
                continue
            seen.add(binding.action)
            yield SystemCommand(binding.description, f"key: {self.get_key_display(binding)}",
                                partial(self.call_later, self.run_action, binding.action, active.node))
        yield from super().get_system_commands(screen)
