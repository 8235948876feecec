"""First-use set-up of the practice's Direct identity, without a terminal: what is missing from the
configuration, every check in one call, and saving [direct] and [smtp] into the TOML file.

The same functions serve the TUI wizard and `referdesk setup direct`. Secrets never reach the file: it only
names the environment variables that hold them (`password_env`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from models.config import Config, read_toml
from transports.direct.identity import (DirectSetupError, Finding, check_address, check_chain, check_identity,
                                        load_identity, load_trust_anchors)
from transports.direct.smtp_check import check_smtp

DEFAULT_P12_PASSWORD_ENV = "REFERDESK_P12_PASSWORD"
DEFAULT_SMTP_PASSWORD_ENV = "REFERDESK_SMTP_PASSWORD"
DEFAULT_SMTP_PORT = 587
# password_env is not listed: without it the default variable name applies, and a key without passphrase needs none.
REQUIRED = ("direct.address", "direct.certificate", "direct.trust_anchors", "smtp.host")
SECTIONS = ("direct", "smtp")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_WORDS = ("password", "passphrase", "secret", "token")
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")

_NEW_FILE_HEADER = ("# referdesk configuration. Secrets are never stored here: *_env keys name the environment\n"
                    "# variables that hold them.\n\n")


def _is_secret_key(key: str) -> bool:
    lowered = str(key).lower()
    return any(word in lowered for word in _SECRET_WORDS) and not lowered.endswith("_env")


def secrets_in_file(values: Mapping[str, Any] | None, sections: tuple[str, ...] = SECTIONS) -> list[str]:
    """Secrets written into the configuration (`[direct] password = …`) as '[section] key' names. Such a value
    is never used: passphrases and passwords come only from the environment (or the wizard's prompt)."""
    found = []
    for name in sections:
        section = (values or {}).get(name)
        if isinstance(section, dict):
            found += [f"[{name}] {key}" for key, value in section.items() if _is_secret_key(key) and value]
    return found


def secret_refusal(found: list[str]) -> str:
    return (f"{', '.join(found)}: a secret must not be written in the configuration file and is not used; "
            "delete it and put it in the environment variable named by password_env")


def direct_settings_missing(config: Config | None) -> list[str]:
    """The settings Direct cannot work without that are absent or blank, as 'section.key' names — and, when a
    passphrase or password sits in the file, that refusal (Direct does not run until it is gone)."""
    missing = []
    found = secrets_in_file(config.values if config else None)
    if found:
        missing.append(secret_refusal(found))
    for name in REQUIRED:
        section, key = name.split(".")
        value = config.section(section).get(key) if config else None
        if value is None or (isinstance(value, str) and not value.strip()):
            missing.append(name)
    return missing


def env_name_problem(name: str) -> str | None:
    """Why `name` cannot be an environment variable name (someone typed the passphrase itself?), or None."""
    if not name:
        return "give the name of an environment variable"
    if not _ENV_NAME.fullmatch(name):
        return (f"{name!r} is not an environment variable name (letters, digits and _); type the variable's "
                "name here, never the passphrase")
    return None


def absolute_path(text: str) -> str:
    """A path as the file should keep it: '~' kept as typed, relative paths made absolute (the worker may run
    from another folder)."""
    text = text.strip()
    if not text or text.startswith("~") or os.path.isabs(text):
        return text
    return str(Path(text).resolve())


def passphrase_from_env(name: str, env: Mapping[str, str]) -> bytes | None:
    value = env.get(name) if name else None
    return value.encode("utf-8") if value else None


# --- checks -------------------------------------------------------------------------------------------

def _identity_findings(direct: Mapping[str, Any], password: bytes | None, env: Mapping[str, str],
                       now: dt.datetime):
    """Certificate findings, and the identity for the chain check (None when the file could not be read)."""
    path = str(direct.get("certificate") or "").strip()
    if not path:
        return [Finding("error", "No certificate file (.p12) given")], None
    try:
        identity = load_identity(path, password)
    except DirectSetupError as exc:
        return [Finding("error", str(exc))], None
    findings = [Finding("ok", f"Certificate and key read from {path}")]
    findings += check_identity(identity, str(direct.get("address") or ""), now=now)
    env_name = str(direct.get("password_env") or DEFAULT_P12_PASSWORD_ENV)
    if not password:
        findings.append(Finding("warning", "The .p12 has no passphrase: anyone who can read the file can sign "
                                           "and decrypt as the practice"))
    elif env.get(env_name):
        findings.append(Finding("ok", f"The passphrase comes from ${env_name}, which is set here"))
    else:
        findings.append(Finding("warning", f"${env_name} is not set here: referdesk needs the passphrase in it "
                                           "when sending (the one typed now was used for this check only)"))
    mode = Path(path).expanduser().stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        findings.append(Finding("warning", f"{path} can be read by other users: chmod 600 it"))
    return findings, identity


def _trust_findings(direct: Mapping[str, Any], identity, now: dt.datetime) -> list[Finding]:
    path = str(direct.get("trust_anchors") or "").strip()
    if not path:
        return [Finding("error", "No trust anchors given (a folder of CA certificates or a .p7b bundle)")]
    try:
        anchors = load_trust_anchors(path)
    except DirectSetupError as exc:
        return [Finding("error", str(exc))]
    findings = [Finding("ok", f"{len(anchors)} trust anchor{'s' * (len(anchors) != 1)} read from {path}")]
    if identity is not None:
        findings.append(check_chain(identity, anchors, now=now))
    return findings


async def _smtp_findings(smtp: Mapping[str, Any], env: Mapping[str, str], timeout: float) -> list[Finding]:
    host = str(smtp.get("host") or "").strip()
    if not host:
        return [Finding("error", "No SMTP host given (the HISP's submission server)")]
    try:
        port = int(smtp.get("port") or DEFAULT_SMTP_PORT)
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        return [Finding("error", f"SMTP port {smtp.get('port')!r} is not a TCP port (1–65535)")]
    result = await check_smtp(host, port, starttls=bool(smtp.get("starttls", True)),
                              ca_file=str(smtp.get("ca_file") or "") or None, timeout=timeout)
    findings = list(result.findings)
    if smtp.get("username"):
        env_name = str(smtp.get("password_env") or DEFAULT_SMTP_PASSWORD_ENV)
        if env.get(env_name):
            findings.append(Finding("ok", f"The SMTP password comes from ${env_name}, which is set here"))
        else:
            findings.append(Finding("warning", f"${env_name} is not set here: sending cannot log in to the "
                                               "HISP until it is"))
        if result.ok and not result.auth_methods:
            findings.append(Finding("warning", f"{host} offers no login (AUTH) after TLS, but a username is set"))
    return findings


async def run_direct_checks(direct: Mapping[str, Any], smtp: Mapping[str, Any], *, password: bytes | None,
                            now: dt.datetime, env: Mapping[str, str] | None = None,
                            timeout: float = 10) -> list[Finding]:
    """Every set-up check in a fixed order: address, certificate, passphrase source, trust, HISP/SMTP.
    `password` unlocks the .p12 for this check only; it is neither kept nor logged."""
    env = os.environ if env is None else env
    findings = [check_address(str(direct.get("address") or ""))]
    identity_findings, identity = await asyncio.to_thread(_identity_findings, direct, password, env, now)
    findings += identity_findings
    findings += await asyncio.to_thread(_trust_findings, direct, identity, now)
    findings += await _smtp_findings(smtp, env, timeout)
    return findings


# --- saving -------------------------------------------------------------------------------------------

def _checked(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain TOML values only, and nothing that looks like a secret (only *_env names of secrets)."""
    clean: dict[str, Any] = {}
    for key, value in values.items():
        lowered = key.lower()
        if _is_secret_key(key):
            raise ValueError(f"[{section}] {key}: secrets are never written to the configuration file; "
                             "store the name of an environment variable in a *_env key")
        if value is not None and not isinstance(value, (str, int, float, bool)):  # bytes: a secret, surely
            raise ValueError(f"[{section}] {key}: only text, numbers and true/false can be saved")
        if lowered.endswith("_env") and value and (problem := env_name_problem(str(value))):
            raise ValueError(f"[{section}] {key}: {problem}")
        clean[key] = value
    return clean


def _merged(current: Any, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Existing keys kept (e.g. mdn_timeout_minutes); given ones set; None or '' removes a key."""
    # a secret someone wrote into the file by hand is dropped: saving never keeps it there
    merged = {k: v for k, v in current.items() if not _is_secret_key(k)} if isinstance(current, dict) else {}
    for key, value in updates.items():
        if value is None or value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _replace_section(text: str, name: str, body: str) -> str:
    """`text` with the [name] table replaced by `body` (or `body` appended), every other line untouched —
    comments included. Comment lines just above the next table stay with that table."""
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    start = next((i for i in headers if _HEADER.match(lines[i]).group(1).strip().strip("\"'") == name
                  and not lines[i].lstrip().startswith("[[")), None)
    if start is None:
        prefix = text if not text or text.endswith("\n") else text + "\n"
        return prefix + ("\n" if prefix.strip() and not prefix.endswith("\n\n") else "") + body
    end = next((i for i in headers if i > start), len(lines))
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    tail = lines[end:]
    return "".join(lines[:start]) + body + ("\n" if tail else "") + "".join(tail)


def render_config(original_text: str, original: dict[str, Any], sections: dict[str, dict[str, Any]]) -> str:
    """The new file text: surgical when that parses back to exactly the intended values, else a clean rewrite
    (values preserved, comments lost) for layouts the line editor does not understand."""
    expected = dict(original)
    expected.update(sections)
    text = original_text or _NEW_FILE_HEADER
    if not any(isinstance(v, dict) for section in sections.values() for v in section.values()):
        for name, values in sections.items():
            text = _replace_section(text, name, tomli_w.dumps({name: values}))
        try:
            if tomllib.loads(text) == expected:
                return text
        except tomllib.TOMLDecodeError:
            pass
    return tomli_w.dumps(expected)


def _write_atomic(path: Path, text: str) -> None:
    """Temp file in the same folder, mode 0600, fsync, rename: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_direct_settings(config_path: str | Path, direct: Mapping[str, Any], smtp: Mapping[str, Any]) -> Path:
    """Write [direct] and [smtp] into the configuration file, keeping every other section and value (and, where
    possible, comments). Raises ValueError for anything secret-looking, ConfigError for an unreadable file."""
    path = Path(config_path).expanduser()
    updates = {"direct": _checked("direct", direct), "smtp": _checked("smtp", smtp)}
    original_text = path.read_text(encoding="utf-8") if path.exists() else ""
    original = read_toml(path) if path.exists() else {}
    sections = {name: _merged(original.get(name), updates[name]) for name in SECTIONS}
    _write_atomic(path, render_config(original_text, original, sections))
    return path
