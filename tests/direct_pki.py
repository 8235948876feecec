"""Test helpers for the Direct set-up tests: a throwaway PKI (cryptography and the real `openssl` command) with
fixed dates around the frozen clock, and a real aiosmtpd server on 127.0.0.1 in its own thread.

Not a test module: imported by test_direct_identity, test_smtp_check and test_direct_setup.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import subprocess
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

NOW = dt.datetime(2026, 11, 2, 10, 0, 0)  # = conftest.FROZEN_NOW
CA_START, CA_END = dt.datetime(2025, 1, 1), dt.datetime(2035, 1, 1)
LEAF_START, LEAF_END = dt.datetime(2026, 1, 1), dt.datetime(2028, 1, 1)
ADDRESS = "referrals@direct.example.org"

_KEYS: dict[tuple, object] = {}


def rsa_key(bits: int = 2048, slot: object = 0):
    """Keys are slow to make: one per (size, slot) per session; tests that need a different key use a slot."""
    if ("rsa", bits, slot) not in _KEYS:
        _KEYS["rsa", bits, slot] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _KEYS["rsa", bits, slot]


def ec_key(curve=ec.SECP256R1):
    if ("ec", curve.name) not in _KEYS:
        _KEYS["ec", curve.name] = ec.generate_private_key(curve())
    return _KEYS["ec", curve.name]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Issued:
    cert: x509.Certificate
    key: object


def make_ca(cn: str = "Referdesk Test Root", *, key=None, start=CA_START, end=CA_END,
            issuer: Issued | None = None) -> Issued:
    key = key or rsa_key(2048, slot=cn)
    builder = (x509.CertificateBuilder().subject_name(_name(cn))
               .issuer_name(issuer.cert.subject if issuer else _name(cn))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                              critical=True))
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


def make_leaf(ca: Issued, *, emails=(), dns=(), ips=(), key=None, cn: str = "practice", start=LEAF_START,
              end=LEAF_END, usage: tuple[bool, bool] | None = (True, True), key_agreement: bool = False) -> Issued:
    """usage = (digitalSignature, keyEncipherment); None leaves the Key Usage extension out."""
    import ipaddress

    key = key or rsa_key()
    names = ([x509.RFC822Name(e) for e in emails] + [x509.DNSName(d) for d in dns]
             + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips])
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if usage is not None:
        builder = builder.add_extension(
            x509.KeyUsage(usage[0], False, usage[1], False, key_agreement, False, False, False, False),
            critical=True)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def write_pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def write_der(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return path


def write_key(path: Path, key) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def write_p12(path: Path, leaf: Issued, password: bytes | None, extra=()) -> Path:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    path.write_bytes(pkcs12.serialize_key_and_certificates(b"practice", leaf.key, leaf.cert, list(extra) or None,
                                                           encryption))
    return path


# --- the real openssl command -------------------------------------------------------------------------

_OPENSSL_CNF = """
[ ca ]
default_ca = test
[ test ]
dir = .
database = index.txt
new_certs_dir = newcerts
serial = serial
default_md = sha256
policy = anything
unique_subject = no
email_in_dn = no
[ anything ]
commonName = supplied
[ root ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""


def openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


class OpenSslCA:
    """A CA run by `openssl ca`, which (unlike `openssl x509 -req` in 3.0) takes fixed start and end dates."""

    def __init__(self, folder: Path, cn: str = "OpenSSL Test Root") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "newcerts").mkdir(exist_ok=True)
        (folder / "index.txt").write_text("")
        (folder / "serial").write_text("1000\n")
        (folder / "ca.cnf").write_text(_OPENSSL_CNF)
        openssl(folder, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-subj", f"/CN={cn}",
                "-out", "ca.csr")
        openssl(folder, "ca", "-config", "ca.cnf", "-batch", "-selfsign", "-keyfile", "ca.key", "-in", "ca.csr",
                "-out", "ca.pem", "-startdate", "20250101000000Z", "-enddate", "20350101000000Z",
                "-extensions", "root")
        self.cert_path = folder / "ca.pem"

    def issue(self, name: str, *, san: str, bits: int = 2048, md: str = "sha256",
              start: str = "20260101000000Z", end: str = "20280101000000Z") -> tuple[Path, Path]:
        """Certificate and key PEM files for `name`; san as openssl writes it, e.g. 'email:a@b.org'."""
        with (self.folder / "ca.cnf").open("a") as cnf:
            cnf.write(f"\n[ {name} ]\nbasicConstraints = CA:FALSE\n"
                      f"keyUsage = critical, digitalSignature, keyEncipherment\nsubjectAltName = {san}\n")
        openssl(self.folder, "req", "-new", "-newkey", f"rsa:{bits}", "-nodes", "-keyout", f"{name}.key",
                "-subj", f"/CN={name}", "-out", f"{name}.csr")
        openssl(self.folder, "ca", "-config", "ca.cnf", "-batch", "-cert", "ca.pem", "-keyfile", "ca.key",
                "-in", f"{name}.csr", "-out", f"{name}.pem", "-startdate", start, "-enddate", end,
                "-extensions", name, "-md", md)
        return self.folder / f"{name}.pem", self.folder / f"{name}.key"

    def p12(self, name: str, password: str, *, chain: bool = True) -> Path:
        out = self.folder / f"{name}.p12"
        extra = ["-certfile", "ca.pem"] if chain else []
        openssl(self.folder, "pkcs12", "-export", "-inkey", f"{name}.key", "-in", f"{name}.pem", *extra,
                "-passout", f"pass:{password}", "-out", out.name)
        return out

    def p7b(self, out: Path, *cert_paths: Path, der: bool = False) -> Path:
        args = [arg for path in cert_paths for arg in ("-certfile", str(path))]
        openssl(self.folder, "crl2pkcs7", "-nocrl", *args, *(["-outform", "DER"] if der else []),
                "-out", str(out))
        return out


# --- a real SMTP server on loopback ---------------------------------------------------------------------

class _Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def server_context(cert_pem: Path, key_pem: Path, *, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_pem, key_pem)
    if max_version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = max_version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this OpenSSL really offer TLS 1.0/1.1
    return context


class LoopbackSmtp:
    """aiosmtpd on 127.0.0.1, a free port chosen by the kernel, in its own thread and event loop (so the
    synchronous snapshot tests can use it as well as the async ones). STARTTLS when `tls_context` is given,
    implicit TLS when `ssl_context` is."""

    def __init__(self, *, tls_context: ssl.SSLContext | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.tls_context, self.ssl_context = tls_context, ssl_context
        self.port = 0

    def __enter__(self) -> "LoopbackSmtp":
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="loopback-smtp", daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _start(self):
        from aiosmtpd.smtp import SMTP

        class QuietSMTP(SMTP):
            def connection_lost(self, error):
                super().connection_lost(error)
                # A client that drops the connection on purpose (failed handshakes are what these tests are
                # about) leaves asyncio's closed-future holding the reset; mark it seen so it is not logged.
                closed = getattr(self, "_closed", None)
                if closed is not None and closed.done() and not closed.cancelled():
                    closed.exception()

        return await self.loop.create_server(
            lambda: QuietSMTP(_Sink(), hostname="hisp.test", tls_context=self.tls_context, require_starttls=False),
            "127.0.0.1", 0, ssl=self.ssl_context)

    async def _stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def closed_port() -> int:
    """A loopback port with nothing listening (the kernel just handed it out and it was closed again)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
