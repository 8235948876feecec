"""Phaxio (REST API v2.1) as a fax provider: send the referral PDF, poll its status, cancel it.

Shapes, from Phaxio's public documentation (phaxio.com/docs/api/v2.1 and v2 "Create and send a fax", "Objects",
"Fax Statuses", "Error Messages"):
  * `POST /faxes`, multipart: `to` (E.164), `file` (with a filename), `header_text` (max 50 characters),
    `callback_url`, `tag[NAME]`. Answers `{"success": true, "message": ..., "data": {"id": 1234}}`; errors are
    HTTP statuses with `{"success": false, "message": ...}`.
  * `GET /faxes/{id}`: the fax object; `status` is queued, pendingbatch, inprogress, success, failure or
    partialsuccess; `num_pages`; failure details (`error_type`, `error_message`, `error_id`) on the fax and on each
    entry of `recipients`.
  * Error types: documentConversionError (the file), lineError (busy, no answer, the line), faxError (talking to
    the far machine), fatalError, generalError. `phoneNumberError` is not in that list but is handled, as is the
    v1 `error_code` field (v1 put the description there).

Standard library only (http.client in a thread): one small multipart body, no redirects followed, no proxies.
HTTPS with TLS 1.2 or newer and a verified certificate; plain http only to loopback (tests, a local sandbox).
Neither the PDF, the credentials nor anything from the referral ever goes into a message or a log.

A send that times out after the request went out may still have reached Phaxio: it is reported as transient, so
the worker may resend; `tag[reference]` (unique per attempt) lets a person spot such a duplicate in the console.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import ipaddress
import json
import os
import secrets
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, quote, urlsplit

from transports.efax.base import FAILURE, IN_PROGRESS, PARTIAL, QUEUED, SUCCESS, FaxError, FaxRequest, FaxStatus

DEFAULT_URL = "https://api.phaxio.com/v2.1"
DEFAULT_KEY_ENV, DEFAULT_SECRET_ENV = "PHAXIO_API_KEY", "PHAXIO_API_SECRET"
DEFAULT_TIMEOUT = 30.0
_MAX_RESPONSE = 1 << 20  # a fax object is a few kB; never read an unbounded body into memory
_MAX_MESSAGE = 200  # Phaxio's own words are quoted in errors, but never at length

_STATES = {"queued": QUEUED, "pendingbatch": QUEUED, "inprogress": IN_PROGRESS, "success": SUCCESS,
           "failure": FAILURE, "partialsuccess": PARTIAL}
# Error types normalised (lower case, no "_"), so "lineError" and "LINE_ERROR" (Sinch, Phaxio's owner) both match.
# Busy lines, no answer and a fax handshake that broke off usually clear up; anything else, or a type we do not
# know, needs a person: redialling a possibly wrong number is worse than asking.
_TRANSIENT_ERRORS = frozenset({"lineerror", "faxerror", "generalerror"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str, what: str) -> SplitResult:
    """https anywhere, http only on this machine; no credentials, query or fragment in the URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{what} is not a valid URL: {url!r}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an https:// URL with a host name, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"{what} must use https:// (plain http:// is allowed only to 127.0.0.1, ::1 or "
                         f"localhost), got {url!r}")
    if parts.username or parts.password:
        raise ValueError(f"{what} must not contain credentials; they come from the environment")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} must not have a query or fragment, got {url!r}")
    return parts


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=os.path.expanduser(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"ca_file {ca_file!r} could not be read as PEM certificates ({exc})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context  # create_default_context already verifies the certificate and the host name


def _short(text: object) -> str:
    words = " ".join(str(text).split())
    return words if len(words) <= _MAX_MESSAGE else words[: _MAX_MESSAGE - 1] + "…"


def _header_value(text: str) -> str:
    """A Content-Disposition parameter: no line breaks, quotes escaped."""
    return " ".join(text.splitlines()).replace("\\", "\\\\").replace('"', '\\"')


def _multipart(fields: list[tuple[str, str]], file_field: str, filename: str, data: bytes,
               content_type: str) -> tuple[bytes, str]:
    """multipart/form-data (RFC 7578) by hand: a few text fields and one file."""
    boundary = "referdesk-" + secrets.token_hex(16)  # random, so it cannot occur in the PDF by accident
    chunks: list[bytes] = []
    for name, value in fields:
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{_header_value(name)}"\r\n'
                      f"Content-Type: text/plain; charset=utf-8\r\n\r\n".encode() + value.encode() + b"\r\n")
    chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{_header_value(file_field)}"; '
                  f'filename="{_header_value(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
                  + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _error_type(value: object) -> str:
    return str(value).replace("_", "").lower()


class PhaxioProvider:
    """The FaxProvider for Phaxio. Credentials are passed in (from the environment, see `from_config`), held only
    as the ready-made Authorization header, and never shown."""

    name = "phaxio"

    def __init__(self, *, api_key: str, api_secret: str, base_url: str = DEFAULT_URL, ca_file: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, callback_url: str | None = None,
                 key_env: str = DEFAULT_KEY_ENV, secret_env: str = DEFAULT_SECRET_ENV) -> None:
        if not api_key or not api_secret:
            raise ValueError(f"Phaxio needs an API key and secret: set {key_env} and {secret_env}")
        if not timeout or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        parts = _check_url(base_url, "[efax] api_url")
        if callback_url:
            _check_url(callback_url, "[efax] callback_url")
        self.base_url = base_url.rstrip("/")
        self.callback_url = callback_url or None
        self.timeout = float(timeout)
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/")
        self._context = _tls_context(ca_file) if self._https else None
        token = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"
        self._credential_hint = f"check {key_env} and {secret_env}"

    def __repr__(self) -> str:
        return f"PhaxioProvider({self.base_url!r})"

    @classmethod
    def from_config(cls, section: Mapping[str, Any], env: Mapping[str, str]) -> PhaxioProvider:
        """From the `[efax]` table. The key and secret are read only from the environment variables it names, so
        config files (often shared, backed up, pasted into tickets) never hold them."""
        for secret in ("api_key", "api_secret"):
            if secret in section:
                raise ValueError(f"[efax] must not hold {secret}: put it in the environment variable that "
                                 f"{secret}_env names instead")
        key_env = str(section.get("api_key_env") or DEFAULT_KEY_ENV)
        secret_env = str(section.get("api_secret_env") or DEFAULT_SECRET_ENV)
        values = {}
        for variable, what in ((key_env, "API key"), (secret_env, "API secret")):
            values[variable] = (env.get(variable) or "").strip()
            if not values[variable]:
                raise ValueError(f"Set the environment variable {variable} to your Phaxio {what}")
        try:
            timeout = float(section.get("timeout", DEFAULT_TIMEOUT))
        except (TypeError, ValueError):
            raise ValueError(f"[efax] timeout must be a number of seconds, got {section.get('timeout')!r}") from None
        return cls(api_key=values[key_env], api_secret=values[secret_env],
                   base_url=str(section.get("api_url") or DEFAULT_URL), ca_file=section.get("ca_file") or None,
                   timeout=timeout, callback_url=section.get("callback_url") or None,
                   key_env=key_env, secret_env=secret_env)

    # --- the FaxProvider protocol ---

    async def send(self, request: FaxRequest) -> str:
        fields = [("to", request.to), ("header_text", request.header_text)]
        if self.callback_url:
            fields.append(("callback_url", self.callback_url))
        fields.append(("tag[reference]", request.reference))
        body, content_type = _multipart(fields, "file", request.filename, request.pdf, "application/pdf")
        data = await self._call("POST", "/faxes", body, content_type)
        fax_id = data.get("id") if isinstance(data, dict) else None
        if fax_id is None or isinstance(fax_id, bool) or str(fax_id).strip() == "":
            # Phaxio took the fax but we cannot follow it: sending again would fax it twice.
            raise FaxError("Phaxio accepted the fax but returned no fax id; check the Phaxio console before "
                           "resending", transient=False)
        return str(fax_id)

    async def status(self, fax_id: str) -> FaxStatus:
        data = await self._call("GET", f"/faxes/{quote(str(fax_id), safe='')}")
        if not isinstance(data, dict):
            raise FaxError(f"Phaxio's answer for fax {fax_id} has no fax object", transient=True)
        return self.fax_status(data)

    async def cancel(self, fax_id: str) -> None:
        await self._call("POST", f"/faxes/{quote(str(fax_id), safe='')}/cancel", b"",
                         "application/x-www-form-urlencoded")

    # --- reading Phaxio's answers ---

    @staticmethod
    def fax_status(fax: Mapping[str, Any]) -> FaxStatus:
        """A Phaxio fax object (from GET /faxes/{id}, or a callback's `fax`) as a provider-neutral status."""
        state = _STATES.get(str(fax.get("status") or "").lower(), IN_PROGRESS)  # unknown: keep waiting, never resend
        pages = fax.get("num_pages")
        pages = pages if isinstance(pages, int) and not isinstance(pages, bool) else None
        if state in (QUEUED, IN_PROGRESS, SUCCESS):
            return FaxStatus(state, pages=pages)
        recipients = fax.get("recipients")
        recipient = recipients[0] if isinstance(recipients, list) and recipients and isinstance(
            recipients[0], dict) else {}
        kind = recipient.get("error_type") or fax.get("error_type") or ""
        words = [source.get(field) for source in (recipient, fax) for field in ("error_message", "error_code")]
        reason = next((_short(w) for w in words if isinstance(w, str) and w.strip()), _short(kind))
        if state == PARTIAL:
            # Some pages (or recipients) went through: the whole packet is sent again, so it can be read as one.
            return FaxStatus(PARTIAL, reason=reason or "Partly sent", transient=True, pages=pages)
        return FaxStatus(FAILURE, reason=reason or "Failed (Phaxio gave no reason)",
                         transient=_error_type(kind) in _TRANSIENT_ERRORS, pages=pages)

    async def _call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        status, payload = await asyncio.to_thread(self._exchange, method, path, body, content_type)
        return self._read(status, payload)

    def _exchange(self, method: str, path: str, body: bytes | None, content_type: str | None) -> tuple[int, bytes]:
        """One request on a fresh connection (runs in a worker thread)."""
        where = f"Phaxio at {self._host}"
        if self._https:
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._context)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        headers = {"Authorization": self._authorization, "Accept": "application/json", "User-Agent": "referdesk"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            connection.request(method, self._path + path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(_MAX_RESPONSE)
        except ssl.SSLCertVerificationError as exc:
            raise FaxError(f"{where}: its TLS certificate could not be verified ({exc.verify_message}); check "
                           "[efax] api_url, and ca_file if it uses a private CA", transient=True) from None
        except ssl.SSLError as exc:
            raise FaxError(f"{where}: the TLS handshake failed ({exc.reason or exc}); is api_url really HTTPS "
                           "with TLS 1.2 or newer?", transient=True) from None
        except TimeoutError:
            raise FaxError(f"{where} did not answer within {self.timeout:g} s", transient=True) from None
        except ConnectionRefusedError:
            raise FaxError(f"{where}: connection refused on port {self._port or (443 if self._https else 80)}",
                           transient=True) from None
        except (OSError, http.client.HTTPException) as exc:
            raise FaxError(f"{where} could not be reached: {_short(exc) or type(exc).__name__}",
                           transient=True) from None
        finally:
            connection.close()

    def _read(self, status: int, payload: bytes) -> Any:
        """Phaxio's JSON envelope, or the FaxError its HTTP status means. Returns `data`."""
        try:
            document = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            document = None
        message = _short(document.get("message") or "") if isinstance(document, dict) else ""
        said = f": {message}" if message else ""
        if status in (401, 403):
            raise FaxError(f"Phaxio refused the API key/secret (HTTP {status}): {self._credential_hint}",
                           transient=False)
        if status == 429:
            raise FaxError(f"Phaxio rate limit reached (HTTP 429){said}", transient=True)
        if status >= 500:
            raise FaxError(f"Phaxio server error (HTTP {status}){said}", transient=True)
        if status == 404:
            raise FaxError(f"Phaxio does not know this fax or path (HTTP 404){said}; check [efax] api_url",
                           transient=False)
        if status >= 300:
            raise FaxError(f"Phaxio refused the request (HTTP {status}){said}", transient=False)
        if not isinstance(document, dict):
            raise FaxError(f"Phaxio's answer (HTTP {status}) was not JSON; is [efax] api_url the Phaxio API?",
                           transient=True)
        if document.get("success") is not True:
            raise FaxError(f"Phaxio did not accept the request{said or ' (no message)'}", transient=False)
        return document.get("data")
