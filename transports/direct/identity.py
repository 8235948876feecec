"""The practice's own Direct identity: its PKCS#12 (certificate + key), trust anchors, and the checks that
catch a bad set-up before the first referral fails at a partner's HISP (STANDARDS.md, "Certificates").

Every check returns a Finding in words for the user; nothing here logs or keeps the passphrase.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from models.addresses import AddressError, check_direct_address

Level = Literal["ok", "error", "warning"]
ALLOWED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
WEAK_HASHES = {"md5": "MD5", "sha1": "SHA-1"}
MAX_CHAIN = 8
_SHA256 = hashes.SHA256()


class DirectSetupError(Exception):
    """Why a set-up file cannot be used, in words for the user."""


@dataclass(frozen=True)
class Finding:
    level: Level
    message: str


@dataclass(frozen=True)
class Identity:
    certificate: x509.Certificate
    private_key: object
    extra_certs: tuple[x509.Certificate, ...] = ()


# --- loading -------------------------------------------------------------------------------------------

def _looks_like_pkcs12(data: bytes) -> bool:
    """A DER PFX starts SEQUENCE { INTEGER 3, ... }: tells 'wrong passphrase' from 'not a PKCS#12 at all'."""
    if len(data) < 8 or data[0] != 0x30:
        return False
    first = data[1]
    offset = 2 + (first & 0x7F if first & 0x80 else 0)
    return data[offset:offset + 3] == b"\x02\x01\x03"


def _public_der(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_identity(p12_path: str | Path, password: bytes | None) -> Identity:
    """Read certificate, private key and any intermediates from a PKCS#12 file; DirectSetupError says why not."""
    path = Path(p12_path).expanduser()
    if not path.exists():
        raise DirectSetupError(f"{p12_path}: file not found")
    if path.is_dir():
        raise DirectSetupError(f"{p12_path}: is a folder; choose the .p12 (PKCS#12) file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DirectSetupError(f"{p12_path}: cannot read the file: {exc.strerror}") from exc
    if not _looks_like_pkcs12(data):
        hint = " (it is a PEM text file; export certificate and key together as .p12)" if b"-----BEGIN" in data else ""
        raise DirectSetupError(f"{p12_path}: not a PKCS#12 (.p12/.pfx) file{hint}")
    try:
        bundle = pkcs12.load_pkcs12(data, password or None)
    except (ValueError, UnsupportedAlgorithm) as exc:
        if password:
            raise DirectSetupError(f"{p12_path}: wrong passphrase (the file could not be decrypted with it)") from exc
        raise DirectSetupError(f"{p12_path}: the file is protected by a passphrase; none was given") from exc
    key = bundle.key
    extras = [c.certificate for c in bundle.additional_certs]
    if key is None:
        raise DirectSetupError(f"{p12_path}: contains no private key (export it with the key included)")
    cert = bundle.cert.certificate if bundle.cert else None
    if cert is None:
        # Some exporters drop the key↔certificate link: take the certificate whose public key is this key's.
        mine = [c for c in extras if _public_der(c.public_key()) == _public_der(key.public_key())]
        if not mine:
            raise DirectSetupError(f"{p12_path}: contains no certificate for its private key")
        cert = mine[0]
        extras.remove(cert)
    return Identity(certificate=cert, private_key=key, extra_certs=tuple(extras))


# --- checking the identity -----------------------------------------------------------------------------

def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _day(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d")


def check_address(text: str) -> Finding:
    """The address's form only (models.addresses); whether partners can find its certificate is DNS's business."""
    try:
        address = check_direct_address(text)
    except AddressError as exc:
        return Finding("error", f"Direct address {text.strip()!r} is {exc}")
    return Finding("ok", f"Direct address {address} is well formed")


def _check_key_match(identity: Identity) -> Finding:
    if _public_der(identity.private_key.public_key()) == _public_der(identity.certificate.public_key()):
        return Finding("ok", "The private key matches the certificate")
    return Finding("error", "The private key does not belong to this certificate: export the matching pair")


def _check_validity(cert: x509.Certificate, now: dt.datetime) -> Finding:
    start, end, now = cert.not_valid_before_utc, cert.not_valid_after_utc, _utc(now)
    span = f"valid {_day(start)} to {_day(end)}"
    if now < start:
        return Finding("error", f"Certificate is not yet valid: {span}")
    if now > end:
        return Finding("error", f"Certificate expired on {_day(end)} ({span})")
    days = (end - now).days
    if days < 30:
        return Finding("warning", f"Certificate expires in {days} days, on {_day(end)}: order its renewal")
    return Finding("ok", f"Certificate is valid now ({span})")


def _san_names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.RFC822Name), san.get_values_for_type(x509.DNSName)


def _check_binding(cert: x509.Certificate, address: str) -> Finding:
    try:
        address = check_direct_address(address)
    except AddressError as exc:
        return Finding("error", f"Cannot check the certificate's address: {exc}")
    domain = address.split("@")[1]
    emails, dns_names = _san_names(cert)
    if any(email.strip().lower() == address.lower() for email in emails):
        return Finding("ok", f"Address-bound certificate: its subjectAltName email is {address}")
    if any(name.strip().lower().rstrip(".") == domain for name in dns_names):
        return Finding("ok", f"Domain-bound certificate: its subjectAltName DNS name is {domain}")
    if not emails and not dns_names:
        return Finding("error", f"Certificate has no subjectAltName email or DNS name; Direct requires one "
                                f"equal to {address} or {domain}")
    found = ", ".join([f"email {e}" for e in emails] + [f"DNS {d}" for d in dns_names])
    wildcard = " (wildcards are not allowed in Direct)" if any(d.startswith("*") for d in dns_names) else ""
    return Finding("error", f"Certificate is not bound to {address}: it names {found}{wildcard}")


def _check_key_strength(cert: x509.Certificate) -> Finding:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size >= 2048:
            return Finding("ok", f"RSA {key.key_size}-bit key")
        return Finding("error", f"RSA {key.key_size}-bit key is too weak: Direct requires at least 2048 bits")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name in ALLOWED_CURVES:
            return Finding("ok", f"EC {ALLOWED_CURVES[key.curve.name]} key")
        return Finding("error", f"EC curve {key.curve.name} is not accepted: use P-256 or P-384")
    return Finding("error", f"{type(key).__name__.removesuffix('PublicKey') or 'This'} keys are not used in "
                            "Direct: use RSA (2048 bits or more) or EC P-256/P-384")


def _check_signature_hash(cert: x509.Certificate) -> Finding:
    algorithm = cert.signature_hash_algorithm
    name = algorithm.name if algorithm else "none"
    if name in WEAK_HASHES:
        return Finding("error", f"Certificate is signed with {WEAK_HASHES[name]}, which partners reject: "
                                "ask the issuer for a SHA-256 certificate")
    return Finding("ok", f"Certificate signature uses {name.upper()}")


def _check_key_usage(cert: x509.Certificate) -> Finding:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return Finding("ok", "No key usage restriction: signing and encryption allowed")
    is_ec = isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    needed = {"digitalSignature (signing)": usage.digital_signature}
    if is_ec:
        needed["keyAgreement (decryption)"] = usage.key_agreement
    else:
        needed["keyEncipherment (decryption)"] = usage.key_encipherment
    missing = [name for name, present in needed.items() if not present]
    if missing:
        return Finding("warning", "Key usage lacks " + " and ".join(missing) +
                       ": one certificate cannot both sign and receive; a second certificate is needed")
    return Finding("ok", "Key usage allows signing and decryption")


def check_identity(identity: Identity, address: str, *, now: dt.datetime) -> list[Finding]:
    """Everything a partner's HISP will check about our certificate, in a fixed order, one Finding each."""
    cert = identity.certificate
    return [
        _check_key_match(identity),
        _check_validity(cert, now),
        _check_binding(cert, address),
        _check_key_strength(cert),
        _check_signature_hash(cert),
        _check_key_usage(cert),
    ]


# --- trust anchors -------------------------------------------------------------------------------------

def _certificates_in(data: bytes, name: str) -> list[x509.Certificate]:
    """Certificates in one file: PEM (one or more), DER, or a PKCS#7 bundle in PEM or DER."""
    pem = b"-----BEGIN" in data
    loaders = ([pkcs7.load_pem_pkcs7_certificates, x509.load_pem_x509_certificates] if pem
               else [pkcs7.load_der_pkcs7_certificates, lambda d: [x509.load_der_x509_certificate(d)]])
    if name.lower().endswith((".pem", ".crt", ".cer", ".der")):
        loaders.reverse()
    for loader in loaders:
        try:
            with warnings.catch_warnings():
                # Bundles made by `openssl crl2pkcs7` (and many CAs) are BER, not strict DER: accepted on purpose.
                warnings.simplefilter("ignore", UserWarning)
                certs = loader(data)
        except (ValueError, UnsupportedAlgorithm):
            continue
        if certs:
            return list(certs)
    raise DirectSetupError(f"{name}: not a certificate or certificate bundle (expected PEM, DER or .p7b)")


def load_trust_anchors(path: str | Path) -> list[x509.Certificate]:
    """Anchors from a folder of PEM/DER files or one .p7b/.p7c bundle; every file must be readable."""
    source = Path(path).expanduser()
    if not source.exists():
        raise DirectSetupError(f"{path}: no such file or folder")
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DirectSetupError(f"{path}: the folder holds no certificate files")
    else:
        files = [source]
    anchors: list[x509.Certificate] = []
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise DirectSetupError(f"{file}: cannot read the file: {exc.strerror}") from exc
        label = str(file) if source.is_dir() else str(path)
        anchors.extend(_certificates_in(data, label))
    if not anchors:
        raise DirectSetupError(f"{path}: holds no certificates")
    return anchors


def _label(name: x509.Name) -> str:
    """The common name people recognise, else the full distinguished name."""
    cns = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return f"“{cns[0].value}”" if cns else (name.rfc4514_string() or "(no name)")


def _name(cert: x509.Certificate) -> str:
    return _label(cert.subject)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Name match and signature verified with the issuer's key."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass  # SHA-1 signatures: cryptography no longer verifies them this way; older anchors still use them
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, cert.signature_algorithm_parameters,
                       cert.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, cert.signature_algorithm_parameters)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def check_chain(identity: Identity, anchors: list[x509.Certificate], *, now: dt.datetime | None = None) -> Finding:
    """Does our certificate chain, through the PKCS#12's intermediates, to one of the anchors (signatures
    verified at every step)? Partners trust us only through the same anchors, so this catches a wrong bundle."""
    anchor_der = {a.fingerprint(_SHA256) for a in anchors}
    current, hops = identity.certificate, 0
    seen = set()
    while hops <= MAX_CHAIN:
        if current.fingerprint(_SHA256) in anchor_der:
            return _anchor_finding(current, hops, now, itself=hops == 0)
        for anchor in anchors:
            if anchor.subject == current.issuer and _issued_by(current, anchor):
                return _anchor_finding(anchor, hops, now)
        seen.add(current.fingerprint(_SHA256))
        step = [c for c in identity.extra_certs
                if c.subject == current.issuer and c.fingerprint(_SHA256) not in seen and _issued_by(current, c)]
        if not step:
            break
        current, hops = step[0], hops + 1
    issuer = _label(current.issuer)
    if any(a.subject == current.issuer for a in anchors):
        return Finding("error", f"Certificate does not chain to the trust anchors: an anchor is named {issuer} "
                                "but its key did not sign the certificate (a different CA with the same name)")
    via = f" (via {hops} intermediate{'s' * (hops != 1)} in the .p12)" if hops else ""
    return Finding("error", f"Certificate does not chain to any of the {len(anchors)} trust anchors{via}: "
                            f"its issuer {issuer} is not among them")


def _anchor_finding(anchor: x509.Certificate, hops: int, now: dt.datetime | None, itself: bool = False) -> Finding:
    if now is not None and not (anchor.not_valid_before_utc <= _utc(now) <= anchor.not_valid_after_utc):
        return Finding("error", f"Trust anchor {_name(anchor)} is outside its validity "
                                f"({_day(anchor.not_valid_before_utc)} to {_day(anchor.not_valid_after_utc)})")
    if itself:
        return Finding("ok", f"Certificate is itself one of the trust anchors ({_name(anchor)})")
    via = f" via {hops} intermediate{'s' * (hops != 1)}" if hops else ""
    return Finding("ok", f"Certificate chains to trust anchor {_name(anchor)}{via}")



def describe_certificate(cert: x509.Certificate) -> str:
    """One line naming what the certificate is for, so the user sees at once whether it is the right file."""
    emails, dns_names = _san_names(cert)
    bound = (f"{emails[0]} (address-bound)" if emails else f"{dns_names[0]} (domain-bound)" if dns_names
             else _name(cert))
    span = f"valid {_day(cert.not_valid_before_utc)} to {_day(cert.not_valid_after_utc)}"
    return f"certificate for {bound}, {span}, issued by {_label(cert.issuer)}"


def describe_anchors(anchors: list[x509.Certificate], shown: int = 3) -> str:
    names = ", ".join(_name(a) for a in anchors[:shown])
    more = f" and {len(anchors) - shown} more" if len(anchors) > shown else ""
    return f"{len(anchors)} trust anchor{'s' * (len(anchors) != 1)}: {names}{more}"
