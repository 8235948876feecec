"""S/MIME sealing throughput: referdesk's seal_message against `openssl cms`, and end to end through SMTP.

    PYTHONPATH=. .venv/bin/python bench/bench_smime.py [--messages 200] [--kb 100]

Each message is a short text plus a C-CDA-like XML attachment of --kb KB, signed (RSA-2048, SHA-256) and
encrypted (AES-256-CBC, RSA-2048 key transport) to one recipient. openssl gets the same wrapped inner message
and does the same work as `openssl cms -sign | openssl cms -encrypt -aes256`, one process pair per message
(that is how a shell-script sender would use it); its startup cost is measured separately so the comparison
can be read both ways. End to end: seal, then send with aiosmtplib to an aiosmtpd server on 127.0.0.1 (plain
SMTP), over one reused connection and over one connection per message. Target: >= 50 messages/s end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from transports.direct.identity import Identity  # noqa: E402
from transports.direct.smime import Part, compose_message, open_message, seal_message  # noqa: E402
from transports.direct.mime import wrap_rfc822  # noqa: E402

SENDER, RECIPIENT = "referrals@direct.bench.example", "dr.bench@direct.partner.example"
DATE = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.timezone.utc)


def _certificate(subject: str, key, issuer_name: str, issuer_key, *, ca: bool = False, email: str | None = None):
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(dt.datetime(2025, 1, 1)).not_valid_after(dt.datetime(2035, 1, 1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if email:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path):
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]
    ca = _certificate("Bench Root", keys[0], "Bench Root", keys[0], ca=True)
    sender = _certificate("sender", keys[1], "Bench Root", keys[0], email=SENDER)
    recipient = _certificate("recipient", keys[2], "Bench Root", keys[0], email=RECIPIENT)
    for name, cert, key in (("sender", sender, keys[1]), ("recipient", recipient, keys[2])):
        (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
    return Identity(sender, keys[1], (ca,)), Identity(recipient, keys[2])


def ccda_like(number: int, size: int) -> bytes:
    head = (f'<?xml version="1.0" encoding="UTF-8"?>\n<ClinicalDocument xmlns="urn:hl7-org:v3">\n'
            f'<id root="2.16.840.1.113883.19.5" extension="bench-{number}"/>\n').encode()
    row = (f'<entry><observation classCode="OBS" moodCode="EVN"><code code="8480-6" codeSystem="2.16.840.1.'
           f'113883.6.1" displayName="Systolic blood pressure"/><value value="{120 + number % 30}" '
           f'unit="mm[Hg]"/></observation></entry>\n').encode()
    body = head + row * ((size - len(head)) // len(row) + 1)
    return body[:size - len(b"</ClinicalDocument>\n")] + b"</ClinicalDocument>\n"


def inputs(count: int, size: int) -> list[dict]:
    return [dict(sender=SENDER, recipients=[RECIPIENT], subject=f"Referral {i}",
                 text=f"Dear colleague,\nplease see the attached referral note ({i}) — thank you.\n",
                 attachments=[Part("referral.xml", "text/xml", ccda_like(i, size))],
                 message_id=f"bench.{i}@direct.bench.example", date=DATE) for i in range(count)]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_referdesk(messages, identity, recipient) -> tuple[float, float, list[bytes]]:
    sealed = []
    wall, cpu = time.perf_counter(), time.process_time()
    for arguments in messages:
        sealed.append(seal_message(**arguments, identity=identity, recipient_certs=[recipient.certificate]))
    return time.perf_counter() - wall, time.process_time() - cpu, sealed


def bench_openssl(messages, folder: Path) -> tuple[float, float, float]:
    files = []
    for i, arguments in enumerate(messages):
        path = folder / f"inner-{i}.eml"
        path.write_bytes(wrap_rfc822(compose_message(**arguments)))
        files.append(path)
    started = time.perf_counter()
    for _ in range(20):
        subprocess.run(["openssl", "version"], capture_output=True, check=True)
    startup = (time.perf_counter() - started) / 20
    wall, cpu = time.perf_counter(), children_cpu()
    for path in files:
        signer = subprocess.Popen(["openssl", "cms", "-sign", "-md", "sha256", "-in", str(path), "-signer",
                                   "sender.pem", "-inkey", "sender.key"], cwd=folder, stdout=subprocess.PIPE)
        encryptor = subprocess.Popen(["openssl", "cms", "-encrypt", "-aes256", "recipient.pem"], cwd=folder,
                                     stdin=signer.stdout, stdout=subprocess.PIPE)
        signer.stdout.close()
        output, _ = encryptor.communicate()
        if signer.wait() or encryptor.returncode or not output:
            raise SystemExit("openssl failed")
    return time.perf_counter() - wall, children_cpu() - cpu, startup


class _Counter:
    def __init__(self, count, size) -> None:
        self.count, self.size = count, size

    async def handle_DATA(self, server, session, envelope):
        with self.count.get_lock():
            self.count.value += 1
            self.size.value += len(envelope.content)
        return "250 OK"


def _serve(port: int, count, size, ready, stop) -> None:
    """The receiving server, in its own process like a real HISP (not competing for this process's GIL)."""
    from aiosmtpd.controller import Controller

    controller = Controller(_Counter(count, size), hostname="127.0.0.1", port=port, data_size_limit=64 << 20)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


async def _send_all(messages, identity, recipient, port: int, reuse: bool) -> None:
    import aiosmtplib

    client = None
    for arguments in messages:
        raw = seal_message(**arguments, identity=identity, recipient_certs=[recipient.certificate])
        if client is None:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, use_tls=False)
            await client.connect()
        await client.sendmail(SENDER, [RECIPIENT], raw)
        if not reuse:
            await client.quit()
            client = None
    if client is not None:
        await client.quit()


def bench_smtp(messages, identity, recipient, reuse: bool) -> tuple[float, float, int]:
    import multiprocessing
    import socket

    with socket.socket() as probe:  # a free loopback port (aiosmtpd's Controller cannot take port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    count, size = context.Value("q", 0), context.Value("q", 0)
    ready, stop = context.Event(), context.Event()
    server = context.Process(target=_serve, args=(port, count, size, ready, stop), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise SystemExit("the SMTP server did not start")
        wall, cpu = time.perf_counter(), time.process_time()
        asyncio.run(_send_all(messages, identity, recipient, port, reuse))
        elapsed, used = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        stop.set()
        server.join(10)
    if count.value != len(messages):
        raise SystemExit(f"the server received {count.value} of {len(messages)} messages")
    return elapsed, used, size.value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--kb", type=int, default=100)
    args = parser.parse_args()
    count = args.messages
    folder = Path(tempfile.mkdtemp(prefix="referdesk-bench-smime-"))
    identity, recipient = make_pki(folder)
    messages = inputs(count, args.kb * 1024)
    inner_size = len(compose_message(**messages[0]))
    print(f"{count} messages, inner message {inner_size / 1024:.0f} KB, RSA-2048 signer and recipient, "
          f"AES-256-CBC, {os.cpu_count()} CPUs")

    seal_message(**messages[0], identity=identity, recipient_certs=[recipient.certificate])  # warm-up
    wall, cpu, sealed = bench_referdesk(messages, identity, recipient)
    opened = open_message(sealed[0], [recipient])
    assert opened.encrypted and opened.signers[0].ok and opened.content == compose_message(**messages[0])
    print(f"referdesk seal_message (compose+sign+encrypt): {count / wall:7.1f} msg/s  "
          f"{wall / count * 1000:6.2f} ms wall, {cpu / count * 1000:6.2f} ms CPU per message; "
          f"sealed {len(sealed[0]) / 1024:.0f} KB")

    o_wall, o_cpu, startup = bench_openssl(messages, folder)
    print(f"openssl cms -sign | cms -encrypt:             {count / o_wall:7.1f} msg/s  "
          f"{o_wall / count * 1000:6.2f} ms wall, {o_cpu / count * 1000:6.2f} ms CPU per message "
          f"(2 processes; one `openssl version` process alone takes {startup * 1000:.1f} ms wall)")
    print(f"referdesk is {o_wall / wall:.1f}x openssl's rate by wall time, {o_cpu / cpu:.1f}x by CPU time; "
          f"openssl without its two process start-ups would take ~{(o_wall / count - 2 * startup) * 1000:.2f} ms "
          f"wall per message")

    for reuse in (True, False):
        e_wall, e_cpu, received = bench_smtp(messages, identity, recipient, reuse)
        label = "one connection reused" if reuse else "one connection per message"
        print(f"end to end (seal + aiosmtplib to aiosmtpd on 127.0.0.1 in another process), {label}: "
              f"{count / e_wall:6.1f} msg/s, {e_wall / count * 1000:.2f} ms wall and "
              f"{e_cpu / count * 1000:.2f} ms sender CPU per message; {received / count / 1024:.0f} KB received each")

if __name__ == "__main__":
    main()
