"""A minimal IMAP4rev1 server over implicit TLS on 127.0.0.1, for the IMAP polling tests: one in-memory
mailbox the test fills, and just the commands imaplib's calls need (CAPABILITY, LOGIN, SELECT, SEARCH, FETCH,
STORE, each also under UID, EXPUNGE, CLOSE, NOOP, LOGOUT). A thread per connection; the TLS handshake happens
there, so a client that fails it only ends its own session.

Not a test module: imported by test_imap_poll.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
from dataclasses import dataclass, field

_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"|(\((?:[^()]|\([^()]*\))*\))|(\S+)')


@dataclass
class Stored:
    uid: int
    raw: bytes
    flags: set[str] = field(default_factory=set)


def _tokens(line: bytes) -> list[str]:
    out = []
    for quoted, group, atom in _TOKEN.findall(line):
        if quoted:
            out.append(re.sub(rb"\\(.)", rb"\1", quoted).decode())
        else:
            out.append((group or atom).decode())
    return out


def _numbers(spec: str, highest: int) -> set[int]:
    """An IMAP sequence set (1, 2:4, 3:*, *) as numbers up to `highest`."""
    found: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition(":")
        first = highest if low == "*" else int(low)
        last = first if not high else (highest if high == "*" else int(high))
        found.update(range(min(first, last), max(first, last) + 1))
    return found


class LoopbackImap:
    """`users` maps login to password; `add(raw)` puts a message in the mailbox (UIDs count up from 1);
    `messages` is the mailbox; `commands` records each command name seen (never arguments)."""

    def __init__(self, context: ssl.SSLContext, *, users: dict[str, str], mailbox: str = "INBOX") -> None:
        self.context, self.users, self.mailbox = context, users, mailbox
        self.messages: list[Stored] = []
        self.commands: list[str] = []
        self.lock = threading.Lock()
        self._next_uid = 1
        self.port = 0

    def add(self, raw: bytes, *flags: str) -> int:
        with self.lock:
            uid, self._next_uid = self._next_uid, self._next_uid + 1
            self.messages.append(Stored(uid, raw, set(flags)))
            return uid

    def __enter__(self) -> "LoopbackImap":
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, name="loopback-imap", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone may not
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                _Session(self, tls.makefile("rb"), tls).run()
        except (OSError, ssl.SSLError, ValueError):
            conn.close()


class _Session:
    def __init__(self, server: LoopbackImap, reader, tls: ssl.SSLSocket) -> None:
        self.server, self.reader, self.tls = server, reader, tls
        self.user: str | None = None
        self.selected = False

    def send(self, text: str | bytes) -> None:
        self.tls.sendall((text.encode() if isinstance(text, str) else text) + b"\r\n")

    def run(self) -> None:
        self.send("* OK [CAPABILITY IMAP4rev1] loopback IMAP ready")
        while True:
            line = self.reader.readline()
            if not line:
                return
            words = _tokens(line.rstrip(b"\r\n"))
            if len(words) < 2:
                self.send("* BAD no command")
                continue
            tag, command, args = words[0], words[1].upper(), words[2:]
            uid = command == "UID"
            if uid and args:
                command, args = args[0].upper(), args[1:]
            with self.server.lock:
                self.server.commands.append(("UID " if uid else "") + command)
                if not self.dispatch(tag, command, args, uid):
                    return

    def dispatch(self, tag: str, command: str, args: list[str], uid: bool) -> bool:
        if command == "CAPABILITY":
            self.send("* CAPABILITY IMAP4rev1")
        elif command == "NOOP":
            pass
        elif command == "LOGOUT":
            self.send("* BYE logging out")
            self.send(f"{tag} OK LOGOUT completed")
            return False
        elif command == "LOGIN":
            if len(args) == 2 and self.server.users.get(args[0]) == args[1]:
                self.user = args[0]
            else:
                self.send(f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials")
                return True
        elif self.user is None:
            self.send(f"{tag} BAD log in first")
            return True
        elif command in ("SELECT", "EXAMINE"):
            if not args or args[0].upper() != self.server.mailbox.upper():
                self.send(f"{tag} NO [NONEXISTENT] no such mailbox")
                return True
            self.selected = True
            messages = self.server.messages
            self.send(f"* {len(messages)} EXISTS")
            self.send("* 0 RECENT")
            self.send(r"* FLAGS (\Seen \Deleted \Flagged \Answered \Draft)")
            self.send("* OK [UIDVALIDITY 1] UIDs valid")
            self.send(f"* OK [UIDNEXT {self.server._next_uid}] predicted next UID")
            self.send(f"{tag} OK [READ-WRITE] SELECT completed")
            return True
        elif not self.selected:
            self.send(f"{tag} BAD select a mailbox first")
            return True
        elif command == "SEARCH":
            self.send("* SEARCH " + " ".join(str(n) for n in self.search(args, uid)))
        elif command == "FETCH" and len(args) >= 2:
            self.fetch(args[0], " ".join(args[1:]).upper(), uid)
        elif command == "STORE" and len(args) >= 3:
            self.store(args[0], args[1].upper(), args[2], uid)
        elif command in ("EXPUNGE", "CLOSE"):
            self.expunge(report=command == "EXPUNGE")
        else:
            self.send(f"{tag} BAD unsupported command")
            return True
        self.send(f"{tag} OK {command} completed")
        return True

    def matching(self, spec: str, uid: bool) -> list[tuple[int, Stored]]:
        messages = self.server.messages
        if uid:
            wanted = _numbers(spec, messages[-1].uid if messages else 0)
            return [(n, m) for n, m in enumerate(messages, 1) if m.uid in wanted]
        wanted = _numbers(spec, len(messages))
        return [(n, m) for n, m in enumerate(messages, 1) if n in wanted]

    def search(self, args: list[str], uid: bool) -> list[int]:
        key = " ".join(args).upper()
        hits = [(n, m) for n, m in enumerate(self.server.messages, 1)
                if key == "ALL" or (key == "UNSEEN" and "\\Seen" not in m.flags)]
        return [m.uid if uid else n for n, m in hits]

    def fetch(self, spec: str, items: str, uid: bool) -> None:
        for number, message in self.matching(spec, uid):
            if "RFC822" in items.replace("RFC822.", "") or "BODY[]" in items:
                message.flags.add("\\Seen")  # BODY.PEEK[] leaves the flags alone, as RFC 3501 says
            name = "RFC822" if "RFC822" in items else "BODY[]"
            flags = " ".join(sorted(message.flags))
            self.tls.sendall(f"* {number} FETCH (UID {message.uid} FLAGS ({flags}) {name} "
                             f"{{{len(message.raw)}}}\r\n".encode() + message.raw + b")\r\n")

    def store(self, spec: str, mode: str, flags: str, uid: bool) -> None:
        names = set(flags.strip("()").split())
        for number, message in self.matching(spec, uid):
            if mode.startswith("+"):
                message.flags |= names
            elif mode.startswith("-"):
                message.flags -= names
            else:
                message.flags = set(names)
            if not mode.endswith(".SILENT"):
                self.send(f"* {number} FETCH (UID {message.uid} FLAGS ({' '.join(sorted(message.flags))}))")

    def expunge(self, *, report: bool) -> None:
        messages = self.server.messages
        for number in range(len(messages), 0, -1):
            if "\\Deleted" in messages[number - 1].flags:
                del messages[number - 1]
                if report:
                    self.send(f"* {number} EXPUNGE")
