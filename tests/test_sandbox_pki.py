"""The sandbox's PKI, DNS and CRL servers against referdesk's real recipient check: real loopback sockets,
dnspython on the client side, nothing mocked. The clock is frozen (conftest), so the certificates are issued
around the frozen "now" and judged at it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import socket
import stat
import threading
import urllib.error
import urllib.request
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from models import clock
from transports.direct.identity import check_chain, check_identity, load_identity, load_trust_anchors
from transports.direct.recipient import Caches, DirectSettings, check_recipient
from transports.direct.trust import crl_urls
from transports.sandbox.crl_server import DemoCrlServer
from transports.sandbox.dns_server import DemoDns
from transports.sandbox.pki import ANCHOR_NAME, DemoPki, Party

PRACTICE = Party("referrals@direct.riverbend-family.example", "Riverbend Family Medicine", "Riverbend Family")
PARTNERS = [Party("ruiz@direct.valley-cardio.example", "Dr. Elena Ruiz", "Valley Cardiology"),
            Party("intake@direct.lakeside-ortho.example", "Lakeside Intake", "Lakeside Orthopedics")]
INVALID = {"expired": "expired@direct.old-clinic.example", "revoked": "revoked@direct.closed-clinic.example",
           "untrusted": "someone@direct.untrusted-hisp.example", "not-direct": "frontdesk@not-direct.example"}
PASSPHRASE = b"demo passphrase"
EXPECTED = {PRACTICE.address: "verified", PARTNERS[0].address: "verified", PARTNERS[1].address: "verified",
            INVALID["expired"]: "expired", INVALID["revoked"]: "revoked", INVALID["untrusted"]: "untrusted",
            INVALID["not-direct"]: "no-certificate"}


def build(folder: Path, crl_url: str) -> DemoPki:
    return DemoPki.load_or_create(folder, crl_url=crl_url, practice=PRACTICE, partners=PARTNERS, invalid=INVALID,
                                  passphrase=PASSPHRASE)


@pytest.fixture(scope="session")
def made_keys(tmp_path_factory) -> Path:
    """Keys are generated once per session; each test copies them, so it pays only for re-issuing."""
    folder = tmp_path_factory.mktemp("sandbox-keys") / "pki"
    build(folder, "http://127.0.0.1:9/anchor.crl")
    return folder / "keys"


class Sandbox:
    def __init__(self, pki: DemoPki, crl: DemoCrlServer, dns_server: DemoDns) -> None:
        self.pki, self.crl, self.dns = pki, crl, dns_server

    def settings(self) -> DirectSettings:
        return DirectSettings(trust_anchors=str(self.pki.anchors_dir), nameservers=(self.dns.nameserver,),
                              dns_timeout=1.0, dns_lifetime=3.0, fetch_timeout=2.0)

    async def check(self, address: str):
        """check_recipient blocks (and runs its own event loop for pyhanko): in a thread, so the servers on this
        loop can answer it."""
        return await asyncio.to_thread(check_recipient, address, self.settings(), caches=Caches())


@pytest.fixture
async def sandbox(made_keys, tmp_path):
    folder = tmp_path / "pki"
    folder.mkdir()
    shutil.copytree(made_keys, folder / "keys")
    holder: dict[str, DemoPki] = {}
    crl = DemoCrlServer(lambda: holder["pki"].crl_der())
    await crl.start()
    pki = holder["pki"] = build(folder, crl.url_for("anchor.crl"))
    dns_server = DemoDns(pki.records, pki.zones)
    await dns_server.start()
    yield Sandbox(pki, crl, dns_server)
    await dns_server.stop()
    await crl.stop()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# --- the verdicts the demo promises ---------------------------------------------------------------------

@pytest.mark.parametrize("address", list(EXPECTED))
async def test_each_demo_address_gets_its_verdict(sandbox, address):
    verdict = await sandbox.check(address)
    assert verdict.state == EXPECTED[address], verdict.reason
    if verdict.state == "verified":
        assert (verdict.binding, verdict.source, verdict.issuer) == ("address", "dns", ANCHOR_NAME)
        assert verdict.certificates == (sandbox.pki.certificates[address],)


async def test_revocation_comes_from_the_crl_server(sandbox):
    """The CRL is really fetched: with its server stopped, a good certificate cannot be checked (hard-fail)."""
    await sandbox.crl.stop()
    verdict = await sandbox.check(PARTNERS[0].address)
    assert verdict.state == "dns-error" and "revocation" in verdict.reason


# --- the files ------------------------------------------------------------------------------------------

def test_practice_p12_passes_referdesks_identity_checks(tmp_path, made_keys):
    shutil.copytree(made_keys, tmp_path / "keys")
    pki = build(tmp_path, "http://127.0.0.1:9/anchor.crl")
    identity = load_identity(pki.practice_p12, PASSPHRASE)
    findings = check_identity(identity, PRACTICE.address, now=clock.now())
    assert [f.level for f in findings] == ["ok"] * len(findings), findings
    anchors = load_trust_anchors(pki.anchors_dir)
    assert anchors == [pki.anchor] and identity.extra_certs == (pki.anchor,)
    assert check_chain(identity, anchors, now=clock.now()).level == "ok"
    assert identity.certificate.subject.rfc4514_string() == "O=Riverbend Family,CN=Riverbend Family Medicine"
    for party in PARTNERS:
        partner = load_identity(pki.partner_p12(party.address), PASSPHRASE)
        assert pki.partner_p12s[party.address].name == f"{party.address}.p12"
        assert [f.level for f in check_identity(partner, party.address, now=clock.now())] == ["ok"] * 6
    assert sorted(p.name for p in pki.anchors_dir.iterdir()) == ["anchor.pem"]


def test_records_and_zones(tmp_path, made_keys):
    shutil.copytree(made_keys, tmp_path / "keys")
    pki = build(tmp_path, "http://127.0.0.1:9/anchor.crl")
    published = {address for address, state in EXPECTED.items() if state != "no-certificate"}
    assert set(pki.records) == {a.replace("@", ".") for a in published}
    assert pki.zones == {a.split("@")[1] for a in EXPECTED}
    assert INVALID["not-direct"] not in pki.certificates
    expired = pki.certificates[INVALID["expired"]]
    assert expired.not_valid_after_utc.replace(tzinfo=None) == clock.now() - dt.timedelta(days=30)


def test_keys_are_made_once_and_certificates_reissued(tmp_path):
    folder = tmp_path / "pki"
    first = build(folder, "http://127.0.0.1:1111/anchor.crl")
    keys = folder / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    files = sorted(keys.iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    for path in [first.practice_p12, first.tls_key, *first.partner_p12s.values()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = {f.name: f.read_bytes() for f in files}

    second = build(folder, "http://127.0.0.1:2222/anchor.crl")
    assert {f.name: f.read_bytes() for f in sorted(keys.iterdir())} == before

    def public(cert: x509.Certificate) -> bytes:
        return cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)

    assert public(second.anchor) == public(first.anchor) and second.anchor.subject == first.anchor.subject
    for address, cert in second.certificates.items():
        assert public(cert) == public(first.certificates[address])
        assert cert.serial_number != first.certificates[address].serial_number
    leaves = [second.certificates[a] for a in (PRACTICE.address, *(p.address for p in PARTNERS),
                                               INVALID["expired"], INVALID["revoked"])]
    assert all(crl_urls(c) == ["http://127.0.0.1:2222/anchor.crl"] for c in leaves)
    assert crl_urls(second.certificates[INVALID["untrusted"]]) == []
    reloaded = load_identity(second.practice_p12, PASSPHRASE)
    assert reloaded.certificate == second.certificates[PRACTICE.address]


def test_an_unreadable_key_file_is_replaced(tmp_path, made_keys):
    shutil.copytree(made_keys, tmp_path / "keys")
    (tmp_path / "keys" / "practice.pem").write_bytes(b"not a key")
    pki = build(tmp_path, "http://127.0.0.1:9/anchor.crl")
    assert load_identity(pki.practice_p12, PASSPHRASE).certificate == pki.certificates[PRACTICE.address]
    assert b"PRIVATE KEY" in (tmp_path / "keys" / "practice.pem").read_bytes()


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        DemoPki.load_or_create(tmp_path, crl_url="http://x/", practice=PRACTICE, partners=[],
                               invalid={"weird": "a@b.example"}, passphrase=PASSPHRASE)
    with pytest.raises(ValueError, match="passphrase"):
        DemoPki.load_or_create(tmp_path, crl_url="http://x/", practice=PRACTICE, partners=[], invalid={},
                               passphrase=b"")
    assert not (tmp_path / "keys").exists()


def test_tls_certificate_works_for_a_loopback_server(tmp_path, made_keys):
    """Checked by OpenSSL against the real clock, whatever models.clock says."""
    import ssl

    shutil.copytree(made_keys, tmp_path / "keys")
    pki = build(tmp_path, "http://127.0.0.1:9/anchor.crl")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pki.tls_cert, pki.tls_key)
    client_context = ssl.create_default_context(cafile=str(pki.tls_ca))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            connection, _ = listener.accept()
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        for host in ("localhost", "127.0.0.1"):  # both names the sandbox's SMTP clients may use
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with client_context.wrap_socket(raw, server_hostname=host) as tls:
                    assert tls.recv(2) == b"ok"
    finally:
        thread.join(5)
        listener.close()


# --- DNS ------------------------------------------------------------------------------------------------

def ask(server: DemoDns, name: str, rdtype: str, *, tcp: bool = False, payload: int | None = None):
    query = dns.message.make_query(name, rdtype, use_edns=payload is not None, payload=payload or 512)
    if tcp:
        return dns.query.tcp(query, "127.0.0.1", port=server.port, timeout=2)
    return dns.query.udp(query, "127.0.0.1", port=server.port, timeout=2, ignore_trailing=True)


async def test_dns_answers(sandbox):
    server = sandbox.dns
    name = "ruiz.direct.valley-cardio.example"
    answer = await asyncio.to_thread(ask, server, name, "CERT", payload=1232)
    assert answer.rcode() == dns.rcode.NOERROR and answer.flags & dns.flags.AA
    (rdata,) = answer.answer[0]
    assert (rdata.certificate_type, rdata.key_tag, rdata.algorithm) == (1, 0, 0)
    assert rdata.certificate == der(sandbox.pki.certificates["ruiz@direct.valley-cardio.example"])
    # Case does not matter in DNS.
    upper = await asyncio.to_thread(ask, server, name.upper(), "CERT", tcp=True)
    assert upper.answer[0][0].certificate == rdata.certificate

    nodata = await asyncio.to_thread(ask, server, "direct.valley-cardio.example", "CERT")
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA and nodata.authority[0].ttl == server.negative_ttl
    for missing, rdtype in (("_ldap._tcp.direct.valley-cardio.example", "SRV"),
                            ("frontdesk.not-direct.example", "CERT")):
        reply = await asyncio.to_thread(ask, server, missing, rdtype)
        assert reply.rcode() == dns.rcode.NXDOMAIN and reply.flags & dns.flags.AA and reply.authority
    outside = await asyncio.to_thread(ask, server, "ana.example.org", "CERT")
    assert outside.rcode() == dns.rcode.NXDOMAIN and not outside.flags & dns.flags.AA


async def test_records_change_at_run_time(sandbox):
    server, address = sandbox.dns, PARTNERS[1].address
    server.remove_record("intake.direct.lakeside-ortho.example")
    assert (await sandbox.check(address)).state == "no-certificate"
    server.set_record("intake.direct.lakeside-ortho.example", der(sandbox.pki.certificates[address]))
    assert (await sandbox.check(address)).state == "verified"
    with pytest.raises(ValueError):
        server.set_record("ana.example.org", b"x")


async def test_garbage_does_not_stop_the_dns_server(sandbox):
    server = sandbox.dns
    query = dns.message.make_query("ruiz.direct.valley-cardio.example", "CERT").to_wire()
    response_bit = query[:2] + bytes([query[2] | 0x80]) + query[3:]
    packets = [b"", b"\x00", os.urandom(11), os.urandom(12), os.urandom(600), b"\xff" * 512, query[:15],
               response_bit, query + b"\x00" * 3000]

    def spray() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for packet in packets:
                udp.sendto(packet, ("127.0.0.1", server.port))
        for packet in packets:  # over TCP too: a bad length, a short message, garbage
            with socket.create_connection(("127.0.0.1", server.port), timeout=2) as tcp:
                tcp.sendall(len(packet).to_bytes(2, "big") + packet if len(packet) < 65536 else packet)
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as tcp:
            tcp.sendall(b"\x05")  # half a length, then hang up

    await asyncio.to_thread(spray)
    assert (await sandbox.check(PARTNERS[0].address)).state == "verified"


async def test_large_certificate_truncates_over_udp_and_comes_over_tcp(sandbox):
    """Larger than discovery's 1232-byte EDNS payload: the UDP answer is truncated (TC), discovery retries over
    TCP, and the certificate still verifies."""
    pki, address = sandbox.pki, "big@direct.valley-cardio.example"
    anchor_key = serialization.load_pem_private_key((pki.folder / "keys" / "anchor.pem").read_bytes(), None)
    leaf_key = serialization.load_pem_private_key((pki.folder / "keys" / "invalid.pem").read_bytes(), None)
    now = clock.now()
    names = [x509.RFC822Name(address)] + [x509.DNSName(f"host{i}.direct.valley-cardio.example") for i in range(40)]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "big")]))
            .issuer_name(pki.anchor.subject).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(pki.crl_url)], None, None, None)]), critical=False)
            .sign(anchor_key, hashes.SHA256()))
    assert len(der(cert)) > 1300
    sandbox.dns.set_record("big.direct.valley-cardio.example", der(cert))

    udp = await asyncio.to_thread(ask, sandbox.dns, "big.direct.valley-cardio.example", "CERT", payload=1232)
    assert udp.flags & dns.flags.TC and udp.answer == []
    plain = await asyncio.to_thread(ask, sandbox.dns, "ruiz.direct.valley-cardio.example", "CERT")
    assert plain.flags & dns.flags.TC  # no EDNS: 512 bytes, which no RSA certificate fits
    tcp = await asyncio.to_thread(ask, sandbox.dns, "big.direct.valley-cardio.example", "CERT", tcp=True)
    assert tcp.answer[0][0].certificate == der(cert)

    verdict = await sandbox.check(address)
    assert (verdict.state, verdict.certificate) == ("verified", cert), verdict.reason


async def test_dns_server_stops_cleanly(sandbox):
    server = sandbox.dns
    hold = socket.create_connection(("127.0.0.1", server.port), timeout=2)  # an idle TCP client
    await asyncio.sleep(0.05)
    port = server.port
    await asyncio.wait_for(server.stop(), 2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    hold.close()
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []  # no handler left behind


# --- CRL server -----------------------------------------------------------------------------------------

def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type"), exc.read()


async def test_crl_server_serves_the_current_crl(sandbox):
    status, content_type, body = await asyncio.to_thread(get, sandbox.crl.url_for("/anchor.crl"))
    assert (status, content_type) == (200, "application/pkix-crl")
    crl = x509.load_der_x509_crl(body)
    assert crl.is_signature_valid(sandbox.pki.anchor.public_key())
    assert crl.last_update_utc.replace(tzinfo=None) == clock.now()
    assert crl.next_update_utc.replace(tzinfo=None) - clock.now() == dt.timedelta(days=1)
    revoked = crl.get_revoked_certificate_by_serial_number(
        sandbox.pki.certificates[INVALID["revoked"]].serial_number)
    assert revoked is not None and len(crl) == 1
    assert (await asyncio.to_thread(get, sandbox.crl.url_for("/anchor.crl?x=1")))[0] == 200
    assert (await asyncio.to_thread(get, sandbox.crl.url_for("/other.crl")))[0] == 404

    def raw(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", sandbox.crl.port), timeout=2) as client:
            client.sendall(data)
            return client.recv(4096)

    assert (await asyncio.to_thread(raw, b"POST /anchor.crl HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 405")
    assert (await asyncio.to_thread(raw, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.0 400")
    head = await asyncio.to_thread(raw, b"HEAD /anchor.crl HTTP/1.0\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and head.endswith(b"\r\n\r\n")


async def test_crl_server_stops_cleanly(sandbox):
    crl = sandbox.crl
    hold = socket.create_connection(("127.0.0.1", crl.port), timeout=2)  # a client that never sends a request
    await asyncio.sleep(0.05)
    port = crl.port
    await asyncio.wait_for(crl.stop(), 2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    hold.close()
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    await crl.stop()  # twice is harmless
