"""A small stand-in for the Phaxio v2.1 REST API on 127.0.0.1 (kernel-chosen port, its own thread), speaking the
documented shapes: basic auth, a multipart `POST /faxes`, `GET /faxes/{id}` moving queued → inprogress → final
over a few polls, `POST /faxes/{id}/cancel`. What happens to each fax is scripted per destination number:

    server.script("+15551230001", ["busy", "busy", "success"])  # 1st and 2nd fax there fail busy, 3rd goes through

It parses the multipart body itself (not with the provider's code), so the tests see the bytes as they arrived.
Optionally TLS (`ssl_context`). Not a test module: imported by test_efax_phaxio, usable by the local sandbox.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

E164 = re.compile(r"\+[0-9]{8,15}")
# outcome -> (fax status, error_type, error_message, error_id); ids and words from Phaxio's error list.
OUTCOMES: dict[str, tuple[str, str | None, str | None, int | None]] = {
    "success": ("success", None, None, None),
    "busy": ("failure", "lineError", "Busy", 17),
    "no-answer": ("failure", "lineError", "No answer", 112),
    "fax-error": ("failure", "faxError", "No response after sending a page", 8),
    "bad-number": ("failure", "phoneNumberError", "Invalid number", None),
    "conversion": ("failure", "documentConversionError", "Failed to normalize PDF document", 133),
    "fatal": ("failure", "fatalError", "Fatal error", None),
    "partial": ("partialsuccess", "faxError", "Disconnected after permitted retries", 10),
    "cancelled": ("failure", "fatalError", "Cancelled", None),  # assumption: Phaxio does not document this one
}


@dataclass
class ReceivedFax:
    id: int
    to: str
    header_text: str | None
    pdf: bytes
    filename: str | None
    content_type: str | None
    tags: dict[str, str]
    callback_url: str | None
    outcome: str
    polls: int = 0

    @property
    def pages(self) -> int:
        """Page objects in the PDF (not the /Pages tree); 1 for anything that is not a PDF."""
        return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", self.pdf)) or 1


@dataclass
class Canned:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class _Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes = field(repr=False)


def parse_multipart(body: bytes, content_type: str) -> list[_Part]:
    """multipart/form-data as RFC 7578 frames it: parts between CRLF--boundary lines, headers, a blank line."""
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or not found:
        raise ValueError("not multipart/form-data")
    delimiter = b"--" + found.group(1).encode()
    body = b"\r\n" + body  # so the first delimiter looks like the others
    parts: list[_Part] = []
    for chunk in body.split(b"\r\n" + delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # the close delimiter
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("utf-8").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        params = {k.lower(): v.replace('\\"', '"').replace("\\\\", "\\") for k, v in
                  re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', headers.get("content-disposition", ""))}
        parts.append(_Part(params.get("name", ""), params.get("filename"), headers.get("content-type"), data))
    else:
        raise ValueError("no closing boundary")
    return parts


class LoopbackPhaxio:
    """`polls_to_final`: the GET that first shows the final state (1 = at once; 3 = queued, inprogress, final)."""

    def __init__(self, *, api_key: str = "test-key", api_secret: str = "test-secret", polls_to_final: int = 3,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.api_key, self.api_secret = api_key, api_secret
        self.polls_to_final = polls_to_final
        self.ssl_context = ssl_context
        self.faxes: list[ReceivedFax] = []
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, authorised)
        self.port = 0
        self._scripts: dict[str, deque[str]] = defaultdict(deque)
        self._canned: deque[Canned] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}/v2.1"

    def script(self, number: str, outcomes: list[str]) -> None:
        """The outcomes of the next faxes to `number`, in order; once used up, faxes there succeed."""
        unknown = set(outcomes) - set(OUTCOMES)
        if unknown:
            raise ValueError(f"unknown outcomes {sorted(unknown)}; known: {sorted(OUTCOMES)}")
        with self._lock:
            self._scripts[number].extend(outcomes)

    def respond_next(self, status: int, body: bytes | str | dict, content_type: str = "application/json") -> None:
        """Answer the next request with this instead (before auth is checked): a 500, a proxy's HTML page..."""
        if isinstance(body, dict):
            body = json.dumps(body)
        self._canned.append(Canned(status, body.encode() if isinstance(body, str) else body, content_type))

    def fax(self, fax_id: int | str) -> ReceivedFax:
        return next(f for f in self.faxes if f.id == int(fax_id))

    # --- the API ---

    def _authorised(self, header: str | None) -> bool:
        expected = base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
        return header == f"Basic {expected}"

    def _send(self, body: bytes, content_type: str) -> tuple[int, dict]:
        try:
            parts = parse_multipart(body, content_type)
        except (ValueError, UnicodeDecodeError):
            return 400, {"success": False, "message": "Malformed multipart body"}
        fields = {p.name: p for p in parts}
        text = {p.name: p.data.decode("utf-8") for p in parts if p.filename is None}
        to = text.get("to", "")
        if not E164.fullmatch(to):
            return 422, {"success": False, "message": "Invalid phone number"}
        upload = fields.get("file")
        if upload is None or upload.filename is None:
            return 422, {"success": False, "message": "You must include a file or content_url"}
        if len(text.get("header_text", "")) > 50:
            return 422, {"success": False, "message": "header_text must be 50 characters or fewer"}
        tags = {m.group(1): v for k, v in text.items() if (m := re.fullmatch(r"tag\[(.+)\]", k))}
        with self._lock:
            script = self._scripts[to]
            outcome = script.popleft() if script else "success"
            fax = ReceivedFax(id=1000 + len(self.faxes) + 1, to=to, header_text=text.get("header_text"),
                              pdf=upload.data, filename=upload.filename, content_type=upload.content_type,
                              tags=tags, callback_url=text.get("callback_url"), outcome=outcome)
            self.faxes.append(fax)
        return 200, {"success": True, "message": "Fax queued for sending", "data": {"id": fax.id}}

    def _status(self, fax: ReceivedFax) -> tuple[int, dict]:
        with self._lock:
            fax.polls += 1
            final = fax.outcome == "cancelled" or fax.polls >= self.polls_to_final
            status, error_type, error_message, error_id = (
                OUTCOMES[fax.outcome] if final else ("queued" if fax.polls == 1 else "inprogress", None, None, None))
        recipient = {"phone_number": fax.to, "status": status, "retry_count": 0, "bitrate": 14400 if final else None,
                     "resolution": 8040 if final else None, "completed_at": "2026-11-02T10:00:30Z" if final else None,
                     "error_type": error_type, "error_id": error_id, "error_message": error_message}
        data = {"id": fax.id, "direction": "sent", "num_pages": fax.pages, "cost": 7 * fax.pages, "status": status,
                "is_test": True, "created_at": "2026-11-02T10:00:00Z", "caller_id": None, "from_number": None,
                "to_number": None, "recipients": [recipient], "tags": dict(fax.tags), "error_type": error_type,
                "error_message": error_message, "error_id": error_id,
                "completed_at": recipient["completed_at"]}
        return 200, {"success": True, "message": "Retrieved fax successfully", "data": data}

    def _cancel(self, fax: ReceivedFax) -> tuple[int, dict]:
        with self._lock:
            if fax.outcome == "cancelled" or fax.polls >= self.polls_to_final:
                return 422, {"success": False, "message": "Fax cannot be cancelled: it has already completed"}
            fax.outcome = "cancelled"
        return 200, {"success": True, "message": "Fax cancellation request sent", "data": {"id": fax.id}}

    def _route(self, method: str, path: str, body: bytes, content_type: str) -> tuple[int, dict]:
        if method == "POST" and path == "/v2.1/faxes":
            return self._send(body, content_type)
        found = re.fullmatch(r"/v2\.1/faxes/(\d+)(/cancel)?", path)
        fax = next((f for f in self.faxes if found and f.id == int(found.group(1))), None)
        if found and fax is None:
            return 404, {"success": False, "message": "Fax not found"}
        if found and method == "GET" and not found.group(2):
            return self._status(fax)
        if found and method == "POST" and found.group(2):
            return self._cancel(fax)
        return 404, {"success": False, "message": "Not found"}

    # --- the server ---

    def start(self) -> LoopbackPhaxio:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                authorised = owner._authorised(self.headers.get("Authorization"))
                with owner._lock:
                    owner.requests.append((self.command, self.path, authorised))
                    canned = owner._canned.popleft() if owner._canned else None
                if canned is None:
                    status, document = ((401, {"success": False, "message": "Invalid API credentials"})
                                        if not authorised else
                                        owner._route(self.command, self.path, body,
                                                     self.headers.get("Content-Type", "")))
                    canned = Canned(status, json.dumps(document).encode())
                self.send_response(canned.status)
                self.send_header("Content-Type", canned.content_type)
                self.send_header("Content-Length", str(len(canned.body)))
                self.end_headers()
                self.wfile.write(canned.body)

            do_GET = do_POST = _handle  # noqa: N815 - http.server's names

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # a client that hangs up mid-request (the timeout tests) is not news

        self._server = Server(("127.0.0.1", 0), Handler)
        if self.ssl_context is not None:
            self._server.socket = self.ssl_context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                         name="loopback-phaxio").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LoopbackPhaxio:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
