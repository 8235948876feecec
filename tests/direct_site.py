"""The Direct world the seeded address book lives in, for the TUI and command-line tests: a trust anchor, the
practice's own identity (.p12), and a certificate for each seeded Direct contact matching what the address
book says of it — valid and address-bound, expired, from an anchor nobody trusts, revoked (the CRL on a
loopback HTTP server), or none at all — published as DNS CERT records by a real DNS server on 127.0.0.1.

So the To: field's "Verifying Address…" runs the real discovery and trust checks against the seeded data.
Not a test module: conftest.py builds it once per session and serves it per test.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from direct_ca import der, make_ca, make_crl, make_leaf
from direct_pki import NOW, rsa_key, write_p12, write_pem
from loopback_dns import LoopbackDns
from loopback_http import LoopbackHttp

PRACTICE_ADDRESS = "referrals@direct.riverbend-family.example"
P12_PASSWORD = "test passphrase"
P12_PASSWORD_ENV = "REFERDESK_TEST_P12_PASSWORD"


def dns_name(address: str) -> str:
    local, domain = address.split("@", 1)
    return f"{local}.{domain}"


@dataclass
class DirectWorld:
    folder: Path
    http: LoopbackHttp
    anchors: Path  # a folder holding the trust anchor
    practice_p12: Path
    records: dict[str, bytes] = field(default_factory=dict)  # DNS name -> DER certificate
    domains: set[str] = field(default_factory=set)
    certificates: dict[str, x509.Certificate] = field(default_factory=dict)  # address -> certificate
    partner_key: object = None  # the private key behind every partner certificate (to play a partner)

    def serve(self) -> LoopbackDns:
        """A started DNS server publishing the world; the caller stops it."""
        dns = LoopbackDns()
        for domain in self.domains:
            dns.add_zone(domain)
        for name, cert in self.records.items():
            dns.add_cert(name, cert)
        return dns.start()


def _contacts(seeded_db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(f"file:{seeded_db}?mode=ro", uri=True) as connection:
        return connection.execute("SELECT direct_address, verification, verification_reason FROM contact "
                                  "WHERE direct_address != ''").fetchall()


def build_world(seeded_db: Path, folder: Path, http: LoopbackHttp) -> DirectWorld:
    root = make_ca("Referdesk Test Trust Anchor", key=rsa_key(slot="world-root"))
    stranger = make_ca("Unknown Test CA", key=rsa_key(slot="world-stranger"))
    crl_url = http.url("world-root.crl")
    anchors = folder / "anchors"
    anchors.mkdir()
    write_pem(anchors / "anchor.pem", root.cert)
    practice = make_leaf(root, emails=[PRACTICE_ADDRESS], key=rsa_key(slot="world-practice"), cn="practice",
                         crl_url=crl_url)
    world = DirectWorld(folder, http, anchors, write_p12(folder / "practice.p12", practice, P12_PASSWORD.encode()))
    world.certificates[PRACTICE_ADDRESS] = practice.cert
    world.records[dns_name(PRACTICE_ADDRESS)] = der(practice.cert)  # partners look the practice up too
    world.domains.add(PRACTICE_ADDRESS.split("@", 1)[1])
    revoked: dict[int, dt.datetime] = {}
    key = world.partner_key = rsa_key(slot="world-partner")  # one key for all: issuing is what is tested
    for address, state, reason in _contacts(seeded_db):
        world.domains.add(address.split("@", 1)[1])
        if state == "verified":
            leaf = make_leaf(root, emails=[address], key=key, crl_url=crl_url)
        elif "expired" in reason:
            leaf = make_leaf(root, emails=[address], key=key, crl_url=crl_url,
                             start=NOW - dt.timedelta(days=800), end=NOW - dt.timedelta(days=35))
        elif "not trusted" in reason:
            leaf = make_leaf(stranger, emails=[address], key=key)
        elif "revoked" in reason:
            leaf = make_leaf(root, emails=[address], key=key, crl_url=crl_url)
            revoked[leaf.cert.serial_number] = NOW - dt.timedelta(days=10)
        else:  # nothing published: not a Direct address as far as anyone can tell
            continue
        world.records[dns_name(address)] = der(leaf.cert)
        world.certificates[address] = leaf.cert
    http.put("world-root.crl", make_crl(root, revoked), "application/pkix-crl")
    return world


def config_text(world: DirectWorld, dns: LoopbackDns, *, smtp_port: int, in_app_worker: bool = False,
                extra: str = "") -> str:
    """[direct], [smtp] and [dns] for the world; the in-app worker is off unless a test sends for real."""
    return (f'[direct]\naddress = "{PRACTICE_ADDRESS}"\ncertificate = "{world.practice_p12}"\n'
            f'password_env = "{P12_PASSWORD_ENV}"\ntrust_anchors = "{world.anchors}"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\ntimeout = 5\n'
            f'[dns]\nnameservers = ["{dns.nameserver}"]\ntimeout = 0.5\nlifetime = 1.0\n'
            f'[worker]\nin_app = {"true" if in_app_worker else "false"}\npoll_seconds = 0.2\n{extra}')
