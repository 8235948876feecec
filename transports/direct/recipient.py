"""Can we send to this Direct address, and to which certificate(s)? The one call the To: field, the CLI and
the sender make: discovery (discovery.py) and trust (trust.py) combined under STANDARDS.md's rules.

- A valid address-bound certificate wins over domain-bound ones; among several, the valid ones are used.
- An expired or revoked address-bound certificate stops discovery: no fallback to the domain-bound one.
- LDAP is asked only when DNS publishes no CERT record at either name.
- "Nothing published" (no-certificate) and "published but outside your trust bundle" (untrusted) are
  different verdicts with different words, because users confuse them.
- dns-error means the check could not be completed (DNS, the LDAP directory, or a certificate or revocation
  list download failed): waiting may change it, so the sender retries on it and only on it.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from models import clock
from models.addresses import AddressError, check_direct_address
from models.config import Config
from transports.direct import trust
from transports.direct.discovery import Discovery, LookupFailed, Published, TtlCache, make_resolver, \
    parse_nameserver
from transports.direct.identity import DirectSetupError, load_trust_anchors

VERIFIED, MALFORMED, NO_CERTIFICATE = "verified", "malformed-address", "no-certificate"
UNTRUSTED, EXPIRED, REVOKED, DNS_ERROR = "untrusted", "expired", "revoked", "dns-error"
STATES = (VERIFIED, MALFORMED, NO_CERTIFICATE, UNTRUSTED, EXPIRED, REVOKED, DNS_ERROR)

NO_CERTIFICATE_REASON = ("No Direct certificate is published for this address: it is not a Direct address, or "
                         "its HISP does not publish certificates.")
# Which failing certificate the verdict reports when none is valid: the most consequential one.
_SEVERITY = [trust.REVOKED, trust.EXPIRED, trust.UNCHECKED, trust.UNTRUSTED, trust.NOT_YET_VALID, trust.WEAK,
             trust.UNUSABLE, trust.UNBOUND]
_STATE_OF = {trust.REVOKED: REVOKED, trust.EXPIRED: EXPIRED, trust.UNCHECKED: DNS_ERROR}
_SHA256 = hashes.SHA256()


@dataclass(frozen=True)
class DirectSettings:
    """What a check needs from the configuration. `anchors` given directly wins over `trust_anchors` (a
    folder of certificates or a .p7b bundle, read once and re-read when it changes on disk)."""

    trust_anchors: str | Path | None = None
    anchors: tuple[x509.Certificate, ...] = ()
    nameservers: tuple[str, ...] = ()  # "IP" or "IP:port"; empty: the system's resolver
    dns_timeout: float = 3.0  # per DNS try
    dns_lifetime: float = 8.0  # for the whole DNS lookup, retries and TCP fallback included
    fetch_timeout: float = 5.0  # per HTTP download (IPKIX, AIA, CRL) and LDAP operation

    @classmethod
    def from_config(cls, config: Config) -> "DirectSettings":
        """[direct] trust_anchors, fetch_timeout; [dns] nameservers (a list or one string), timeout, lifetime.
        ValueError names the bad setting."""
        direct, dns_section = config.section("direct"), config.section("dns")
        servers = dns_section.get("nameservers", ())
        servers = (servers,) if isinstance(servers, str) else tuple(str(s) for s in servers or ())
        for server in servers:
            try:
                parse_nameserver(server)
            except ValueError as exc:
                raise ValueError(f"[dns] nameservers: {exc}") from None
        anchors = direct.get("trust_anchors")
        return cls(trust_anchors=str(anchors) if anchors else None, nameservers=servers,
                   dns_timeout=_seconds(dns_section, "timeout", 3.0, "[dns]"),
                   dns_lifetime=_seconds(dns_section, "lifetime", 8.0, "[dns]"),
                   fetch_timeout=_seconds(direct, "fetch_timeout", 5.0, "[direct]"))


def _seconds(section: dict, key: str, default: float, where: str) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 120:
        raise ValueError(f"{where} {key}: {value!r} is not a number of seconds between 0 and 120")
    return float(value)


@dataclass(frozen=True)
class DirectVerdict:
    """The answer for one address. `certificates` are every valid certificate of the chosen binding - the
    ones the sender encrypts to; `certificate` is the one shown (the longest-lived valid one, or the one the
    verdict is about when none is valid). `notes` has one sentence per certificate considered."""

    address: str
    state: str
    reason: str
    certificate: x509.Certificate | None = None
    certificates: tuple[x509.Certificate, ...] = ()
    subject: str = ""
    issuer: str = ""
    binding: str = ""  # "address" | "domain" | ""
    not_after: dt.datetime | None = None  # naive UTC
    fingerprint: str = ""  # SHA-256, hex
    checked_at: dt.datetime | None = None
    source: str = ""  # "dns" | "ldap" | ""
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.state == VERIFIED

    @property
    def temporary(self) -> bool:
        """Waiting may change the answer (the lookup could not be completed)."""
        return self.state == DNS_ERROR

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address, "state": self.state, "ok": self.ok, "temporary": self.temporary,
            "reason": self.reason, "binding": self.binding,
            "subject": self.subject, "issuer": self.issuer,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "fingerprint": self.fingerprint,
            "certificates": [c.fingerprint(_SHA256).hex() for c in self.certificates],
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "source": self.source, "notes": list(self.notes),
        }


@dataclass
class Caches:
    """In-process caches shared by every check: DNS answers (record TTL), LDAP answers, AIA intermediates
    (discovery.TtlCache keys say which), and CRLs (until their nextUpdate). Tests pass their own."""

    lookups: TtlCache = field(default_factory=TtlCache)
    crls: TtlCache = field(default_factory=TtlCache)

    def clear(self) -> None:
        self.lookups.clear()
        self.crls.clear()


DEFAULT_CACHES = Caches()


# --- trust anchors, loaded once per change on disk ----------------------------------------------------

_anchor_lock = threading.Lock()
_anchor_cache: dict[str, tuple[tuple, tuple[x509.Certificate, ...]]] = {}


def _stamp(path: Path) -> tuple:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file())


def anchors_for(settings: DirectSettings) -> tuple[x509.Certificate, ...]:
    """The trust anchors (the same tuple while the files are unchanged, so pyhanko's view of them is built
    once); DirectSetupError says why the trust bundle cannot be used."""
    if settings.anchors:
        return settings.anchors
    if not settings.trust_anchors:
        raise DirectSetupError("no trust anchors are configured ([direct] trust_anchors)")
    path = Path(settings.trust_anchors).expanduser()
    try:
        stamp = _stamp(path)
    except OSError:
        stamp = None
    key = str(path)
    with _anchor_lock:
        cached = _anchor_cache.get(key)
        if cached is not None and stamp is not None and cached[0] == stamp:
            return cached[1]
    anchors = tuple(load_trust_anchors(path))
    with _anchor_lock:
        _anchor_cache[key] = (stamp, anchors)
    return anchors




# --- the check -----------------------------------------------------------------------------------------

def check_recipient(address: str, settings: DirectSettings, *, caches: Caches | None = None) -> DirectVerdict:
    """Discover and judge the recipient's certificates. Never raises for anything the network or the
    recipient's publisher does: every outcome is a verdict."""
    now = clock.now()
    try:
        address = check_direct_address(address)
    except AddressError as exc:
        detail = str(exc).removeprefix("malformed: ")
        return DirectVerdict((address or "").strip(), MALFORMED,
                             f"This is not a valid Direct address: {detail}.", checked_at=now)
    caches = caches or DEFAULT_CACHES
    domain = address.rsplit("@", 1)[1]
    discovery = Discovery(lambda: make_resolver(settings.nameservers, timeout=settings.dns_timeout,
                                                lifetime=settings.dns_lifetime),
                          caches.lookups, fetch_timeout=settings.fetch_timeout)
    judge = _Judge(address, settings, caches, discovery, now)
    try:
        return judge.run(domain)
    except LookupFailed as exc:
        return judge.verdict(DNS_ERROR, f"The Direct certificate check could not be completed: {exc}; try again "
                                        "later.")


class _Judge:
    """One check's state: what was found so far and the verdict rules."""

    def __init__(self, address, settings, caches, discovery, now) -> None:
        self.address, self.settings, self.caches, self.discovery, self.now = address, settings, caches, discovery, now
        self.assessments: list[trust.Assessment] = []
        self.unreachable: list[str] = []
        self.unusable: list[str] = []
        self.intermediates: tuple[x509.Certificate, ...] = ()  # CA certificates published anywhere so far
        self.source = ""
        self._checker: trust.TrustChecker | None = None
        self._anchor_error = ""

    def run(self, domain: str) -> DirectVerdict:
        at_address = self.discovery.address_bound(self.address)
        decided = self._take(at_address, first=True)
        if decided:
            return decided
        at_domain = self.discovery.domain_bound(domain)
        decided = self._take(at_domain)
        if decided:
            return decided
        if not at_address.anything and not at_domain.anything:
            decided = self._take(self.discovery.ldap(self.address, domain), first=True)
            if decided:
                return decided
        return self._final()

    def _take(self, found: Published, *, first: bool = False) -> DirectVerdict | None:
        """Judge what one place publishes; a verdict when the rules already decide. `first`: the address's own
        place (its DNS name, or LDAP), where a failed download stops the search like an expired certificate."""
        if not found.anything:
            return None
        self.source = self.source or found.source
        self.unreachable += found.unreachable
        self.unusable += found.unusable
        self.intermediates += found.intermediates
        if found.certificates and self.checker() is None:
            return self.verdict(UNTRUSTED, "A Direct certificate is published for this address, but no "
                                           f"certificate can be trusted: {self._anchor_error}.",
                                certificate=found.certificates[0], source=found.source)
        for cert in found.certificates:
            if any(a.certificate == cert for a in self.assessments):
                continue
            self.assessments.append(self.checker().assess(cert, self.address, intermediates=self.intermediates))
        address_bound = [a for a in self.assessments if a.binding == "address"]
        if any(a.valid for a in address_bound):
            return self._verified("address", found.source)
        stoppers = [a for a in address_bound if a.status in (trust.REVOKED, trust.EXPIRED, trust.UNCHECKED)]
        if stoppers:
            # STANDARDS.md: an expired or revoked address-bound certificate stops discovery. One that could
            # not be checked stops it too: it may be revoked, and it may be the good one.
            return self._failure(address_bound)
        if first and found.unreachable:
            return self._final()
        if any(a.valid for a in self.assessments):
            return self._verified("domain", found.source)
        return None

    def _final(self) -> DirectVerdict:
        if self.unreachable:
            return self.verdict(DNS_ERROR, f"The Direct certificate check could not be completed: "
                                           f"{self.unreachable[0]}; try again later.")
        if self.assessments:
            return self._failure(self.assessments)
        if self.unusable:
            return self.verdict(UNTRUSTED, f"A certificate record is published for this address, but it cannot "
                                           f"be used: {self.unusable[0]}.")
        return self.verdict(NO_CERTIFICATE, NO_CERTIFICATE_REASON)

    def checker(self) -> trust.TrustChecker | None:
        if self._checker is None and not self._anchor_error:
            try:
                anchors = anchors_for(self.settings)
            except DirectSetupError as exc:
                self._anchor_error = f"your trust bundle cannot be used ({exc})"
                return None
            self._checker = trust.TrustChecker(anchors, crl_cache=self.caches.crls, issuers=self.discovery.issuers,
                                               fetch_timeout=self.settings.fetch_timeout)
        return self._checker

    def _verified(self, binding: str, source: str) -> DirectVerdict:
        good = sorted((a for a in self.assessments if a.binding == binding and a.valid),
                      key=lambda a: a.certificate.not_valid_after_utc, reverse=True)
        return self.verdict(VERIFIED, good[0].reason, certificate=good[0].certificate,
                            certificates=tuple(a.certificate for a in good), binding=binding, source=source)

    def _failure(self, candidates: list[trust.Assessment]) -> DirectVerdict:
        worst = min(candidates, key=lambda a: _SEVERITY.index(a.status))
        return self.verdict(_STATE_OF.get(worst.status, UNTRUSTED), worst.reason, certificate=worst.certificate,
                            binding=worst.binding)

    def verdict(self, state: str, reason: str, *, certificate: x509.Certificate | None = None,
                certificates: tuple[x509.Certificate, ...] = (), binding: str = "",
                source: str | None = None) -> DirectVerdict:
        details = {}
        if certificate is not None:
            details = dict(subject=trust.label(certificate.subject), issuer=trust.label(certificate.issuer),
                           not_after=trust.naive_utc(certificate.not_valid_after_utc),
                           fingerprint=certificate.fingerprint(_SHA256).hex())
        notes = tuple(a.reason for a in self.assessments) + tuple(self.unusable) + tuple(self.unreachable)
        return DirectVerdict(self.address, state, reason, certificate=certificate, certificates=certificates,
                             binding=binding, checked_at=self.now, source=self.source if source is None else source,
                             notes=notes, **details)
