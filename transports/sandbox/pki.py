"""The sandbox's certificates: a demo trust anchor, the practice's and each partner's address-bound Direct
certificate (with their .p12), the deliberately broken ones the demo shows off (expired, revoked, from a CA
outside the trust bundle), and a TLS certificate for the sandbox's SMTP servers.

Private keys are made once and kept in `keys/` (owner-only): RSA key generation is the only slow step. The
certificates are re-issued from those keys on every start, because the CRL URL inside them carries a port
chosen at each start, and because "now" (models.clock, which tests and demos freeze) moves.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from models import clock
from models.addresses import check_direct_address
from transports.direct.discovery import address_names

INVALID_KINDS = ("expired", "revoked", "untrusted", "not-direct")
ANCHOR_NAME = "referdesk demo trust anchor"
UNTRUSTED_NAME = "referdesk demo untrusted CA"
TLS_CA_NAME = "referdesk demo TLS CA"
_ORG = "referdesk demo"
_DAY = dt.timedelta(days=1)
_LEAF_LIFE = dt.timedelta(days=730)
_CA_BEFORE, _CA_LIFE = dt.timedelta(days=3 * 365), dt.timedelta(days=10 * 365)  # covers the expired leaf too
_SHA256 = hashes.SHA256()


@dataclass(frozen=True)
class Party:
    """A practice taking part in the demo: its Direct address and the names its certificate shows."""

    address: str
    display_name: str
    organization: str


@dataclass
class DemoPki:
    """Everything issued for one sandbox start. `records` maps the DNS owner name discovery asks for
    (`local.domain`) to the DER certificate published there; `zones` are the domains the sandbox's DNS is
    authoritative for (including the not-direct one, so it answers "nothing published" there, not an error)."""

    folder: Path
    crl_url: str
    anchor: x509.Certificate
    anchors_dir: Path
    practice_address: str
    practice_p12: Path
    partner_p12s: dict[str, Path]
    certificates: dict[str, x509.Certificate]  # address -> its certificate (practice, partners, invalid)
    records: dict[str, bytes]
    zones: set[str]
    tls_cert: Path
    tls_key: Path
    tls_ca: Path
    revoked_serial: int
    _anchor_key: rsa.RSAPrivateKey = field(repr=False)
    _revoked_at: dt.datetime = field(repr=False)

    @classmethod
    def load_or_create(cls, folder: Path, *, crl_url: str, practice: Party, partners: list[Party],
                       invalid: dict[str, str], passphrase: bytes) -> DemoPki:
        """Keys from `folder/keys` (made when missing or unreadable), certificates and files issued afresh.
        `invalid` maps "expired", "revoked", "untrusted", "not-direct" to an address each; not-direct gets no
        certificate. ValueError for a malformed address, an unknown kind or an empty passphrase."""
        if not passphrase:
            raise ValueError("the demo .p12 files need a passphrase")
        unknown = set(invalid) - set(INVALID_KINDS)
        if unknown:
            raise ValueError(f"unknown invalid-certificate kinds: {', '.join(sorted(unknown))}")
        practice = _checked(practice)
        partners = [_checked(p) for p in partners]
        invalid = {kind: check_direct_address(address) for kind, address in invalid.items()}
        folder = _private_dir(Path(folder))
        keys = _Keys(folder / "keys")
        wanted = {"anchor": "rsa", "untrusted-ca": "ec", "practice": "rsa", "invalid": "rsa", "tls-ca": "ec",
                  "tls-server": "ec"} | {_partner_key(p.address): "rsa" for p in partners}
        keys.load(wanted)
        return _Issuer(folder, keys, crl_url, passphrase).issue(practice, partners, invalid)

    def partner_p12(self, address: str) -> Path:
        """The partner's .p12 (KeyError for an address that is not a partner)."""
        return self.partner_p12s[check_direct_address(address)]

    def crl_der(self) -> bytes:
        """The anchor's CRL as of now (valid a day), listing the "revoked" certificate if there is one."""
        now = clock.now()
        number = max(1, int(now.replace(tzinfo=dt.timezone.utc).timestamp()))  # grows with time, as it must
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.anchor.subject)
                   .last_update(now).next_update(now + _DAY)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._anchor_key.public_key()),
                                  critical=False)
                   .add_extension(x509.CRLNumber(number), critical=False))
        if self.revoked_serial:
            entry = (x509.RevokedCertificateBuilder().serial_number(self.revoked_serial)
                     .revocation_date(min(self._revoked_at, now))
                     .add_extension(x509.CRLReason(x509.ReasonFlags.cessation_of_operation), critical=False).build())
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(self._anchor_key, _SHA256).public_bytes(serialization.Encoding.DER)


def _checked(party: Party) -> Party:
    return Party(check_direct_address(party.address), party.display_name, party.organization)


def _file_name(address: str) -> str:
    """The address as a file name: a local part may hold '/' or '%', which are escaped; others are kept."""
    return quote(address, safe="@.+-_=!#$&'*^`{|}~")


def _partner_key(address: str) -> str:
    return f"partner-{_file_name(address)}"


# --- files ---------------------------------------------------------------------------------------------

def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _temp_file(path: Path, data: bytes) -> Path:
    """An owner-only file next to `path`, created exclusively so no other user can have opened it first."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return temp


def _write(path: Path, data: bytes) -> Path:
    """Replace `path` whole (0600): a reader never sees half a file."""
    os.replace(_temp_file(path, data), path)
    return path


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _private_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# --- keys ----------------------------------------------------------------------------------------------

def _generate(kind: str):
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _fits(key, kind: str) -> bool:
    if kind == "ec":
        return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    return isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048


class _Keys:
    """The persisted private keys, by name. Loading skips OpenSSL's RSA consistency check (~40 ms a key, most
    of a restart): these are files we wrote into an owner-only folder, not keys from elsewhere."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.keys: dict[str, object] = {}

    def __getitem__(self, name: str):
        return self.keys[name]

    def load(self, wanted: dict[str, str]) -> None:
        _private_dir(self.folder)
        missing = {}
        for name, kind in wanted.items():
            key = self._read(name, kind)
            if key is None:
                missing[name] = kind
            else:
                self.keys[name] = key
        if not missing:
            return
        # Two workers: OpenSSL releases the GIL while it searches for primes (RSA is the slow part of a first
        # start, hence EC wherever the demo does not show the key: the untrusted CA and TLS).
        with ThreadPoolExecutor(max_workers=2) as pool:
            made = dict(zip(missing, pool.map(_generate, missing.values())))
        for name, key in made.items():
            self.keys[name] = self._store(name, missing[name], key)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def _read(self, name: str, kind: str):
        path = self._path(name)
        try:
            data = path.read_bytes()
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
        except OSError:
            return None
        try:
            key = serialization.load_pem_private_key(data, None, unsafe_skip_rsa_key_validation=True)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return None
        return key if _fits(key, kind) else None

    def _store(self, name: str, kind: str, key):
        """Publish a new key without overwriting one another process has just made: that one is used instead,
        so two sandboxes starting together agree on their keys. An unreadable file is replaced."""
        path = self._path(name)
        temp = _temp_file(path, _private_pem(key))
        try:
            os.link(temp, path)
        except FileExistsError:
            theirs = self._read(name, kind)
            if theirs is not None:
                return theirs
            os.replace(temp, path)
        except OSError:  # no hard links on this file system
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        return key


# --- certificates --------------------------------------------------------------------------------------

def _name(common_name: str, organization: str = _ORG) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization or _ORG)])


def _builder(subject: x509.Name, key, start: dt.datetime, end: dt.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))


def _ca(common_name: str, key, start: dt.datetime, end: dt.datetime) -> x509.Certificate:
    return (_builder(_name(common_name), key, start, end).issuer_name(_name(common_name))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, _SHA256))


def _issued(builder: x509.CertificateBuilder, ca: x509.Certificate, ca_key) -> x509.Certificate:
    return (builder.issuer_name(ca.subject)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, _SHA256))


def _direct_leaf(ca: x509.Certificate, ca_key, key, address: str, subject: x509.Name, start: dt.datetime,
                 end: dt.datetime, crl_url: str | None) -> x509.Certificate:
    """Address-bound, and one certificate for both signing and encryption (what identity.py expects)."""
    builder = (_builder(subject, key, start, end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                              critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
               .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False))
    if crl_url:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(crl_url)], None, None, None)]), critical=False)
    return _issued(builder, ca, ca_key)


def _tls_leaf(ca: x509.Certificate, ca_key, key, start: dt.datetime, end: dt.datetime) -> x509.Certificate:
    import ipaddress

    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    builder = (_builder(_name("localhost"), key, start, end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                              critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .add_extension(x509.SubjectAlternativeName(names), critical=True))
    return _issued(builder, ca, ca_key)


def _owner_name(address: str) -> str:
    """The name discovery asks first for this address (discovery.address_names), without the final dot."""
    return address_names(address)[0].to_text(omit_final_dot=True)


class _Issuer:
    """One round of issuing: every certificate and file for a start of the sandbox."""

    def __init__(self, folder: Path, keys: _Keys, crl_url: str, passphrase: bytes) -> None:
        self.folder, self.keys, self.crl_url, self.passphrase = folder, keys, crl_url, passphrase
        self.now = clock.now()
        self.start, self.end = self.now - _DAY, self.now + _LEAF_LIFE

    def issue(self, practice: Party, partners: list[Party], invalid: dict[str, str]) -> DemoPki:
        keys, now = self.keys, self.now
        anchor_key = keys["anchor"]
        anchor = _ca(ANCHOR_NAME, anchor_key, now - _CA_BEFORE, now + _CA_LIFE)
        certificates: dict[str, x509.Certificate] = {}

        def good(party: Party, key) -> x509.Certificate:
            cert = _direct_leaf(anchor, anchor_key, key, party.address,
                                _name(party.display_name or party.address, party.organization),
                                self.start, self.end, self.crl_url)
            certificates[party.address] = cert
            return cert

        practice_p12 = self._p12(self.folder / "practice.p12", practice, good(practice, keys["practice"]),
                                 keys["practice"], anchor)
        partner_dir = _private_dir(self.folder / "partners")
        partner_p12s = {}
        for party in partners:
            key = keys[_partner_key(party.address)]
            partner_p12s[party.address] = self._p12(partner_dir / f"{_file_name(party.address)}.p12", party,
                                                    good(party, key), key, anchor)
        revoked_serial, revoked_at = self._invalid(invalid, anchor, anchor_key, certificates)
        anchors_dir = self._anchors(anchor)
        tls_cert, tls_key, tls_ca = self._tls()
        records = {_owner_name(a): c.public_bytes(serialization.Encoding.DER) for a, c in certificates.items()}
        zones = {a.rsplit("@", 1)[1] for a in [practice.address, *(p.address for p in partners), *invalid.values()]}
        return DemoPki(self.folder, self.crl_url, anchor, anchors_dir, practice.address, practice_p12, partner_p12s,
                       certificates, records, zones, tls_cert, tls_key, tls_ca, revoked_serial, anchor_key,
                       revoked_at)

    def _invalid(self, invalid: dict[str, str], anchor, anchor_key, certificates) -> tuple[int, dt.datetime]:
        """The broken certificates share one key: what is wrong with them is how they were issued."""
        key, revoked_serial, revoked_at = self.keys["invalid"], 0, self.start
        if "expired" in invalid:
            address = invalid["expired"]
            end = self.now - dt.timedelta(days=30)
            certificates[address] = _direct_leaf(anchor, anchor_key, key, address, _name(address),
                                                 end - _LEAF_LIFE, end, self.crl_url)
        if "revoked" in invalid:
            address = invalid["revoked"]
            cert = _direct_leaf(anchor, anchor_key, key, address, _name(address), self.start, self.end,
                                self.crl_url)
            certificates[address] = cert
            revoked_serial, revoked_at = cert.serial_number, self.start + dt.timedelta(hours=1)
        if "untrusted" in invalid:
            address = invalid["untrusted"]
            ca_key = self.keys["untrusted-ca"]
            stranger = _ca(UNTRUSTED_NAME, ca_key, self.now - _CA_BEFORE, self.now + _CA_LIFE)
            certificates[address] = _direct_leaf(stranger, ca_key, key, address, _name(address), self.start,
                                                 self.end, None)
        return revoked_serial, revoked_at

    def _p12(self, path: Path, party: Party, cert: x509.Certificate, key, anchor: x509.Certificate) -> Path:
        data = pkcs12.serialize_key_and_certificates(party.address.encode(), key, cert, [anchor],
                                                     serialization.BestAvailableEncryption(self.passphrase))
        return _write(path, data)

    def _anchors(self, anchor: x509.Certificate) -> Path:
        """A folder holding the anchor only: anything else in it would be trusted too."""
        folder = _private_dir(self.folder / "anchors")
        for stale in folder.iterdir():
            if stale.name != "anchor.pem" and (stale.is_file() or stale.is_symlink()):
                stale.unlink()
        _write(folder / "anchor.pem", _pem(anchor))
        return folder

    def _tls(self) -> tuple[Path, Path, Path]:
        """TLS is checked by OpenSSL against the real clock, not models.clock: the validity covers both."""
        real = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
        start, end = min(real, self.now) - _DAY, max(real, self.now) + _LEAF_LIFE
        ca_key, key = self.keys["tls-ca"], self.keys["tls-server"]
        ca = _ca(TLS_CA_NAME, ca_key, start, end + _DAY)
        tls_dir = _private_dir(self.folder / "tls")
        return (_write(tls_dir / "server.pem", _pem(_tls_leaf(ca, ca_key, key, start, end))),
                _write(tls_dir / "server.key", _private_pem(key)),
                _write(tls_dir / "ca.pem", _pem(ca)))
