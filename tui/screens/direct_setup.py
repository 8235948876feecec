"""First-use Direct set-up: a keyboard wizard for the practice's Direct address, certificate, HISP/SMTP and
trust anchors, which runs every check before saving [direct] and [smtp] to the configuration file.

The screen presents and delegates: loading, checking and saving live in transports.direct. A passphrase typed
here unlocks the .p12 for the checks only; it is never saved, logged or passed anywhere else.
Dismisses with True when the settings were saved, False otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import tomli_w
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import (Button, ContentSwitcher, Footer, Header, Input, Label, LoadingIndicator, Static,
                             Switch)

from models import clock
from models.addresses import AddressError, check_direct_address
from models.audit import record
from models.config import ConfigError, default_config_path, read_toml
from transports.direct.identity import (DirectSetupError, Finding, describe_anchors, describe_certificate,
                                        load_identity, load_trust_anchors)
from transports.direct.setup import (DEFAULT_P12_PASSWORD_ENV, DEFAULT_SMTP_PASSWORD_ENV, DEFAULT_SMTP_PORT,
                                     absolute_path, env_name_problem, passphrase_from_env, run_direct_checks,
                                     save_direct_settings)
from tui.screens.base import ReferdeskScreen

STEPS = [("address", "Address"), ("certificate", "Certificate"), ("smtp", "SMTP"), ("anchors", "Anchors"),
         ("checks", "Checks"), ("save", "Save")]
MARK = {"ok": "✓ ok", "warning": "! warning", "error": "✗ error"}
ORDER = {"error": 0, "warning": 1, "ok": 2}
NAV_HINTS = {"fields": "Enter: next field · PgDn: next step", "checks": "↑↓: scroll · PgDn: next step",
             "save": "Tab: next button · Enter: press it"}
STARTTLS_HINT = {True: "on: STARTTLS, usually port 587", False: "off: implicit TLS, usually port 465"}
# Every field the user can type in, with the step it belongs to (Enter in the last one goes to the next step).
FIELDS = {"address": ["address"], "certificate": ["certificate", "password_env", "passphrase"],
          "smtp": ["host", "port", "username", "smtp_password_env", "ca_file"], "anchors": ["trust_anchors"]}


def shown_path(path: Path) -> str:
    """A path as the user reads it: under the home folder as ~/…, which also fits 80 columns better."""
    path = Path(path).expanduser()
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def _field(label: str, *widgets) -> Horizontal:
    return Horizontal(Label(label, classes="field-label"), *widgets, classes="field")


class DirectSetupScreen(ReferdeskScreen):
    """Direct set-up: the practice's address, certificate, HISP and trust anchors, checked, then saved."""

    CSS_PATH = "direct_setup.tcss"
    SUB_TITLE = "Direct set-up"
    BINDINGS = [
        # Priority: the scrolling step panes would otherwise take PgUp/PgDn. Ctrl+P is the app's command palette.
        Binding("pagedown,ctrl+n", "next", "Next", id="setup.next", priority=True),
        Binding("pageup,ctrl+b", "back", "Back", id="setup.back", priority=True),
        Binding("escape", "leave", "Leave", id="setup.leave"),
    ]

    def __init__(self, *, env: Mapping[str, str] | None = None, config_path: str | Path | None = None) -> None:
        super().__init__()
        self.env = os.environ if env is None else env
        self._config_path = Path(config_path) if config_path else None
        self.step = 0
        self.findings: list[Finding] | None = None
        self.saved = False
        self._initial: dict[str, Any] = {}

    # --- layout -------------------------------------------------------------------------------------------

    def _prefill(self) -> dict[str, Any]:
        config = getattr(self.app, "config", None)
        direct = config.section("direct") if config else {}
        smtp = config.section("smtp") if config else {}
        text = lambda section, key, default="": str(section.get(key, default) or default).strip()  # noqa: E731
        return {
            "address": text(direct, "address"), "certificate": text(direct, "certificate"),
            "password_env": text(direct, "password_env", DEFAULT_P12_PASSWORD_ENV), "passphrase": "",
            "host": text(smtp, "host"), "port": text(smtp, "port", str(DEFAULT_SMTP_PORT)),
            "starttls": bool(smtp.get("starttls", True)), "username": text(smtp, "username"),
            "smtp_password_env": text(smtp, "password_env", DEFAULT_SMTP_PASSWORD_ENV),
            "ca_file": text(smtp, "ca_file"), "trust_anchors": text(direct, "trust_anchors"),
        }

    @property
    def config_path(self) -> Path:
        if self._config_path is None:
            config = getattr(self.app, "config", None)
            self._config_path = config.path if config and config.path else default_config_path(os.environ)
        return self._config_path

    def compose(self) -> ComposeResult:
        v = self._initial = self._prefill()
        yield Header()
        yield Static(id="steps")
        with ContentSwitcher(initial="step-address", id="wizard"):
            with VerticalScroll(id="step-address", classes="step"):
                yield Static("The practice's Direct address: the one partners send referrals to, as your HISP "
                             "issued it.", classes="intro")
                yield _field("Direct address", Input(v["address"], placeholder="referrals@direct.example.org",
                                                     id="address"))
                yield Static(id="address-status", classes="status")
            with VerticalScroll(id="step-certificate", classes="step"):
                yield Static("The practice's certificate and private key, as one PKCS#12 file (.p12 or .pfx).",
                             classes="intro")
                yield _field("PKCS#12 file", Input(v["certificate"], placeholder="/path/practice.p12",
                                                   id="certificate"))
                yield _field("Passphrase variable", Input(v["password_env"], id="password_env"))
                yield Static(id="password_env-status", classes="status")
                yield _field("Passphrase (check)", Input(placeholder="only if the variable is not set; never saved",
                                                         password=True, id="passphrase"))
                yield Static(id="certificate-status", classes="status")
            with VerticalScroll(id="step-smtp", classes="step"):
                yield Static("The HISP's submission server (SMTP) for outgoing Direct mail.", classes="intro")
                yield _field("SMTP host", Input(v["host"], placeholder="smtp.hisp.example.net", id="host"),
                             Label("Port", id="port-label"), Input(v["port"], type="integer", id="port"))
                yield _field("STARTTLS", Switch(v["starttls"], id="starttls"),
                             Static(STARTTLS_HINT[v["starttls"]], id="starttls-hint"))
                yield _field("Username", Input(v["username"], placeholder="(none)", id="username"))
                yield _field("Password variable", Input(v["smtp_password_env"], id="smtp_password_env"))
                yield _field("CA file (optional)", Input(v["ca_file"], placeholder="the HISP's CA, if not a "
                                                         "public one", id="ca_file"))
                yield Static(id="smtp-status", classes="status")
            with VerticalScroll(id="step-anchors", classes="step"):
                yield Static("Trust anchors: the CAs whose Direct certificates you accept — a folder of PEM/DER "
                             "files or a .p7b bundle (e.g. DirectTrust's).", classes="intro")
                yield _field("Trust anchors", Input(v["trust_anchors"], placeholder="/path/anchors/ or bundle.p7b",
                                                    id="trust_anchors"))
                yield Static(id="anchors-status", classes="status")
            with Vertical(id="step-checks", classes="step"):
                yield Static(id="checks-summary")
                yield LoadingIndicator(id="checks-loading")
                yield VerticalScroll(id="findings")
            with VerticalScroll(id="step-save", classes="step"):
                yield Static(id="save-summary")
                yield Static(id="save-preview")
                with Horizontal(id="save-buttons"):
                    yield Button("Save", variant="primary", id="save", compact=True)
                    yield Button("Save anyway…", id="save-anyway", compact=True)
                    yield Button("Check again", id="recheck", compact=True)
                yield Static(id="save-status", classes="status")
        with Horizontal(id="nav"):
            yield Button("◀ Back", id="back", compact=True)
            yield Static(id="nav-hint")
            yield Button("Next ▶", id="next", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#checks-loading").display = False
        for status in self.query(".status"):
            status.display = False
        self._show_env_status()
        self._show_step()

    # --- values -------------------------------------------------------------------------------------------

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value.strip()

    def values(self) -> dict[str, Any]:
        found = {field: self._value(field) for fields in FIELDS.values() for field in fields}
        found["starttls"] = self.query_one("#starttls", Switch).value
        return found

    def is_dirty(self) -> bool:
        return self.values() != self._initial

    def settings(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The [direct] and [smtp] values to save: names of secrets only, never their values."""
        v = self.values()
        try:
            address = check_direct_address(v["address"])
        except AddressError:
            address = v["address"]
        direct = {"address": address, "certificate": absolute_path(v["certificate"]),
                  "password_env": v["password_env"] or DEFAULT_P12_PASSWORD_ENV,
                  "trust_anchors": absolute_path(v["trust_anchors"])}
        port = int(v["port"]) if v["port"].isdigit() else DEFAULT_SMTP_PORT
        smtp = {"host": v["host"], "port": port, "starttls": v["starttls"], "username": v["username"],
                "password_env": v["smtp_password_env"] or DEFAULT_SMTP_PASSWORD_ENV,
                "ca_file": absolute_path(v["ca_file"])}
        return direct, smtp

    def _check_settings(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """As typed (relative paths stay relative), for the checks' messages."""
        v = self.values()
        direct = {"address": v["address"], "certificate": v["certificate"], "trust_anchors": v["trust_anchors"],
                  "password_env": v["password_env"] or DEFAULT_P12_PASSWORD_ENV}
        smtp = {"host": v["host"], "port": v["port"] or DEFAULT_SMTP_PORT, "starttls": v["starttls"],
                "username": v["username"], "password_env": v["smtp_password_env"], "ca_file": v["ca_file"]}
        return direct, smtp

    def _passphrase(self) -> bytes | None:
        typed = self.query_one("#passphrase", Input).value
        if typed:
            return typed.encode("utf-8")
        return passphrase_from_env(self._value("password_env") or DEFAULT_P12_PASSWORD_ENV, self.env)

    # --- steps --------------------------------------------------------------------------------------------

    def _show_step(self) -> None:
        key, _ = STEPS[self.step]
        self.query_one("#wizard", ContentSwitcher).current = f"step-{key}"
        parts: list[Content | str] = [f"Step {self.step + 1}/{len(STEPS)}  "]
        for index, (_, title) in enumerate(STEPS):
            label = f"{index + 1} {title}"
            parts.append(Content.styled(label, "bold reverse") if index == self.step else label)  # no colour needed
            if index < len(STEPS) - 1:
                parts.append(" › ")
        self.query_one("#steps", Static).update(Content.assemble(*parts))
        self.query_one("#nav-hint", Static).update(NAV_HINTS.get(key, NAV_HINTS["fields"]))
        self.query_one("#back", Button).disabled = self.step == 0
        self.query_one("#next", Button).disabled = self.step == len(STEPS) - 1
        self.refresh_bindings()
        if key in FIELDS:
            self.query_one(f"#{FIELDS[key][0]}", Input).focus()
        elif key == "checks":
            self.findings = None  # until this run ends: PgDn must not reach Save on a previous run's results
            self.run_checks()
        elif key == "save":
            self._show_save()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "next":
            return self.step < len(STEPS) - 1 or None
        if action == "back":
            return self.step > 0 or None
        return True

    def action_next(self) -> None:
        key = STEPS[self.step][0]
        if key == "address" and not self._show_address_status():
            self.query_one("#address", Input).focus()
            return
        if key == "checks" and self.findings is None:
            self.query_one("#checks-summary", Static).update("Wait for the checks to finish (Esc leaves).")
            return
        if key == "certificate":
            self._check_certificate()
        elif key == "anchors":
            self._check_anchors()
        if self.step < len(STEPS) - 1:
            self.step += 1
            self._show_step()

    def action_back(self) -> None:
        if self.step > 0:
            self.step -= 1
            self._show_step()

    @on(Button.Pressed, "#next")
    def _next_pressed(self) -> None:
        self.action_next()

    @on(Button.Pressed, "#back")
    def _back_pressed(self) -> None:
        self.action_back()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        """Enter moves on: to the step's next field, or from its last field to the next step."""
        fields = FIELDS.get(STEPS[self.step][0], [])
        if event.input.id in fields[:-1]:
            self.query_one(f"#{fields[fields.index(event.input.id) + 1]}", Input).focus()
        else:
            self.action_next()

    # --- leaving ------------------------------------------------------------------------------------------

    def action_leave(self) -> None:
        """Escape: leave without saving; ask first if something was typed."""
        if not self.is_dirty():
            self._finish(False)
            return
        from tui.dialogs.confirm import ConfirmDialog

        def answered(leave: bool | None) -> None:
            if leave:
                self._finish(False)

        self.app.push_screen(ConfirmDialog("Leave the Direct set-up? What you typed is not saved.", yes="Leave",
                                           no="Stay"), answered)

    def _finish(self, saved: bool) -> None:
        self.query_one("#passphrase", Input).value = ""
        self.dismiss(saved)

    # --- per-field feedback -------------------------------------------------------------------------------

    def _status(self, target: str, level: str | None, text: str = "") -> None:
        status = self.query_one(f"#{target}", Static)
        status.remove_class("-ok", "-warning", "-error")
        status.display = bool(text)  # an empty line would only push the next field down
        if level:
            status.add_class(f"-{level}")
            status.update(f"{MARK[level].split()[0]} {text}")
        else:
            status.update(text)

    def _show_address_status(self) -> bool:
        text = self._value("address")
        try:
            address = check_direct_address(text)
        except AddressError as exc:
            self._status("address-status", "error", f"{text!r} is {exc}" if text else f"The address is needed: {exc}")
            return False
        self._status("address-status", "ok", f"{address} is well formed (partners find its certificate in DNS "
                                             "or LDAP; the checks cannot test that from here)")
        return True

    @on(Input.Blurred, "#address")
    def _address_left(self) -> None:
        if self._value("address"):
            self._show_address_status()

    @on(Input.Changed, "#address")
    def _address_changed(self) -> None:
        self._status("address-status", None)

    def _show_env_status(self) -> None:
        name = self._value("password_env") or DEFAULT_P12_PASSWORD_ENV
        problem = env_name_problem(name)
        if problem:
            self._status("password_env-status", "error", problem)
        elif self.env.get(name):
            self._status("password_env-status", "ok", f"${name} is set here: it unlocks the file for the checks")
        else:
            self._status("password_env-status", "warning", f"${name} is not set here: type the passphrase below "
                                                           "for the checks")

    @on(Input.Blurred, "#password_env")
    def _env_left(self) -> None:
        self._show_env_status()
        self._check_certificate()

    @on(Input.Blurred, "#certificate, #passphrase")
    def _certificate_left(self) -> None:
        self._check_certificate()

    def _check_certificate(self) -> None:
        path = self._value("certificate")
        if path:
            self.load_certificate(path, self._passphrase())

    @work(thread=True, exclusive=True, group="setup-certificate", exit_on_error=False)
    def load_certificate(self, path: str, password: bytes | None) -> None:
        try:
            identity = load_identity(path, password)
        except DirectSetupError as exc:
            self.app.call_from_thread(self._certificate_result, path, "error", str(exc))
            return
        self.app.call_from_thread(self._certificate_result, path, "ok", describe_certificate(identity.certificate))

    def _certificate_result(self, path: str, level: str, text: str) -> None:
        if path == self._value("certificate"):  # the user has moved on to another file: drop the stale answer
            self._status("certificate-status", level, text)

    @on(Input.Blurred, "#port")
    def _port_left(self) -> None:
        port = self._value("port")
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            self._status("smtp-status", "error", f"Port {port} is not a TCP port (1–65535)")
        else:
            self._status("smtp-status", None)

    @on(Switch.Changed, "#starttls")
    def _starttls_changed(self, event: Switch.Changed) -> None:
        """The switch's state in words (readable without colour), and the port that usually goes with it."""
        self.query_one("#starttls-hint", Static).update(STARTTLS_HINT[event.value])
        port = self.query_one("#port", Input)
        if event.value and port.value == "465":
            port.value = "587"
        elif not event.value and port.value == "587":
            port.value = "465"

    @on(Input.Blurred, "#trust_anchors")
    def _anchors_left(self) -> None:
        self._check_anchors()

    def _check_anchors(self) -> None:
        path = self._value("trust_anchors")
        if path:
            self.load_anchors(path)

    @work(thread=True, exclusive=True, group="setup-anchors", exit_on_error=False)
    def load_anchors(self, path: str) -> None:
        try:
            result = ("ok", describe_anchors(load_trust_anchors(path)))
        except DirectSetupError as exc:
            result = ("error", str(exc))
        self.app.call_from_thread(self._anchors_result, path, *result)

    def _anchors_result(self, path: str, level: str, text: str) -> None:
        if path == self._value("trust_anchors"):
            self._status("anchors-status", level, text)

    # --- checks -------------------------------------------------------------------------------------------

    @work(exclusive=True, group="setup-checks", exit_on_error=False)
    async def run_checks(self) -> None:
        self.findings = None
        self.query_one("#checks-loading").display = True
        self.query_one("#findings").display = False
        self.query_one("#checks-summary", Static).update("Checking the address, certificate, trust anchors and the "
                                                         "HISP (the SMTP check can take up to 10 s)…")
        direct, smtp = self._check_settings()
        try:
            findings = await run_direct_checks(direct, smtp, password=self._passphrase(), now=clock.now(),
                                               env=self.env)
        except Exception as exc:  # a check that crashes must still end the wait, and say so
            findings = [Finding("error", f"The checks stopped unexpectedly: {type(exc).__name__}: {exc}")]
        self.show_findings(findings)

    def show_findings(self, findings: list[Finding]) -> None:
        self.findings = findings
        self.query_one("#checks-loading").display = False
        box = self.query_one("#findings", VerticalScroll)
        box.display = True
        box.remove_children()
        rows = []
        for finding in sorted(findings, key=lambda f: ORDER[f.level]):  # errors first: seen without scrolling
            rows.append(Horizontal(Static(MARK[finding.level], classes="mark"),
                                   Static(finding.message, classes="message", markup=False),
                                   classes=f"finding -{finding.level}"))
        box.mount_all(rows)
        box.scroll_home(animate=False)
        if STEPS[self.step][0] == "checks":
            box.focus()
        self.query_one("#checks-summary", Static).update(self._summary(findings))

    @staticmethod
    def _summary(findings: list[Finding]) -> str:
        counts = {level: sum(f.level == level for f in findings) for level in ORDER}
        plural = lambda n, word: f"{n} {word}{'s' * (n != 1)}"  # noqa: E731
        warnings = f", ! {plural(counts['warning'], 'warning')}" if counts["warning"] else ""
        if not counts["error"]:
            return f"✓ {counts['ok']} checks passed{warnings} — PgDn to save"
        return (f"✗ {plural(counts['error'], 'error')}{warnings}, ✓ {counts['ok']} passed — PgUp to fix, "
                "or PgDn to save anyway")

    # --- save ---------------------------------------------------------------------------------------------

    def _errors(self) -> int:
        return sum(f.level == "error" for f in self.findings or [])

    def _show_save(self) -> None:
        errors = self._errors()
        summary = self.query_one("#save-summary", Static)
        if errors:
            summary.update(f"✗ The checks found {errors} error{'s' * (errors != 1)}: Direct will not work until "
                           "they are fixed. Go back to fix them, or save anyway.\n"
                           f"Saves to {shown_path(self.config_path)}")
        else:
            summary.update(f"✓ All checks passed. Saves [direct] and [smtp] to {shown_path(self.config_path)} "
                           "(other sections are kept):")
        direct, smtp = self.settings()
        preview = tomli_w.dumps({"direct": {k: v for k, v in direct.items() if v != ""},
                                 "smtp": {k: v for k, v in smtp.items() if v != ""}})
        self.query_one("#save-preview", Static).update(Content(preview.strip()))
        save, anyway = self.query_one("#save", Button), self.query_one("#save-anyway", Button)
        save.disabled = bool(errors)
        anyway.display = bool(errors)
        (anyway if errors else save).focus()

    @on(Button.Pressed, "#recheck")
    def _recheck(self) -> None:
        self.step = STEPS.index(("checks", "Checks"))
        self._show_step()

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        if not self._errors() and self.findings is not None:
            self.save()

    @on(Button.Pressed, "#save-anyway")
    def _save_anyway_pressed(self) -> None:
        from tui.dialogs.confirm import ConfirmDialog

        errors = self._errors()

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.save()

        self.app.push_screen(ConfirmDialog(f"Save although the checks found {errors} error{'s' * (errors != 1)}? "
                                           "Direct referrals will fail until they are fixed.",
                                           yes="Save anyway", no="Cancel"), answered)

    def save(self) -> None:
        direct, smtp = self.settings()
        try:
            path = save_direct_settings(self.config_path, direct, smtp)
        except (ValueError, ConfigError, OSError) as exc:
            self._status("save-status", "error", f"Not saved: {exc}")
            self.notify(f"Direct settings not saved: {exc}", severity="error")
            return
        config = getattr(self.app, "config", None)
        if config is not None and config.path and Path(config.path).expanduser() == path:
            try:
                config.values = read_toml(path)  # the rest of the app sees the new settings at once
            except ConfigError:
                pass
        self.saved = True
        record("setup.direct", username=getattr(self.app, "username", ""), object_type="config",
               object_id="direct", detail="sections=direct,smtp")
        self.notify(f"Direct settings saved to {shown_path(path)}")
        self._finish(True)
