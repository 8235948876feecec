"""The sandbox's CRL distribution point: plain HTTP on loopback serving the demo anchor's current revocation
list, so trust.py's hard-fail revocation check runs for real (and "revoked" is a real verdict, not a stub).

It is bound before the certificates are issued (their CRL distribution point holds its port): bind with
port 0, read `.port`, issue, then serve whatever `get_crl()` returns at each request.
"""

from __future__ import annotations

import asyncio
from typing import Callable
from urllib.parse import urlsplit

CRL_PATH = "/anchor.crl"
HEAD_LIMIT = 16 * 1024  # a GET for a CRL is a few hundred bytes; anything longer is not a client of ours
READ_SECONDS = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error"}


class DemoCrlServer:
    """A minimal HTTP/1.0 server: one request per connection, GET or HEAD of /anchor.crl, 404 otherwise."""

    def __init__(self, get_crl: Callable[[], bytes], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.get_crl = get_crl
        self.host, self._wanted_port = host, port
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[asyncio.Task, asyncio.StreamWriter] = {}

    def url_for(self, path: str = CRL_PATH) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/{path.lstrip('/')}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self._wanted_port, limit=HEAD_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop open connections; returns when their handlers have finished."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._clients.values()):
            writer.close()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    def _respond(self, head: bytes) -> tuple[int, str, bytes, bool]:
        """(status, content type, body, whether to send the body) for one request head."""
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "text/plain", b"bad request\n", True
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n", True
        if urlsplit(target).path != CRL_PATH:
            return 404, "text/plain", b"not found\n", method == "GET"
        try:
            body = self.get_crl()
        except Exception:  # noqa: BLE001 - a failed CRL is the client's "could not be checked", not a dead server
            return 500, "text/plain", b"no revocation list\n", method == "GET"
        return 200, "application/pkix-crl", body, method == "GET"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._clients[task] = writer
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_SECONDS)
            status, content_type, body, send_body = self._respond(head)
            lines = [f"HTTP/1.0 {status} {_REASONS[status]}", f"Content-Type: {content_type}",
                     f"Content-Length: {len(body)}", "Cache-Control: no-cache", "Connection: close", "", ""]
            if status == 405:
                lines.insert(1, "Allow: GET, HEAD")
            writer.write("\r\n".join(lines).encode("latin-1") + (body if send_body else b""))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError, OSError):
            pass  # a client that sent no complete request, or too much of one, gets nothing
        finally:
            self._clients.pop(task, None)
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
