"""A real DNS server on 127.0.0.1 for the certificate-discovery tests: UDP and TCP on one kernel-chosen port,
dnslib for the wire format. It serves the CERT, SRV, A and SOA records a test gives it, answers NXDOMAIN or
NODATA (with the zone's SOA, for negative caching) otherwise, records every query so tests can count them,
can force truncation of UDP answers (TC bit: the client must retry over TCP), and can be stopped mid-test to
play "DNS down". Not a test module.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from dataclasses import dataclass

import dns.name
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dnslib import QTYPE, RCODE, RR, A, DNSRecord, RD, SOA, SRV

CERT = 37
PKIX, IPKIX = 1, 4


@dataclass(frozen=True)
class Query:
    transport: str  # "udp" | "tcp"
    name: str  # lower-case, no trailing dot, escapes as dnspython writes them (dr\.ana.example.org)
    qtype: str  # "CERT", "SRV", "A", ...


def _key(name) -> tuple[bytes, ...]:
    """Labels, lower-cased: a name given as text is parsed by dnspython, so `dr\\.ana` is one label."""
    labels = name.labels if isinstance(name, dns.name.Name) else dns.name.from_text(str(name)).labels
    return tuple(label.lower() for label in labels if label)


def _text(labels: tuple[bytes, ...]) -> str:
    return dns.name.Name(labels + (b"",)).to_text(omit_final_dot=True)


def cert_rdata(cert_type: int, data: bytes, key_tag: int = 0, algorithm: int = 0) -> bytes:
    """RFC 4398 section 2: type, key tag, algorithm, then the certificate (or, for IPKIX, the URL)."""
    return struct.pack("!HHB", cert_type, key_tag, algorithm) + data


class LoopbackDns:
    def __init__(self, *, truncate_udp: bool = False) -> None:
        self.truncate_udp = truncate_udp  # every UDP answer with records comes back truncated
        self._records: dict[tuple[bytes, ...], list[tuple[int, object, int]]] = {}
        self._zones: dict[tuple[bytes, ...], tuple[int, int]] = {}
        self.queries: list[Query] = []
        self._lock = threading.Lock()
        self.port = 0
        self._servers: list[socketserver.BaseServer] = []

    # --- records

    def add(self, name, rtype: int, rdata, ttl: int = 300) -> None:
        self._records.setdefault(_key(name), []).append((rtype, rdata, ttl))

    def add_cert(self, name, cert: x509.Certificate | bytes, *, ttl: int = 300) -> None:
        der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
        self.add(name, CERT, RD(cert_rdata(PKIX, der)), ttl)

    def add_cert_url(self, name, url: str, *, ttl: int = 300) -> None:
        self.add(name, CERT, RD(cert_rdata(IPKIX, url.encode("ascii"))), ttl)

    def add_srv(self, name, target: str, port: int, *, priority: int = 0, weight: int = 0, ttl: int = 300) -> None:
        self.add(name, QTYPE.SRV, SRV(priority=priority, weight=weight, port=port, target=target + "."), ttl)

    def add_a(self, name, ip: str = "127.0.0.1", *, ttl: int = 300) -> None:
        self.add(name, QTYPE.A, A(ip), ttl)

    def add_zone(self, zone, *, negative_ttl: int = 60, soa_ttl: int = 3600) -> None:
        """The zone's SOA, sent in the authority section of NXDOMAIN/NODATA answers."""
        self._zones[_key(zone)] = (negative_ttl, soa_ttl)

    def clear(self) -> None:
        self._records.clear()

    # --- what was asked

    def count(self, name: str | None = None, qtype: str | None = None, transport: str | None = None) -> int:
        want = _text(_key(name)) if name is not None else None
        with self._lock:
            return sum(1 for q in self.queries if (want is None or q.name == want)
                       and (qtype is None or q.qtype == qtype) and (transport is None or q.transport == transport))

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- answering

    def answer(self, data: bytes, transport: str) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - garbage in, nothing out, like a real server
            return None
        question = request.q
        labels = tuple(label.lower() for label in question.qname.label)
        with self._lock:
            self.queries.append(Query(transport, _text(labels), QTYPE.get(question.qtype, str(question.qtype))))
        reply = request.reply()
        reply.header.ra = 0
        reply.header.aa = 1
        matching = [(t, rd, ttl) for t, rd, ttl in self._records.get(labels, []) if t == question.qtype]
        for rtype, rdata, ttl in matching:
            reply.add_answer(RR(question.qname, rtype, rdata=rdata, ttl=ttl))
        if not matching:
            exists = any(key[-len(labels):] == labels for key in self._records) if labels else True
            if not exists:
                reply.header.rcode = RCODE.NXDOMAIN
            zone = max((z for z in self._zones if labels[-len(z):] == z), key=len, default=None)
            if zone is not None:
                negative_ttl, soa_ttl = self._zones[zone]
                origin = _text(zone) + "."
                reply.add_auth(RR(origin, QTYPE.SOA, ttl=soa_ttl, rdata=SOA(
                    "ns." + origin, "hostmaster." + origin, (1, 3600, 600, 86400, negative_ttl))))
        packed = reply.pack()
        if transport == "udp":
            size = max(512, request.ar[0].edns_len if request.ar and request.ar[0].rtype == QTYPE.OPT else 512)
            if (self.truncate_udp and matching) or len(packed) > size:
                truncated = request.reply()
                truncated.header.tc = 1
                return truncated.pack()
        return packed

    # --- running

    def start(self) -> "LoopbackDns":
        owner = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = owner.answer(data, "udp")
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                while True:
                    head = _recv(self.request, 2)
                    if head is None:
                        return
                    data = _recv(self.request, struct.unpack("!H", head)[0])
                    if data is None:
                        return
                    reply = owner.answer(data, "tcp")
                    if reply is None:
                        return
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        class UdpServer(socketserver.ThreadingUDPServer):
            daemon_threads = True

        class TcpServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        for _ in range(20):  # the UDP port's TCP twin may be taken; then try another port
            udp = UdpServer(("127.0.0.1", 0), Udp)
            try:
                tcp = TcpServer(("127.0.0.1", udp.server_address[1]), Tcp)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no free port for UDP and TCP together")
        self.port = udp.server_address[1]
        self._servers = [udp, tcp]
        for server in self._servers:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                             name="loopback-dns").start()
        return self

    def stop(self) -> None:
        """Close both sockets: from now on the port is dead (UDP queries time out, TCP is refused)."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []

    def __enter__(self) -> "LoopbackDns":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _recv(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data
