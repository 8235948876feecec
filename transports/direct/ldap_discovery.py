"""Direct certificate discovery, LDAP half: used when a domain publishes no DNS CERT record (STANDARDS.md,
"Certificates: discovery and trust"; DCDT cases D3/D4, D10-D12, D15, D16).

SRV `_ldap._tcp.<domain>` names the directories; they are tried by priority, then RFC 2782 weighted order,
and the first one that answers is the one asked (a lower-priority server is a fallback, not a second
opinion). Anonymous bind, the root DSE's namingContexts, then `(mail=<address>)` in each context.

Hostnames are resolved through the caller's resolver, never the system's, so discovery sees the same DNS
view for SRV and A records. Nothing here judges the certificates: validity and trust are the caller's job.
"""

from __future__ import annotations

import math
import random

import dns.exception
import dns.resolver
import ldap3
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

_SIZE_LIMIT = 20  # a Direct address has one entry, maybe a few certificates; a directory dump is not wanted
_CERT_ATTRIBUTES = ["userCertificate;binary", "userCertificate"]
_SUCCESS, _SIZE_LIMIT_EXCEEDED = 0, 4
_rng = random.Random()  # module-level so tests can make the weighted order repeatable


class LdapDiscoveryError(Exception):
    """SRV records exist but no directory they name could be asked: unlike "no certificate published", this
    says nothing about the address, so the caller must not report it as "not a Direct address"."""


class _ServerFailed(Exception):
    """This directory could not be asked; the message is a short reason for the user."""


def find_ldap_certificates(address: str, domain: str, resolver: dns.resolver.Resolver,
                           timeout: float = 5.0) -> list[x509.Certificate]:
    """Certificates published for `address` in the first reachable LDAP directory of `domain`; [] when the
    domain has no LDAP SRV record or the directory has no entry or certificate for the address."""
    domain = domain.rstrip(".")
    records = _srv_records(domain, resolver)
    if not records:
        return []
    failures: dict[str, list[str]] = {}
    for record in _order(records, _rng):
        host, port = record.target.to_text(omit_final_dot=True), record.port
        try:
            return _ask_server(host, port, address, resolver, timeout)
        except _ServerFailed as failure:
            failures.setdefault(str(failure), []).append(f"{host}:{port}")
    detail = "; ".join(f"{', '.join(hosts)}: {reason}" for reason, hosts in failures.items())
    raise LdapDiscoveryError(f"LDAP directory for {domain} unreachable ({detail})")


def _srv_records(domain: str, resolver: dns.resolver.Resolver) -> list:
    name = f"_ldap._tcp.{domain}"
    try:
        answer = resolver.resolve(name, "SRV")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.Timeout:
        raise LdapDiscoveryError(f"DNS lookup of {name} timed out") from None
    except dns.exception.DNSException as error:
        # A DNS failure is not "no directory": saying [] here would turn an outage into "not a Direct address".
        raise LdapDiscoveryError(f"DNS lookup of {name} failed ({error.__class__.__name__})") from None
    records = list(answer)
    # RFC 2782: a single record with target "." means the service is decidedly not offered.
    if len(records) == 1 and records[0].target.to_text() == ".":
        return []
    return [record for record in records if record.target.to_text() != "."]


def _order(records: list, rng: random.Random) -> list:
    """RFC 2782 order: ascending priority; within a priority, repeatedly pick by running weight sum against a
    random number in [0, total], zero weights placed first so they get only the small chance the RFC gives."""
    ordered = []
    for priority in sorted({record.priority for record in records}):
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            pick, running = rng.randint(0, sum(r.weight for r in group)), 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    break
            ordered.append(group.pop(index))
    return ordered


def _addresses(host: str, resolver: dns.resolver.Resolver) -> list[str]:
    reason = "name not found"
    for rdtype in ("A", "AAAA"):
        try:
            return [rdata.address for rdata in resolver.resolve(host, rdtype)]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.Timeout:
            reason = "DNS lookup timed out"
        except dns.exception.DNSException:
            reason = "DNS lookup failed"
    raise _ServerFailed(reason)


def _ask_server(host: str, port: int, address: str, resolver: dns.resolver.Resolver,
                timeout: float) -> list[x509.Certificate]:
    reason = "no address"
    for ip in _addresses(host, resolver):
        server = ldap3.Server(ip, port=port, get_info=ldap3.NONE, connect_timeout=timeout)
        # No referral chasing: a referral could send the query to a host the SRV records never named.
        # ldap3 packs receive_timeout into SO_RCVTIMEO as whole seconds (a float fails; 0 would mean forever).
        connection = ldap3.Connection(server, authentication=ldap3.ANONYMOUS, auto_referrals=False,
                                      read_only=True, receive_timeout=max(1, math.ceil(timeout)),
                                      raise_exceptions=False)
        try:
            connection.open()
        except LDAPException as error:
            reason = _reason(error)
            continue  # another address of the same host may answer
        try:
            return _query(connection, address, timeout)
        except LDAPException as error:
            raise _ServerFailed(_reason(error)) from None
        finally:
            try:
                connection.unbind()
            except LDAPException:
                pass
    raise _ServerFailed(reason)


def _query(connection: ldap3.Connection, address: str, timeout: float) -> list[x509.Certificate]:
    if not connection.bind():
        raise _ServerFailed(f"anonymous bind refused ({connection.result.get('description')})")
    connection.search("", "(objectClass=*)", ldap3.BASE, attributes=["namingContexts"], size_limit=1,
                      time_limit=max(1, int(timeout)))
    if connection.result.get("result") != _SUCCESS:
        raise _ServerFailed("root entry (namingContexts) unreadable")
    contexts = [value.decode("utf-8", "replace") for entry in _entries(connection)
                for name, values in entry["raw_attributes"].items() if name.lower() == "namingcontexts"
                for value in values]
    search_filter = f"(mail={escape_filter_chars(address)})"
    found: dict[bytes, x509.Certificate] = {}
    for context in contexts:
        connection.search(context, search_filter, ldap3.SUBTREE, attributes=_CERT_ATTRIBUTES,
                          size_limit=_SIZE_LIMIT, time_limit=max(1, int(timeout)))
        if connection.result.get("result") not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            continue  # e.g. noSuchObject for a context we may not read: the others may still hold the entry
        for entry in _entries(connection):
            for name, values in entry["raw_attributes"].items():
                if name.split(";")[0].lower() == "usercertificate":
                    for value in values:
                        cert = _certificate(value)
                        if cert is not None:
                            found.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    return list(found.values())


def _entries(connection: ldap3.Connection) -> list[dict]:
    return [item for item in connection.response or [] if item.get("type") == "searchResEntry"]


def _certificate(value: bytes) -> x509.Certificate | None:
    """DER as RFC 4523 says; PEM because some directories store it anyway; anything else is skipped."""
    try:
        return x509.load_der_x509_certificate(value)
    except ValueError:
        pass
    if value.lstrip().startswith(b"-----BEGIN"):
        try:
            return x509.load_pem_x509_certificate(value)
        except ValueError:
            pass
    return None


def _reason(error: Exception) -> str:
    """ldap3 buries the socket error in a long message; the user needs only its gist."""
    text = str(error).lower()
    for needle, reason in (("refused", "connection refused"), ("timed out", "timed out"),
                           ("timeout", "timed out"), ("reset", "connection reset"),
                           ("unreachable", "network unreachable"), ("no route", "no route to host")):
        if needle in text:
            return reason
    if "closed" in text or "terminated" in text:
        return "connection closed by the server"
    return "no LDAP answer"
