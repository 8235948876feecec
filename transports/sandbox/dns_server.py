"""The sandbox's DNS: an authoritative server on loopback publishing the demo certificates as CERT records
(RFC 4398, type PKIX), so recipient checks run discovery.py's real lookups, UDP with TCP fallback included.

Negative answers. A name inside a sandbox zone that does not exist is NXDOMAIN, an existing name without the
asked type (the zone apex, a certificate's name asked for SRV) is NOERROR with no answer; both carry the
zone's SOA so the negative TTL is short, and both are what discovery and ldap_discovery read as "nothing
published" (no-certificate, and no LDAP directory to try). A name outside every zone is NXDOMAIN too rather
than REFUSED: the sandbox's DNS is the whole world of the demo, and REFUSED would make every address typed
in the demo a dns-error ("try again later") that the sender retries forever.
"""

from __future__ import annotations

import asyncio
import struct

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CERT
import dns.rrset

PKIX = 1  # RFC 4398: an X.509 certificate, DER
UDP_PLAIN = 512  # the answer size a client without EDNS accepts
IDLE_SECONDS = 10.0  # a TCP client that sends nothing for this long is dropped


def _name(text: str | dns.name.Name) -> dns.name.Name:
    return text if isinstance(text, dns.name.Name) else dns.name.from_text(text)


class DemoDns:
    """UDP and TCP on the same port. Records and zones may change while it runs (set_record/remove_record);
    `ttl` is the records' TTL, `negative_ttl` how long "nothing here" is believed: short, so a record added
    at run time is seen soon."""

    def __init__(self, records: dict[str, bytes], zones: set[str], *, host: str = "127.0.0.1", port: int = 0,
                 ttl: int = 60, negative_ttl: int = 5) -> None:
        self.host, self._wanted_port = host, port
        self.ttl, self.negative_ttl = ttl, negative_ttl
        self._zones: set[dns.name.Name] = {_name(z) for z in zones}
        self._records: dict[dns.name.Name, bytes] = {}
        for name, der in records.items():
            self.set_record(name, der)
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._clients: dict[asyncio.Task, asyncio.StreamWriter] = {}

    @property
    def nameserver(self) -> str:
        """The form [dns] nameservers and discovery.parse_nameserver take."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # --- records

    def add_zone(self, zone: str) -> None:
        self._zones.add(_name(zone))

    def set_record(self, name: str, der: bytes) -> None:
        """Publish `der` (one certificate) at `name`, replacing what was there; the name must lie in a zone."""
        owner = _name(name)
        if self._zone_of(owner) is None:
            raise ValueError(f"{name} is not inside any of the sandbox's DNS zones")
        self._records[owner] = bytes(der)

    def remove_record(self, name: str) -> None:
        self._records.pop(_name(name), None)

    # --- answering

    def _zone_of(self, name: dns.name.Name) -> dns.name.Name | None:
        return max((z for z in self._zones if name.is_subdomain(z)), key=lambda z: len(z.labels), default=None)

    def _soa(self, zone: dns.name.Name):
        text = f"ns.{zone} hostmaster.{zone} 1 3600 600 86400 {self.negative_ttl}"
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, text)
        return dns.rrset.from_rdata(zone, self.negative_ttl, rdata)

    def answer(self, wire: bytes, *, limit: int | None) -> bytes | None:
        """The reply to one query, at most `limit` bytes (UDP) or TC-truncated; None for anything that is not a
        query (garbage, or a response): no reply, like a real server, and nothing reflected."""
        try:
            query = dns.message.from_wire(wire)
            if query.flags & dns.flags.QR:
                return None
            response = dns.message.make_response(query)
        except Exception:  # noqa: BLE001 - whatever arrives on the port must not stop the server
            return None
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            self._fill(response, query.question[0])
        if limit is not None and query.edns >= 0:
            limit = max(limit, query.payload)
        return self._wire(response, min(limit or 65535, 65535))

    def _fill(self, response: dns.message.Message, question) -> None:
        name, rdtype = question.name, question.rdtype
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return
        zone = self._zone_of(name)
        if zone is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return
        response.flags |= dns.flags.AA
        der = self._records.get(name)
        if der is not None and rdtype in (dns.rdatatype.CERT, dns.rdatatype.ANY):
            rdata = dns.rdtypes.ANY.CERT.CERT(dns.rdataclass.IN, dns.rdatatype.CERT, PKIX, 0, 0, der)
            response.answer.append(dns.rrset.from_rdata(name, self.ttl, rdata))
            return
        if name == zone and rdtype == dns.rdatatype.SOA:
            response.answer.append(self._soa(zone))
            return
        exists = name == zone or any(owner.is_subdomain(name) for owner in self._records)
        if not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(self._soa(zone))

    @staticmethod
    def _wire(response: dns.message.Message, limit: int) -> bytes | None:
        """The whole answer if it fits, else the header and question with TC set: the client asks again over
        TCP (dnspython's resolver does)."""
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer.clear()
            response.authority.clear()
            response.additional.clear()
            response.flags |= dns.flags.TC
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.DNSException:
            return None

    # --- running

    async def start(self) -> None:
        """Bind UDP and then TCP on the UDP port (another port is tried if that TCP port is taken)."""
        loop = asyncio.get_running_loop()
        for _ in range(20):
            udp, _protocol = await loop.create_datagram_endpoint(lambda: _Udp(self),
                                                                 local_addr=(self.host, self._wanted_port))
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError:
                udp.close()
                if self._wanted_port:
                    raise
                continue
            self._udp, self.port = udp, port
            return
        raise OSError("no port free for both UDP and TCP on " + self.host)

    async def stop(self) -> None:
        """Close both sockets and every TCP connection; returns when their handlers have finished."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._clients.values()):
                writer.close()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._tcp.wait_closed()
            self._tcp = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """RFC 1035 4.2.2: two-byte length, then the message; several queries may share a connection."""
        task = asyncio.current_task()
        self._clients[task] = writer
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), IDLE_SECONDS)
                data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]), IDLE_SECONDS)
                reply = self.answer(data, limit=None)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            pass
        finally:
            self._clients.pop(task, None)
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DemoDns) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        reply = self.server.answer(data, limit=UDP_PLAIN)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP "port unreachable" from a client that went away: nothing to do
