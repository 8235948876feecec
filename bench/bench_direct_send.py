"""Queued Direct referrals through the real outbox to a HISP on loopback: how many leave per second.

Each referral carries what `referdesk send` stores (encounter note, Referral Note C-CDA, XDM zip); the worker
claims it, re-verifies the recipient (DNS CERT on a loopback DNS server, trust, CRL; cached after the first),
signs and encrypts it (RSA-2048, AES-256-CBC) and hands it to an aiosmtpd HISP over STARTTLS (TLS 1.2+, the
certificate verified) running in another process, as a real HISP would. Needs the test extras (aiosmtpd,
dnslib) and the test helpers under tests/.

    PYTHONPATH=. .venv/bin/python bench/bench_direct_send.py [--referrals 300]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

PARTNER = "ruiz@cardio.example.org"


def _serve(port_queue, cert: str, key: str, stop) -> None:
    from aiosmtpd.smtp import SMTP

    from direct_pki import server_context

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        context = server_context(Path(cert), Path(key))
        server = await loop.create_server(lambda: SMTP(Sink(), hostname="hisp.bench", tls_context=context,
                                                       require_starttls=True), "127.0.0.1", 0)
        port_queue.put(server.sockets[0].getsockname()[1])
        while not stop.is_set():
            await asyncio.sleep(0.1)

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=300)
    args = parser.parse_args()

    from direct_ca import make_ca, make_crl, make_leaf
    from direct_pki import make_ca as tls_ca, make_leaf as tls_leaf, rsa_key, write_key, write_p12, write_pem
    from loopback_dns import LoopbackDns
    from loopback_http import LoopbackHttp
    from documents.packet import build_attachments
    from models import clock
    from models.config import load_config
    from models.db import close_database, open_database, sqlite_url
    from models.patients import Note, Patient
    from models.referring import ReferralDraft, create_referral
    from models.seed import seed
    from transports.outbox import OutboxWorker

    folder = Path(tempfile.mkdtemp(prefix="bench-direct-"))
    clock.freeze(None)
    http = LoopbackHttp().start()
    dns = LoopbackDns().start()
    root = make_ca("Bench Anchor", key=rsa_key(slot="bench-root"))
    practice = make_leaf(root, emails=["referrals@direct.riverbend-family.example"], key=rsa_key(slot="bench-p"),
                         crl_url=http.url("root.crl"))
    partner = make_leaf(root, emails=[PARTNER], key=rsa_key(slot="bench-partner"), crl_url=http.url("root.crl"))
    now = clock.now()
    http.put("root.crl", make_crl(root, this_update=now - dt.timedelta(days=1), next_update=now + dt.timedelta(days=7)),
             "application/pkix-crl")
    dns.add_zone("cardio.example.org")
    dns.add_cert("ruiz.cardio.example.org", partner.cert)
    (folder / "anchors").mkdir()
    write_pem(folder / "anchors" / "root.pem", root.cert)
    write_p12(folder / "practice.p12", practice, b"bench")
    ca = tls_ca("Bench HISP CA")
    leaf = tls_leaf(ca, dns=["localhost"], ips=["127.0.0.1"], cn="hisp", usage=None)
    cert, key = write_pem(folder / "hisp.pem", leaf.cert), write_key(folder / "hisp.key", leaf.key)
    write_pem(folder / "hisp-ca.pem", ca.cert)

    spawn = multiprocessing.get_context("spawn")
    ports, stop = spawn.Queue(), spawn.Event()
    server = spawn.Process(target=_serve, args=(ports, str(cert), str(key), stop), daemon=True)
    server.start()
    port = ports.get(timeout=30)

    (folder / "config.toml").write_text(
        f'[direct]\naddress = "referrals@direct.riverbend-family.example"\n'
        f'certificate = "{folder / "practice.p12"}"\npassword_env = "BENCH_P12"\n'
        f'trust_anchors = "{folder / "anchors"}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nca_file = "{folder / "hisp-ca.pem"}"\n'
        f'[dns]\nnameservers = ["{dns.nameserver}"]\n')
    os.environ["BENCH_P12"] = "bench"
    config = load_config(folder / "config.toml", db_url=sqlite_url(folder / "referdesk.db"), env={})
    open_database(config.database_url)
    seed(200)
    notes = [n for n in Note.select().where(Note.signed_at.is_null(False)).limit(args.referrals)]
    started = time.perf_counter()
    sizes = []
    for i in range(args.referrals):
        note = notes[i % len(notes)]
        draft = ReferralDraft(patient_id=note.patient_id, note_id=note.id, channel="direct",
                              direction="transferring", recipient=PARTNER, recipient_name="Dr. Ana Ruiz",
                              reason="Cardiology evaluation")
        attachments = build_attachments(draft)
        sizes.append(sum(len(a.content) for a in attachments))
        create_referral(draft, attachments)
    queued = time.perf_counter() - started

    worker = OutboxWorker(config)
    started = time.perf_counter()
    if os.environ.get("BENCH_PROFILE"):
        import cProfile
        import pstats

        profile = cProfile.Profile()
        summary = profile.runcall(asyncio.run, worker.run_once())
        pstats.Stats(profile).sort_stats("tottime").print_stats(18)
    else:
        summary = asyncio.run(worker.run_once())
    elapsed = time.perf_counter() - started
    close_database()
    stop.set()
    server.join(5)
    dns.stop()
    http.stop()
    shutil.rmtree(folder, ignore_errors=True)

    print(f"referrals queued: {args.referrals} in {queued:.1f} s (building C-CDA + XDM each)")
    print(f"attachments per referral: median {statistics.median(sizes) / 1024:.0f} KB")
    print(*summary.details[:2], sep="\n")
    print(f"outbox: sent {summary.sent}, retried {summary.retried}, failed {summary.failed} in {elapsed:.2f} s")
    print(f"rate: {summary.sent / elapsed:.1f} referrals/s (claim, verify, sign + encrypt, STARTTLS SMTP, record)")


if __name__ == "__main__":
    main()
