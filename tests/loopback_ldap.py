"""A minimal but real LDAPv3 server on 127.0.0.1 for the certificate-discovery tests.

It speaks BER over TCP using ldap3's own RFC 4511 definitions and pyasn1's codec, so the client under test goes
through its real socket and protocol code. Only what Direct discovery needs: anonymous bind, the root DSE
(namingContexts), an equality search on `mail`, unbind. Every request is recorded so tests can assert what the
client did. Not a test module.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from dataclasses import dataclass, field

from ldap3.protocol.rfc4511 import (
    AttributeDescription, AttributeValue, BindResponse, LDAPDN, LDAPMessage, LDAPString, MessageID,
    PartialAttribute, PartialAttributeList, ProtocolOp, ResultCode, SearchResultDone, SearchResultEntry, Vals,
)
from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error

SUCCESS, SIZE_LIMIT_EXCEEDED, NO_SUCH_OBJECT, UNWILLING = 0, 4, 32, 53


@dataclass
class Entry:
    """One directory entry; attribute names are sent exactly as given (e.g. `userCertificate;binary`)."""

    dn: str
    mail: str
    attributes: dict[str, list[bytes]] = field(default_factory=dict)


@dataclass
class Request:
    op: str  # "bind", "search", "unbind" or the unsupported operation's name
    base: str = ""
    filter: tuple[str, str] | None = None  # (attribute, value) of an equalityMatch
    attributes: tuple[str, ...] = ()
    size_limit: int = 0


def _read_message(sock: socket.socket) -> bytes | None:
    """One whole BER element from the stream (LDAP messages are definite-length), or None at EOF."""
    head = _read_exactly(sock, 2)
    if head is None:
        return None
    length = head[1]
    if length & 0x80:
        extra = _read_exactly(sock, length & 0x7F)
        if extra is None:
            return None
        head += extra
        length = int.from_bytes(extra, "big")
    body = _read_exactly(sock, length)
    return None if body is None else head + body


def _read_exactly(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _result(kind, code: int, message: str = ""):
    result = kind()
    result["resultCode"] = ResultCode(code)
    result["matchedDN"] = LDAPDN("")
    result["diagnosticMessage"] = LDAPString(message)
    return result


def _entry(dn: str, attributes: dict[str, list[bytes]]) -> SearchResultEntry:
    entry = SearchResultEntry()
    entry["object"] = LDAPDN(dn)
    attribute_list = PartialAttributeList()
    for position, (name, values) in enumerate(attributes.items()):
        attribute = PartialAttribute()
        attribute["type"] = AttributeDescription(name)
        vals = Vals()
        for index, value in enumerate(values):
            vals.setComponentByPosition(index, AttributeValue(value))
        attribute["vals"] = vals
        attribute_list.setComponentByPosition(position, attribute)
    entry["attributes"] = attribute_list
    return entry


def _encode(message_id: int, name: str, op) -> bytes:
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName(name, op)
    return encoder.encode(message)


class LoopbackLdap:
    """Serve `entries` under `naming_contexts` on a kernel-chosen port in a background thread; use as a context
    manager. `requests` lists what every client sent, in order."""

    def __init__(self, entries: list[Entry] = (), naming_contexts: tuple[str, ...] = ("dc=example,dc=org",)):
        self.entries = list(entries)
        self.naming_contexts = tuple(naming_contexts)
        self.requests: list[Request] = []
        self.connections = 0
        self.port = 0
        self._lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------------------------

    def __enter__(self) -> "LoopbackLdap":
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            block_on_close = False

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="loopback-ldap", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __exit__(self, *exc) -> None:
        self.stop()

    def searches(self) -> list[Request]:
        return [request for request in self.requests if request.op == "search"]

    # --- protocol -----------------------------------------------------------------------------------------

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        try:
            self._converse(sock)
        except (OSError, PyAsn1Error):
            pass  # a client that hangs up or sends garbage just loses its connection, as with a real server

    def _converse(self, sock: socket.socket) -> None:
        while (data := _read_message(sock)) is not None:
            message, _ = decoder.decode(data, asn1Spec=LDAPMessage())
            message_id = int(message["messageID"])
            op = message["protocolOp"]
            name = op.getName()
            if name == "bindRequest":
                self._record(Request("bind"))
                sock.sendall(_encode(message_id, "bindResponse", _result(BindResponse, SUCCESS)))
            elif name == "unbindRequest":
                self._record(Request("unbind"))
                return
            elif name == "searchRequest":
                sock.sendall(b"".join(self._search(message_id, op["searchRequest"])))
            else:
                self._record(Request(name))
                return  # nothing else is needed; closing tells a confused client quickly

    def _search(self, message_id: int, search) -> list[bytes]:
        base = str(search["baseObject"])
        scope = int(search["scope"])
        wanted = tuple(str(attribute) for attribute in search["attributes"])
        size_limit = int(search["sizeLimit"])
        flt = search["filter"]
        equality = None
        if flt.getName() == "equalityMatch":
            assertion = flt["equalityMatch"]
            equality = (str(assertion["attributeDesc"]), bytes(assertion["assertionValue"]).decode())
        self._record(Request("search", base, equality, wanted, size_limit))

        done = lambda code: _encode(message_id, "searchResDone", _result(SearchResultDone, code))  # noqa: E731
        if base == "" and scope == 0:  # the root DSE
            root = {"namingContexts": [context.encode() for context in self.naming_contexts]}
            return [_encode(message_id, "searchResEntry", _entry("", _select(root, wanted))), done(SUCCESS)]
        if not any(base.lower() == context.lower() for context in self.naming_contexts):
            return [done(NO_SUCH_OBJECT)]
        if equality is None or equality[0].lower() != "mail":
            return [done(UNWILLING)]
        matches = [entry for entry in self.entries
                   if entry.dn.lower().endswith(base.lower()) and entry.mail.lower() == equality[1].lower()]
        replies = [_encode(message_id, "searchResEntry", _entry(entry.dn, _select(entry.attributes, wanted)))
                   for entry in matches[:size_limit or None]]
        return replies + [done(SIZE_LIMIT_EXCEEDED if size_limit and len(matches) > size_limit else SUCCESS)]


def _select(attributes: dict[str, list[bytes]], wanted: tuple[str, ...]) -> dict[str, list[bytes]]:
    """Attributes whose base name (before any `;option`) was asked for; all of them for none or `*`."""
    if not wanted or "*" in wanted:
        return attributes
    names = {name.split(";")[0].lower() for name in wanted}
    return {name: values for name, values in attributes.items() if name.split(";")[0].lower() in names}
