"""Direct certificate discovery (STANDARDS.md "Certificates: discovery and trust", ONC DCDT cases D1-D18):
DNS CERT records (RFC 4398) at the address-bound name and at the domain, IPKIX URLs, the LDAP directory when
a domain publishes no CERT record, and missing intermediates from AIA caIssuers.

Nothing here judges a certificate (trust.py does); it is fetched, parsed and cached. Lookups are synchronous
and bounded: DNS by the resolver's lifetime, HTTP by a short timeout and a size cap. A lookup that could not be
completed raises LookupFailed, while "nothing published" is an empty result, so an outage is never reported as
"not a Direct address". Nothing is logged: addresses stay out of logs.
"""

from __future__ import annotations

import datetime as dt
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import dns.exception
import dns.inet
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from models import clock

PKIX, IPKIX = 1, 4  # RFC 4398 certificate types; the others (PGP, SPKI, ...) are not Direct's
CERT_MAX_BYTES = 64 * 1024  # one certificate behind an IPKIX URL
ISSUERS_MAX_BYTES = 256 * 1024  # an AIA caIssuers file: one certificate or a small PKCS#7 bundle
NEGATIVE_TTL = 300  # seconds "no record" is believed when the zone's SOA does not say
MAX_TTL = 86400  # a day, whatever a zone asks for
LDAP_TTL = 300  # LDAP has no TTL: a directory answer is reused this long
ISSUER_TTL = 86400  # intermediates change rarely; a fetched one is reused for a day
EDNS_PAYLOAD = 1232  # the DNS-flag-day size: most certificates fit in UDP, larger ones come over TCP
_SHA256 = hashes.SHA256()


class LookupFailed(Exception):
    """A lookup could not be completed. The message is a short clause for the user ("the DNS server did not
    answer in time"); `temporary` is False when waiting will not help (a URL scheme we do not fetch)."""

    def __init__(self, message: str, *, temporary: bool = True) -> None:
        super().__init__(message)
        self.temporary = temporary


# --- cache ---------------------------------------------------------------------------------------------

class TtlCache:
    """Values kept until an expiry read from models.clock (so tests move time, not sleep); thread-safe because
    the TUI verifies recipients in worker threads."""

    def __init__(self) -> None:
        self._items: dict[Any, tuple[dt.datetime, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return default
            if clock.now() >= item[0]:
                del self._items[key]
                return default
            return item[1]

    def put(self, key: Any, value: Any, *, seconds: float | None = None, until: dt.datetime | None = None) -> None:
        """Keep `value` for `seconds`, or until `until` (naive UTC); nothing is kept if that is already past."""
        now = clock.now()
        expires = until if until is not None else now + dt.timedelta(seconds=seconds or 0)
        if expires <= now:
            return
        with self._lock:
            self._items[key] = (expires, value)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


# --- resolver ------------------------------------------------------------------------------------------

def parse_nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    """'192.0.2.53', '127.0.0.1:5353', '[::1]:5353' or '::1'; ValueError says what is wrong."""
    value, port = str(text).strip(), "53"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r} is not an IP address with an optional :port")
        port = rest[1:] or port
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host = value
    if not dns.inet.is_address(host):
        raise ValueError(f"{text!r} is not an IP address (name servers are given as IP[:port])")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} has no valid port number")
    return dns.nameserver.Do53Nameserver(host, int(port))


def make_resolver(nameservers: Iterable[str] = (), *, timeout: float = 3.0,
                  lifetime: float = 8.0) -> dns.resolver.Resolver:
    """Our own resolver (the configured servers, else the system's) with no cache of its own: caching is
    TtlCache's, on models.clock. EDNS so certificates up to ~1.2 kB fit in UDP; truncated answers are retried
    over TCP by dnspython itself."""
    servers = [parse_nameserver(s) for s in nameservers]
    try:
        resolver = dns.resolver.Resolver(configure=not servers)
    except dns.resolver.NoResolverConfiguration as exc:
        raise LookupFailed("this computer has no DNS server configured") from exc
    if servers:
        resolver.nameservers = servers
    resolver.timeout, resolver.lifetime = float(timeout), float(lifetime)
    resolver.use_edns(0, 0, EDNS_PAYLOAD)
    resolver.cache = None
    return resolver


def address_names(address: str) -> list[dns.name.Name]:
    """Where an address-bound CERT record lives: the local part as one label in front of the domain (a dot in
    it escaped, `dr\\.ana.example.org`, RFC 4398 section 3), then - only for a dotted local part - the plain
    text replacement the Direct reference implementations query (`dr.ana.example.org`)."""
    local, domain = address.rsplit("@", 1)
    base = dns.name.from_text(domain)
    names = []
    try:
        names.append(dns.name.Name((local.encode("ascii"),) + base.labels))
    except dns.name.LabelTooLong:
        pass  # a 64-character local part cannot be one label; the plain form below may still exist
    if "." in local or not names:
        try:
            names.append(dns.name.from_text(f"{local}.{domain}"))
        except dns.exception.DNSException:
            pass
    return names


# --- results -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Published:
    """What one place (a DNS name, or the LDAP directory) publishes for an address: end-entity certificates,
    CA certificates published alongside (usable as intermediates), records that cannot be used and why, and
    downloads that failed (their certificate might have been the good one, so they make a verdict temporary)."""

    certificates: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()
    unusable: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()
    source: str = ""  # "dns" or "ldap"

    @property
    def anything(self) -> bool:
        """Whether a record was there at all (decides whether LDAP is asked)."""
        return bool(self.certificates or self.intermediates or self.unusable or self.unreachable)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _published(certs: Iterable[x509.Certificate], source: str, unusable=(), unreachable=()) -> Published:
    seen, leaves, cas = set(), [], []
    for cert in certs:
        fingerprint = cert.fingerprint(_SHA256)
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        (cas if _is_ca(cert) else leaves).append(cert)
    return Published(tuple(leaves), tuple(cas), tuple(unusable), tuple(unreachable), source)


def certificates_in(data: bytes) -> list[x509.Certificate]:
    """DER or PEM certificate(s), or a PKCS#7 certs-only bundle (what AIA caIssuers URLs usually serve)."""
    from transports.direct.identity import DirectSetupError, _certificates_in

    try:
        return _certificates_in(data, "download")
    except DirectSetupError:
        return []


# --- HTTP ----------------------------------------------------------------------------------------------

class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() != "http":
            raise urllib.error.URLError(f"redirected away from http ({urlsplit(newurl).scheme})")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def fetch_http(url: str, *, limit: int, timeout: float) -> bytes:
    """GET an http URL (CRL distribution points, AIA and IPKIX URLs are plain http by convention: the data is
    signed, and TLS would need the trust being established). Capped at `limit` bytes."""
    parts = urlsplit(url)
    host = parts.hostname or url
    if parts.scheme.lower() != "http":
        raise LookupFailed("only http addresses are fetched", temporary=False)
    request = urllib.request.Request(url, headers={"User-Agent": "referdesk", "Accept": "*/*"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise LookupFailed(f"{host} offered {int(length)} bytes, more than the {limit} allowed",
                                   temporary=False)
            data = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise LookupFailed(f"{host} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        text = "timed out" if "timed out" in str(reason) else "could not be reached"
        raise LookupFailed(f"{host} {text}") from None
    if len(data) > limit:
        raise LookupFailed(f"{host} sent more than the {limit} bytes allowed", temporary=False)
    return data


def aia_issuer_urls(cert: x509.Certificate) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [d.access_location.value for d in aia
            if d.access_method == x509.AuthorityInformationAccessOID.CA_ISSUERS
            and isinstance(d.access_location, x509.UniformResourceIdentifier)]


# --- discovery -----------------------------------------------------------------------------------------

def _negative_ttl(response) -> float:
    """RFC 2308: min(SOA TTL, SOA minimum) from the authority section; NEGATIVE_TTL when there is no SOA."""
    for rrset in getattr(response, "authority", ()) or ():
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return min(rrset.ttl, rrset[0].minimum, MAX_TTL)
    return NEGATIVE_TTL


class Discovery:
    """Lookups for one verification, sharing caches with every other one. The resolver is made on first use, so
    a check answered from the cache needs no DNS configuration at all."""

    def __init__(self, resolver: Callable[[], dns.resolver.Resolver] | dns.resolver.Resolver, cache: TtlCache,
                 *, fetch_timeout: float = 5.0) -> None:
        self._resolver_factory = resolver if callable(resolver) else (lambda: resolver)
        self._resolver: dns.resolver.Resolver | None = None
        self.cache = cache
        self.fetch_timeout = fetch_timeout

    @property
    def resolver(self) -> dns.resolver.Resolver:
        if self._resolver is None:
            try:
                self._resolver = self._resolver_factory()
            except ValueError as exc:
                raise LookupFailed(f"the DNS settings are not valid ({exc})", temporary=False) from None
        return self._resolver

    # DNS CERT

    def address_bound(self, address: str) -> Published:
        """CERT records at the address-bound name (the first of address_names that has any)."""
        for name in address_names(address):
            found = self.cert_records(name)
            if found.anything:
                return found
        return Published(source="dns")

    def domain_bound(self, domain: str) -> Published:
        return self.cert_records(dns.name.from_text(domain))

    def cert_records(self, name: dns.name.Name) -> Published:
        """The certificates published at one name, cached for the record's TTL (negative answers for the SOA's
        negative TTL). A result with a failed IPKIX download is not cached: the next check tries again."""
        key = ("CERT", name.to_text().lower())
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        try:
            answer = self.resolver.resolve(name, "CERT", search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            found = Published(source="dns")
            responses = exc.responses()
            self.cache.put(key, found, seconds=_negative_ttl(next(iter(responses.values()), None)))
            return found
        except dns.resolver.NoNameservers:
            raise LookupFailed("the DNS server could not answer (server failure)") from None
        except dns.exception.Timeout:
            raise LookupFailed("the DNS server did not answer in time") from None
        except dns.exception.DNSException as exc:
            raise LookupFailed(f"the DNS lookup failed ({exc.__class__.__name__})") from None
        if answer.rrset is None:
            found = Published(source="dns")
            self.cache.put(key, found, seconds=_negative_ttl(answer.response))
            return found
        found = self._parse_cert_rrset(answer.rrset)
        if not found.unreachable:
            self.cache.put(key, found, seconds=min(answer.rrset.ttl, MAX_TTL))
        return found

    def _parse_cert_rrset(self, rrset) -> Published:
        certs, unusable, unreachable = [], [], []
        for rdata in rrset:
            if rdata.certificate_type == PKIX:
                try:
                    certs.append(x509.load_der_x509_certificate(rdata.certificate))
                except ValueError:
                    unusable.append("a CERT record holds data that is not an X.509 certificate")
            elif rdata.certificate_type == IPKIX:
                url = rdata.certificate.rstrip(b"\x00").decode("ascii", "replace").strip()
                try:
                    data = fetch_http(url, limit=CERT_MAX_BYTES, timeout=self.fetch_timeout)
                except LookupFailed as exc:
                    (unreachable if exc.temporary else unusable).append(
                        f"the certificate published at {url} could not be downloaded: {exc}")
                    continue
                fetched = certificates_in(data)
                if not fetched:
                    unusable.append(f"{url} does not serve a certificate")
                certs.extend(fetched)
        return _published(certs, "dns", unusable, unreachable)

    # LDAP

    def ldap(self, address: str, domain: str) -> Published:
        """The domain's LDAP directory, asked only when DNS has no CERT record (STANDARDS.md)."""
        key = ("LDAP", address.lower())
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        try:
            from transports.direct.ldap_discovery import LdapDiscoveryError, find_ldap_certificates
        except ModuleNotFoundError as exc:
            if exc.name != "transports.direct.ldap_discovery":
                raise
            return Published(source="ldap")
        try:
            certs = find_ldap_certificates(address, domain, self.resolver, timeout=self.fetch_timeout)
        except LdapDiscoveryError:
            raise LookupFailed(f"the Direct directory (LDAP) of {domain} could not be reached") from None
        except dns.exception.DNSException:
            raise LookupFailed("the DNS lookup of the Direct directory (LDAP) failed") from None
        found = _published(certs, "ldap")
        self.cache.put(key, found, seconds=LDAP_TTL)
        return found

    # AIA

    def issuers(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """The certificates behind `cert`'s AIA caIssuers http URLs (cached a day). LookupFailed only when every
        URL failed, so one dead mirror does not matter."""
        urls = [u for u in aia_issuer_urls(cert) if urlsplit(u).scheme.lower() == "http"]
        found, failures = [], []
        for url in urls:
            key = ("AIA", url)
            certs = self.cache.get(key)
            if certs is None:
                try:
                    certs = certificates_in(fetch_http(url, limit=ISSUERS_MAX_BYTES, timeout=self.fetch_timeout))
                except LookupFailed as exc:
                    failures.append(exc)
                    continue
                self.cache.put(key, certs, seconds=ISSUER_TTL)
            found.extend(certs)
        if not found and failures:
            first = failures[0]
            raise LookupFailed(f"its issuing certificate could not be downloaded ({first})",
                               temporary=any(f.temporary for f in failures))
        return found

