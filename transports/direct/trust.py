"""May this certificate be used for this Direct address? (STANDARDS.md "Certificates: discovery and trust"):
bound to the address or its domain (no wildcards), an acceptable key and signature, usable for the purpose (a
recipient's certificate must allow encryption, an inbound signer's must allow signing), valid now, chaining to
a configured trust anchor, and not revoked by its CRL.

Path validation and revocation are pyhanko-certvalidator's, in "hard-fail" mode: a certificate that names a
CRL distribution point whose list cannot be had (server down, list out of date) is *not* passed - it is
reported as "could not be checked", a temporary state. Soft-fail would send to a certificate revoked yesterday
whenever the CA's web server is down. CRLs (and missing intermediates) are fetched here, not by pyhanko, so
they are cached until their nextUpdate, work at a frozen clock, and come from loopback servers in tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import functools
import threading
from dataclasses import dataclass
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from models import clock
from transports.direct.discovery import LookupFailed, TtlCache, fetch_http
from transports.direct.identity import ALLOWED_CURVES, WEAK_HASHES, _san_names

ENCRYPT, SIGN = "encrypt", "sign"  # what the certificate is judged for: a recipient's, or an inbound signer's
VALID, EXPIRED, REVOKED, UNCHECKED = "valid", "expired", "revoked", "unchecked"
UNTRUSTED, WEAK, UNBOUND, UNUSABLE, NOT_YET_VALID = "untrusted", "weak", "unbound", "unusable", "not-yet-valid"
CRL_MAX_BYTES = 16 * 1024 * 1024
CRL_DEFAULT_TTL = 3600  # a CRL without nextUpdate is reused for an hour
MAX_CHAIN = 6
_SHA256 = hashes.SHA256()


@dataclass(frozen=True)
class Assessment:
    """The verdict on one certificate: `status` (valid, expired, revoked, unchecked, untrusted, weak, unbound,
    unusable, not-yet-valid), and `reason`, one sentence for the user."""

    certificate: x509.Certificate
    binding: str  # "address", "domain" or "" (bound to neither)
    status: str
    reason: str
    when: dt.datetime | None = None  # expiry or revocation time, naive UTC

    @property
    def valid(self) -> bool:
        return self.status == VALID


# --- the certificate's own properties ------------------------------------------------------------------

def label(name: x509.Name) -> str:
    """The common name people recognise, else the distinguished name."""
    cns = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else (name.rfc4514_string() or "(no name)")


def binding_of(cert: x509.Certificate, address: str) -> tuple[str, str]:
    """("address" | "domain" | "", why not). Address-bound: an rfc822Name equal to the address, compared
    case-insensitively (STANDARDS.md: the local part too). Domain-bound: a dNSName equal to the domain.
    A wildcard never matches."""
    domain = address.rsplit("@", 1)[1].lower()
    emails, dns_names = _san_names(cert)
    if any(e.strip().lower() == address.lower() for e in emails):
        return "address", ""
    if any(n.strip().lower().rstrip(".") == domain for n in dns_names):
        return "domain", ""
    named = [*emails, *dns_names]
    if not named:
        return "", "it names no e-mail address or domain (no subjectAltName)"
    why = f"it is issued to {', '.join(named[:3])}{' and others' if len(named) > 3 else ''}"
    if any(n.startswith("*") for n in dns_names):
        why += ", and wildcard certificates are not allowed in Direct"
    return "", why


def _key_problem(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "" if key.key_size >= 2048 else f"its RSA key has {key.key_size} bits; Direct requires 2048 or more"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "" if key.curve.name in ALLOWED_CURVES else f"its key uses the {key.curve.name} curve; Direct " \
                                                            "accepts P-256 and P-384"
    return "its key type is not used in Direct (RSA or EC P-256/P-384 are)"


def _signature_problem(cert: x509.Certificate, purpose: str = ENCRYPT) -> str:
    """MD5 never; SHA-1 not for a certificate we encrypt to, but accepted on receipt (STANDARDS.md: SHA-1 is
    never sent and may be accepted from older senders, as the Java reference implementation's are)."""
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or algorithm.name not in WEAK_HASHES:
        return ""
    if purpose == SIGN and algorithm.name == "sha1":
        return ""
    return f"it is signed with {WEAK_HASHES[algorithm.name]}, which Direct no longer accepts"


def _usage_problem(cert: x509.Certificate, purpose: str) -> str:
    """For "encrypt" (the sender encrypts to it) a signing-only certificate is no use - a HISP may publish a
    signing and an encryption certificate side by side; for "sign" (an inbound signer) the reverse."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if purpose == ENCRYPT:
            if not (usage.key_agreement if isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
                    else usage.key_encipherment):
                return "it is for signing only, so messages cannot be encrypted to it"
        elif not (usage.digital_signature or usage.content_commitment):
            return "it is not a signing certificate"
    except x509.ExtensionNotFound:
        pass
    try:
        purposes = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if not {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(purposes):
            return "it is not issued for secure e-mail (no emailProtection purpose)"
    except x509.ExtensionNotFound:
        pass
    return ""


@dataclass(frozen=True)
class _Words:
    """The sentence openings: a recipient's certificate is one "published for this address" (or its domain);
    an inbound signer's is "the sender's certificate"."""

    the: str  # "The Direct certificate published for this address"
    a: str  # "A Direct certificate is published for this address, but it"
    good: str  # "A trusted Direct certificate is published for this address"
    expiry_advice: str = ""

    @classmethod
    def of(cls, purpose: str, binding: str, address: str) -> "_Words":
        if purpose == SIGN:
            return cls("The sender's certificate", "The sender's certificate", "The sender's certificate is trusted")
        where = f"for its domain {address.rsplit('@', 1)[1]}" if binding == "domain" else "for this address"
        return cls(f"The Direct certificate published {where}", f"A Direct certificate is published {where}, but it",
                   f"A trusted Direct certificate is published {where}",
                   ": the recipient must renew it before anything can be sent")

    def trusted(self, cert: x509.Certificate) -> str:
        return (f"{self.good} (issued by “{label(cert.issuer)}”, valid until "
                f"{_day(naive_utc(cert.not_valid_after_utc))}).")


def crl_urls(cert: x509.Certificate) -> list[str]:
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [name.value for point in points for name in (point.full_name or ())
            if isinstance(name, x509.UniformResourceIdentifier)]


def _day(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d")


def naive_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value


# --- the checker ---------------------------------------------------------------------------------------

def _run(coroutine):
    """pyhanko-certvalidator 0.33 is async-only. Callers are synchronous (worker threads, the CLI); if one
    calls from inside an event loop anyway, the validation runs on a helper thread rather than failing."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _asn1(cert: x509.Certificate):
    from asn1crypto import x509 as asn1_x509

    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


#: Held while pyhanko validates a path. asn1crypto decodes lazily, writing into the objects it reads, and the
#: anchors (and cached CRLs) are shared: two threads validating at once could see one half-decoded and report
#: a good certificate as malformed. Validation is pure Python under the GIL, so taking turns costs little.
_VALIDATION = threading.Lock()


@functools.lru_cache(maxsize=8)
def _trust_manager(anchors: tuple[x509.Certificate, ...]):
    """pyhanko's view of the anchors, built once per bundle: rebuilding it per check costs ~30 ms for a
    150-anchor DirectTrust bundle, most of a warm check. Shared by threads, used only under _VALIDATION."""
    from pyhanko_certvalidator.registry import SimpleTrustManager

    return SimpleTrustManager.build(trust_roots=[_asn1(a) for a in anchors])


class TrustChecker:
    """Judges certificates against one set of trust anchors. `issuers(cert)` fetches a certificate's AIA
    caIssuers (discovery.Discovery.issuers); CRLs are kept in `crl_cache` until their nextUpdate."""

    def __init__(self, anchors: list[x509.Certificate] | tuple[x509.Certificate, ...], *, crl_cache: TtlCache,
                 issuers: Callable[[x509.Certificate], list[x509.Certificate]] = lambda cert: [],
                 fetch_timeout: float = 5.0) -> None:
        self.anchors = tuple(anchors)
        self._anchor_subjects = {a.subject for a in self.anchors}
        self._anchor_prints = {a.fingerprint(_SHA256) for a in self.anchors}
        self.crl_cache = crl_cache
        self._issuers = issuers
        self.fetch_timeout = fetch_timeout

    def assess(self, cert: x509.Certificate, address: str, *, intermediates: tuple[x509.Certificate, ...] = (),
               purpose: str = ENCRYPT) -> Assessment:
        """`purpose`: ENCRYPT for a recipient's certificate, SIGN for an inbound message's signer. Cheap checks
        first (binding, key, validity), so a certificate that fails them costs no download."""
        try:
            return self._assess(cert, address, tuple(intermediates), purpose, clock.now())
        except ValueError:  # cryptography refuses malformed extensions only when they are read
            words = _Words.of(purpose, "", address)
            return Assessment(cert, "", UNBOUND, f"{words.a} is malformed and cannot be read.")

    def _assess(self, cert, address, intermediates, purpose, now) -> Assessment:
        binding, unbound = binding_of(cert, address)
        words = _Words.of(purpose, binding, address)
        if not binding:
            return Assessment(cert, "", UNBOUND, f"{words.a} is not bound to {address}: {unbound}.")
        for problem in (_key_problem(cert), _signature_problem(cert, purpose)):
            if problem:
                return Assessment(cert, binding, WEAK, f"{words.a} is not acceptable: {problem}.")
        problem = _usage_problem(cert, purpose)
        if problem:
            return Assessment(cert, binding, UNUSABLE, f"{words.a} cannot be used: {problem}.")
        start, end = naive_utc(cert.not_valid_before_utc), naive_utc(cert.not_valid_after_utc)
        if now > end:
            return Assessment(cert, binding, EXPIRED, f"{words.the} expired on {_day(end)}{words.expiry_advice}.",
                              end)
        if now < start:
            return Assessment(cert, binding, NOT_YET_VALID, f"{words.the} is not valid until {_day(start)}.", start)
        return self._validate(cert, binding, words, intermediates, now, purpose)

    # path and revocation

    def _chain(self, cert: x509.Certificate, pool: list[x509.Certificate]) -> tuple[list[x509.Certificate], bool]:
        """Intermediates from `cert` up to an anchor's name, taken from `pool` or fetched via AIA; whether an
        anchor was reached by name (pyhanko then checks every signature)."""
        chain, current = [], cert
        for _ in range(MAX_CHAIN):
            if current.issuer in self._anchor_subjects or current.fingerprint(_SHA256) in self._anchor_prints:
                return chain, True
            if current.issuer == current.subject:
                return chain, False  # a self-signed certificate that is not one of the anchors
            step = next((c for c in pool if c.subject == current.issuer and c not in chain and c != current), None)
            if step is None:
                fetched = self._issuers(current)
                pool.extend(fetched)
                step = next((c for c in fetched if c.subject == current.issuer), None)
                if step is None:
                    return chain, False
            chain.append(step)
            current = step
        return chain, False

    def _validate(self, cert, binding, words: _Words, intermediates, now, purpose: str = ENCRYPT) -> Assessment:
        try:
            chain, reaches = self._chain(cert, list(intermediates))
        except LookupFailed as exc:
            status = UNCHECKED if exc.temporary else UNTRUSTED
            return Assessment(cert, binding, status, f"{words.the} could not be checked: {exc}"
                                                     + ("; try again later." if exc.temporary else "."))
        if not reaches:
            top = chain[-1] if chain else cert
            return Assessment(cert, binding, UNTRUSTED, f"{words.a} is not trusted: its issuer "
                                                        f"“{label(top.issuer)}” is not in your trust bundle.")
        crls, failures = [], []
        for member in [cert, *chain]:
            crl, failure = self._crl_for(member)
            if crl is not None:
                crls.append(crl)
            elif failure is not None:
                failures.append(failure)
        try:
            with _VALIDATION:
                _run(self._pyhanko(cert, chain, crls, now, purpose))
        except Exception as exc:  # noqa: BLE001 - every pyhanko outcome is mapped below
            return self._failed(cert, binding, words, exc, failures)
        return Assessment(cert, binding, VALID, words.trusted(cert))

    async def _pyhanko(self, cert, chain, crls, now, purpose: str = ENCRYPT) -> None:
        from pyhanko_certvalidator import CertificateValidator, ValidationContext

        weak = {"md2", "md5"} | ({"sha1"} if purpose == ENCRYPT else set())
        context = ValidationContext(trust_manager=_trust_manager(self.anchors),
                                    other_certs=[_asn1(c) for c in chain], crls=crls,
                                    moment=now.replace(tzinfo=dt.timezone.utc), allow_fetching=False,
                                    revocation_mode="hard-fail", weak_hash_algos=weak)
        await CertificateValidator(_asn1(cert), validation_context=context).async_validate_path()

    def _failed(self, cert, binding, words: _Words, exc, crl_failures) -> Assessment:
        from pyhanko_certvalidator import errors

        ee = getattr(exc, "is_ee_cert", True)
        whose = "it " if ee else "the certificate authority that issued it "
        if isinstance(exc, errors.RevokedError):
            when = naive_utc(exc.revocation_dt)
            text = (f"was revoked by its issuer on {_day(when)}" if ee
                    else f"cannot be used: {whose}was revoked on {_day(when)}")
            return Assessment(cert, binding, REVOKED, f"{words.the} {text}.", when)
        if isinstance(exc, errors.ExpiredError):
            when = naive_utc(exc.expired_dt)
            return Assessment(cert, binding, EXPIRED, f"{words.the} cannot be used: {whose}expired on {_day(when)}.",
                              when)
        if isinstance(exc, errors.InsufficientRevinfoError):
            # Waiting helps when a download failed or the CA's list is out of date (it publishes a new one);
            # not when the list cannot be used at all (unreadable, wrong signer, LDAP- or OCSP-only).
            if crl_failures:
                why, temporary = crl_failures[0]
            elif isinstance(exc, errors.StaleRevinfoError):
                why, temporary = "its issuer's revocation list is out of date", True
            else:
                why, temporary = "no usable revocation list (CRL) is published for it", False
            return Assessment(cert, binding, UNCHECKED if temporary else UNTRUSTED,
                              f"{words.the} could not be checked for revocation: {why}"
                              + ("; try again later." if temporary else "."))
        if isinstance(exc, errors.DisallowedAlgorithmError):
            return Assessment(cert, binding, WEAK, f"{words.a} is not acceptable: {whose}uses an algorithm Direct "
                                                   "no longer accepts.")
        if isinstance(exc, errors.NotYetValidError):
            return Assessment(cert, binding, NOT_YET_VALID, f"{words.the} cannot be used yet: {whose}is not valid "
                                                            f"until {_day(naive_utc(exc.valid_from))}.")
        if isinstance(exc, (errors.PathError, errors.ValidationError)):  # building, signatures, constraints
            return Assessment(cert, binding, UNTRUSTED, f"{words.a} is not trusted: it does not chain to your trust "
                                                        f"bundle (issuer “{label(cert.issuer)}”).")
        # Anything else is the validator failing, not a verdict on the certificate: never a permanent "no".
        return Assessment(cert, binding, UNCHECKED, f"{words.the} could not be checked ({type(exc).__name__} in "
                                                    "path validation); try again later.")

    def _crl_for(self, cert: x509.Certificate):
        """(CertificateList, None) from the first distribution point that answers; (None, (why, temporary))
        when none did; (None, None) when the certificate names none (then pyhanko requires nothing)."""
        urls = crl_urls(cert)
        failure = None
        for url in (u for u in urls if u.lower().startswith("http://")):
            key = ("CRL", url)
            crl = self.crl_cache.get(key)
            if crl is not None:
                return crl, None
            try:
                crl = _parse_crl(fetch_http(url, limit=CRL_MAX_BYTES, timeout=self.fetch_timeout))
            except LookupFailed as exc:
                failure = failure or (f"the revocation list at {url} could not be downloaded ({exc})", exc.temporary)
                continue
            except ValueError:
                failure = failure or (f"the revocation list at {url} cannot be read", False)
                continue
            next_update = crl["tbs_cert_list"]["next_update"].native
            if next_update is None:
                self.crl_cache.put(key, crl, seconds=CRL_DEFAULT_TTL)
            else:
                self.crl_cache.put(key, crl, until=naive_utc(next_update))
            return crl, None
        if urls and failure is None:
            failure = ("its revocation list is not published over http", False)
        return None, failure


def _parse_crl(data: bytes):
    """DER (RFC 5280 section 4.2.1.13), or PEM from a misconfigured server; ValueError if neither."""
    from asn1crypto import crl as asn1_crl, pem

    if pem.detect(data):
        _, _, data = pem.unarmor(data)
    crl = asn1_crl.CertificateList.load(data)
    try:
        crl["tbs_cert_list"]["this_update"].native  # noqa: B018 - forces the parse, so garbage fails here
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError("not a CRL") from exc
    return crl
