"""A tiny real HTTP server on 127.0.0.1 (kernel-chosen port, its own thread) serving what the certificate
tests publish: CRLs at CRL distribution points, certificates at AIA caIssuers and IPKIX URLs. Counts hits per
path so tests can see what was (not) downloaded. Not a test module.
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackHttp:
    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def put(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.files["/" + path.lstrip("/")] = (data, content_type)
        return self.url(path)

    def remove(self, path: str) -> None:
        self.files.pop("/" + path.lstrip("/"), None)

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits["/" + path.lstrip("/")]

    def start(self) -> "LoopbackHttp":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with owner._lock:
                    owner.hits[self.path] += 1
                found = owner.files.get(self.path)
                if found is None:
                    self.send_error(404)
                    return
                data, content_type = found
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                         name="loopback-http").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "LoopbackHttp":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
