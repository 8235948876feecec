"""LDAP certificate discovery (DCDT D3/D10-D12, D15, D16) against a real DNS server and real LDAP servers, all
on 127.0.0.1: SRV and A records come from a dnslib server through dnspython, certificates from
tests/loopback_ldap.py over BER/TCP."""

from __future__ import annotations

import random
import socket
import threading
from types import SimpleNamespace

import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from dnslib import QTYPE, RCODE, RR, SRV, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.direct_pki import closed_port, make_ca, make_leaf
from tests.loopback_ldap import Entry, LoopbackLdap
from transports.direct import ldap_discovery
from transports.direct.ldap_discovery import LdapDiscoveryError, find_ldap_certificates

DOMAIN = "example.org"
ADDRESS = "dr.ana@example.org"
SRV_NAME = f"_ldap._tcp.{DOMAIN}."


# --- a tiny authoritative DNS server for SRV and A records --------------------------------------------------

class _Zone(BaseResolver):
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[RR]] = {}

    def add(self, name: str, rtype: str, rdata, ttl: int = 60) -> None:
        self.records.setdefault((name.lower(), rtype), []).append(RR(name, getattr(QTYPE, rtype), rdata=rdata,
                                                                     ttl=ttl))

    def resolve(self, request, handler):
        reply = request.reply()
        name, rtype = str(request.q.qname).lower(), QTYPE[request.q.qtype]
        if (name, rtype) in self.records:
            for rr in self.records[name, rtype]:
                reply.add_answer(rr)
        elif not any(known == name for known, _ in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def dns_server():
    zone = _Zone()
    server = DNSServer(zone, address="127.0.0.1", port=0, logger=DNSLogger("-request,-reply,-truncated,-error"))
    thread = threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield SimpleNamespace(zone=zone, port=server.server.server_address[1])
    server.server.shutdown()
    server.server.server_close()
    thread.join(5)


@pytest.fixture
def zone(dns_server):
    dns_server.zone.records.clear()
    return dns_server.zone


@pytest.fixture
def resolver(dns_server):
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.port
    resolver.timeout = resolver.lifetime = 2.0
    return resolver


def publish(zone: _Zone, host: str, port: int, *, priority: int = 0, weight: int = 0) -> None:
    zone.add(SRV_NAME, "SRV", SRV(priority=priority, weight=weight, port=port, target=f"{host}."))
    if (f"{host}.", "A") not in zone.records:
        zone.add(f"{host}.", "A", A("127.0.0.1"))


# --- certificates -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs():
    ca = make_ca("LDAP Discovery Test Root")
    return SimpleNamespace(ana=make_leaf(ca, emails=(ADDRESS,)).cert,
                           other=make_leaf(ca, emails=(ADDRESS,), cn="second").cert,
                           third=make_leaf(ca, emails=(ADDRESS,), cn="third").cert)


def der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def entry(cert, *, attribute: str = "userCertificate;binary", dn: str = "cn=Ana,ou=people,dc=example,dc=org",
          mail: str = ADDRESS, extra: tuple[bytes, ...] = ()) -> Entry:
    return Entry(dn, mail, {"mail": [mail.encode()], attribute: [*extra, der(cert)]})


# --- found ---------------------------------------------------------------------------------------------------

def test_certificate_found_for_mixed_case_address(zone, resolver, certs):
    with LoopbackLdap([entry(certs.ana)]) as ldap:
        publish(zone, "ldap1.example.org", ldap.port)
        found = find_ldap_certificates("Dr.Ana@Example.org", DOMAIN, resolver, timeout=2)
    assert found == [certs.ana]
    ops = [request.op for request in ldap.requests]
    assert ops == ["bind", "search", "search", "unbind"]
    root, search = ldap.searches()
    assert (root.base, root.attributes) == ("", ("namingContexts",))
    assert search.base == "dc=example,dc=org"
    assert search.filter == ("mail", "Dr.Ana@Example.org")  # sent as given; the directory matches it
    assert 0 < search.size_limit <= 100
    assert {"userCertificate;binary", "userCertificate"} <= set(search.attributes)


def test_plain_user_certificate_attribute(zone, resolver, certs):
    with LoopbackLdap([entry(certs.ana, attribute="userCertificate")]) as ldap:
        publish(zone, "ldap1.example.org", ldap.port)
        assert find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=2) == [certs.ana]


def test_garbage_value_skipped_and_pem_accepted(zone, resolver, certs):
    pem = certs.other.public_bytes(serialization.Encoding.PEM)
    with LoopbackLdap([entry(certs.ana, extra=(b"\x30\x03not a certificate", b"", pem))]) as ldap:
        publish(zone, "ldap1.example.org", ldap.port)
        found = find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=2)
    assert found == [certs.other, certs.ana]


def test_entry_in_second_naming_context(zone, resolver, certs):
    contexts = ("o=elsewhere", "dc=example,dc=org")
    with LoopbackLdap([entry(certs.ana)], naming_contexts=contexts) as ldap:
        publish(zone, "ldap1.example.org", ldap.port)
        assert find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=2) == [certs.ana]
    assert [search.base for search in ldap.searches()] == ["", *contexts]


def test_filter_characters_escaped(zone, resolver, certs):
    odd = "a*)(mail=*@example.org"
    with LoopbackLdap([entry(certs.ana), entry(certs.other, mail=odd, dn="cn=Odd,dc=example,dc=org")]) as ldap:
        publish(zone, "ldap1.example.org", ldap.port)
        found = find_ldap_certificates(odd, DOMAIN, resolver, timeout=2)
    assert found == [certs.other]  # not a wildcard match of everyone
    assert ldap.searches()[-1].filter == ("mail", odd)


def test_search_is_size_limited(zone, resolver, certs, monkeypatch):
    monkeypatch.setattr(ldap_discovery, "_SIZE_LIMIT", 2)
    entries = [entry(cert, dn=f"cn={n},dc=example,dc=org") for n, cert in
               enumerate((certs.ana, certs.other, certs.third))]
    with LoopbackLdap(entries) as ldap:
        publish(zone, "ldap1.example.org", ldap.port)
        found = find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=2)
    assert found == [certs.ana, certs.other]  # what came before sizeLimitExceeded is kept
    assert ldap.searches()[-1].size_limit == 2


# --- nothing there -------------------------------------------------------------------------------------------

def test_no_srv_record(zone, resolver):
    zone.add("example.org.", "A", A("127.0.0.1"))  # the domain exists, the SRV name does not
    assert find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=2) == []


def test_srv_target_dot_means_no_service(zone, resolver):
    zone.add(SRV_NAME, "SRV", SRV(priority=0, weight=0, port=389, target="."))
    assert find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=2) == []


def test_entry_missing(zone, resolver, certs):
    with LoopbackLdap([entry(certs.ana, mail="someone.else@example.org")]) as ldap:
        publish(zone, "ldap1.example.org", ldap.port)
        assert find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=2) == []


def test_entry_without_certificate(zone, resolver):
    with LoopbackLdap([Entry("cn=Ana,dc=example,dc=org", ADDRESS, {"mail": [ADDRESS.encode()]})]) as ldap:
        publish(zone, "ldap1.example.org", ldap.port)
        assert find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=2) == []


# --- priority, weight, failover --------------------------------------------------------------------------

def test_first_server_down_second_used(zone, resolver, certs):
    """DCDT D10: priority 0 unavailable, priority 10 answers."""
    with LoopbackLdap([entry(certs.ana)]) as ldap:
        publish(zone, "ldap1.example.org", closed_port(), priority=0)
        publish(zone, "ldap2.example.org", ldap.port, priority=10)
        assert find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=2) == [certs.ana]


def test_lowest_priority_value_asked_first_and_only(zone, resolver, certs):
    """DCDT D15: the reachable priority-0 server is the answer, even when it has nothing; priority 1 is a
    fallback for unreachability, not a second opinion."""
    with LoopbackLdap([]) as first, LoopbackLdap([entry(certs.other)]) as second:
        publish(zone, "ldap2.example.org", second.port, priority=1)
        publish(zone, "ldap1.example.org", first.port, priority=0)
        assert find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=2) == []
    assert first.connections == 1 and second.connections == 0


def test_all_servers_down(zone, resolver):
    """DCDT D12: SRV records but nobody answers is an error, not "no certificate"."""
    publish(zone, "ldap1.example.org", closed_port(), priority=0)
    publish(zone, "ldap2.example.org", closed_port(), priority=10)
    with pytest.raises(LdapDiscoveryError) as caught:
        find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=2)
    message = str(caught.value)
    assert message.startswith("LDAP directory for example.org unreachable")
    assert "ldap1.example.org:" in message and "ldap2.example.org:" in message
    assert "connection refused" in message
    assert ADDRESS not in message


def test_unresolvable_and_silent_servers_named_with_reasons(zone, resolver):
    with socket.socket() as silent:  # listens (the kernel completes the handshake) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        zone.add(SRV_NAME, "SRV", SRV(priority=0, weight=0, port=389, target="ghost.example.org."))
        publish(zone, "slow.example.org", port, priority=5)
        with pytest.raises(LdapDiscoveryError) as caught:
            find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=0.3)
    assert "ghost.example.org:389: name not found" in str(caught.value)
    assert f"slow.example.org:{port}: timed out" in str(caught.value)


def test_dns_failure_is_an_error_not_an_empty_answer():
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], closed_port()
    resolver.timeout = resolver.lifetime = 0.3
    with pytest.raises(LdapDiscoveryError, match=r"DNS lookup of _ldap\._tcp\.example\.org"):
        find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=1)


def test_higher_weight_preferred_among_equal_priority(zone, resolver, certs, monkeypatch):
    """DCDT D16: weight 100 beats weight 0 at the same priority (seeded, so repeatable)."""
    monkeypatch.setattr(ldap_discovery, "_rng", random.Random(2782))
    with LoopbackLdap([entry(certs.other)]) as light, LoopbackLdap([entry(certs.ana)]) as heavy:
        publish(zone, "light.example.org", light.port, priority=0, weight=0)
        publish(zone, "heavy.example.org", heavy.port, priority=0, weight=100)
        assert find_ldap_certificates(ADDRESS, DOMAIN, resolver, timeout=2) == [certs.ana]
    assert heavy.connections == 1 and light.connections == 0


def _srv(name: str, priority: int, weight: int):
    return SimpleNamespace(name=name, priority=priority, weight=weight)


def test_rfc2782_order():
    records = [_srv("late", 10, 50), _srv("zero", 0, 0), _srv("heavy", 0, 100)]
    rng = random.Random(1)
    firsts = [ldap_discovery._order(records, rng)[0].name for _ in range(1000)]
    assert 0 < firsts.count("zero") < 50  # weight 0 gets the RFC's small chance, never the majority
    assert "late" not in firsts
    ordered = ldap_discovery._order(records, SimpleNamespace(randint=lambda low, high: high))
    assert [record.name for record in ordered] == ["heavy", "zero", "late"]
    ordered = ldap_discovery._order(records, SimpleNamespace(randint=lambda low, high: low))
    assert [record.name for record in ordered] == ["zero", "heavy", "late"]
