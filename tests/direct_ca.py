"""A test PKI for recipient discovery and trust, on top of direct_pki's keys and dates: CAs and end-entity
certificates carrying CRL distribution points and AIA caIssuers URLs that point at a loopback HTTP server,
and CRLs signed by those CAs. Also the fixtures the discovery and trust tests share (imported by name into
both modules). Not a test module.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from direct_pki import CA_END, CA_START, LEAF_END, LEAF_START, NOW, Issued, rsa_key
from loopback_dns import LoopbackDns
from loopback_http import LoopbackHttp
from transports.direct.recipient import Caches, DirectSettings

DOMAIN = "direct.example.org"
ADDRESS = f"ana@{DOMAIN}"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _urls(builder, crl_url, aia_url):
    if crl_url:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(crl_url)], None, None, None)]), critical=False)
    if aia_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            x509.AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(aia_url))]),
            critical=False)
    return builder


def _builder(subject: str, key, issuer: Issued | None, start, end, serial: int | None = None):
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(issuer.cert.subject if issuer else _name(subject))
               .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    return builder


def make_ca(cn: str, *, issuer: Issued | None = None, key=None, crl_url: str | None = None,
            aia_url: str | None = None, start=CA_START, end=CA_END) -> Issued:
    """A root (no issuer) or an intermediate; URLs are the ones in *this* certificate (its issuer's CRL and
    certificate)."""
    key = key or rsa_key(2048, slot=cn)
    builder = (_builder(cn, key, issuer, start, end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                              critical=True))
    builder = _urls(builder, crl_url, aia_url)
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


def make_leaf(ca: Issued, *, emails=(), dns=(), key=None, cn: str = "recipient", crl_url: str | None = None,
              aia_url: str | None = None, start=LEAF_START, end=LEAF_END, hash_algorithm=None,
              encrypt: bool = True) -> Issued:
    """`encrypt`: keyEncipherment for RSA, keyAgreement for EC, besides digitalSignature."""
    key = key or rsa_key()
    is_ec = isinstance(key, ec.EllipticCurvePrivateKey)
    names = [x509.RFC822Name(e) for e in emails] + [x509.DNSName(d) for d in dns]
    usage = x509.KeyUsage(True, False, encrypt and not is_ec, False, encrypt and is_ec, False, False, False, False)
    builder = (_builder(cn, key, ca, start, end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(usage, critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    builder = _urls(builder, crl_url, aia_url)
    return Issued(builder.sign(ca.key, hash_algorithm or hashes.SHA256()), key)


def make_crl(ca: Issued, revoked: dict[int, dt.datetime] | None = None, *, this_update: dt.datetime | None = None,
             next_update: dt.datetime | None = None) -> bytes:
    """A DER CRL signed by `ca`, listing serial -> revocation time."""
    this_update = this_update or NOW - dt.timedelta(days=1)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
               .last_update(this_update).next_update(next_update or NOW + dt.timedelta(days=7))
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                              critical=False)
               .add_extension(x509.CRLNumber(1), critical=False))
    for serial, when in (revoked or {}).items():
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass
class Pki:
    """The session's CAs, their CRLs and certificates published on the loopback HTTP server.

    root (the trust anchor) issues leaves directly and the intermediate; the intermediate's certificate is
    only available from its AIA URL; other_root is a CA nobody trusts."""

    http: LoopbackHttp
    root: Issued
    intermediate: Issued
    other_root: Issued
    revoked: dict[int, dt.datetime] = field(default_factory=dict)

    @property
    def root_crl_url(self) -> str:
        return self.http.url("root.crl")

    def publish_crls(self) -> None:
        self.http.put("root.crl", make_crl(self.root, self.revoked), "application/pkix-crl")
        self.http.put("intermediate.crl", make_crl(self.intermediate), "application/pkix-crl")

    def revoke(self, cert: x509.Certificate, when: dt.datetime = NOW - dt.timedelta(days=3)) -> None:
        self.revoked[cert.serial_number] = when
        self.publish_crls()

    def leaf(self, *, emails=(), dns=(), **kwargs) -> x509.Certificate:
        """A certificate from the root with the root's CRL distribution point."""
        kwargs.setdefault("crl_url", self.root_crl_url)
        return make_leaf(self.root, emails=emails, dns=dns, **kwargs).cert


# --- fixtures shared by test_direct_discovery and test_direct_trust ------------------------------------

@pytest.fixture(scope="session")
def http_server():
    with LoopbackHttp() as server:
        yield server


@pytest.fixture(scope="session")
def pki(http_server) -> Pki:
    root = make_ca("Referdesk Direct Test Root")
    intermediate = make_ca("Referdesk Direct Test Issuing CA", issuer=root, crl_url=http_server.url("root.crl"),
                           aia_url=http_server.url("root.cer"))
    http_server.put("root.cer", der(root.cert), "application/pkix-cert")
    http_server.put("intermediate.cer", der(intermediate.cert), "application/pkix-cert")
    pki = Pki(http_server, root, intermediate, make_ca("Somebody Else's Root"))
    pki.publish_crls()
    return pki


@pytest.fixture
def dns_server():
    with LoopbackDns() as server:
        server.add_zone("example.org")
        yield server


@pytest.fixture
def settings(dns_server, pki) -> DirectSettings:
    return DirectSettings(anchors=(pki.root.cert,), nameservers=(dns_server.nameserver,), dns_timeout=0.5,
                          dns_lifetime=1.0, fetch_timeout=2.0)


@pytest.fixture
def caches() -> Caches:
    return Caches()
