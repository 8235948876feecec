"""No PHI in logs: real flows with logging at DEBUG everywhere, and none of the patients involved — names,
dates of birth, MRNs, note text — shows up in what was logged or written to stderr.

* `referdesk worker --once` as its own process (REFERDESK_LOG_LEVEL=DEBUG, so peewee's query log and every
  library's debug lines are on) sending Direct referrals to a loopback HISP that refuses one recipient and
  accepts the other; afterwards no file in the data folder holds the practice's private key.
* In this process, with the command line's logging set up at DEBUG and the root logger captured: the
  inbound SMTP listener receiving a report that names the patient, and a fax the provider fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from conftest import FROZEN_NOW
from direct_pki import make_ca, make_leaf, server_context, write_key, write_pem
from direct_site import P12_PASSWORD, P12_PASSWORD_ENV, PRACTICE_ADDRESS
from loopback_smtp import RecordingSmtp
from models import redact
from models.db import close_database, open_database, sqlite_url

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phi-tls")
    ca = make_ca("PHI test TLS CA")
    leaf = make_leaf(ca, dns=["localhost"], ips=["127.0.0.1"], cn="hisp", usage=None)
    return {"ca": write_pem(folder / "ca.pem", ca.cert), "cert": write_pem(folder / "hisp.pem", leaf.cert),
            "key": write_key(folder / "hisp.key", leaf.key)}


@pytest.fixture(autouse=True)
def fresh_redaction():
    redact.forget_all()  # what earlier tests in this process made known must not help here
    yield


def phi_of(patient_ids: list[int]) -> list[str]:
    """The identifying strings of these patients, in the forms a log line could carry them."""
    from models.patients import Note, Patient

    values = []
    for patient in Patient.select().where(Patient.id.in_(patient_ids)):
        values += [f"{patient.first_name} {patient.last_name}", f"{patient.last_name}, {patient.first_name}",
                   patient.mrn, patient.birth_date.isoformat(), f"{patient.birth_date:%m/%d/%Y}",
                   f"{patient.birth_date:%Y%m%d}"]
        for note in Note.select().where(Note.patient == patient.id):
            for _, text in json.loads(note.sections_json):
                values += [line.strip() for line in str(text).splitlines() if len(line.strip()) >= 25][:3]
    return [v for v in values if v]


def leaked(text: str, values: list[str]) -> list[str]:
    lowered = text.lower()
    return [v for v in values if v.lower() in lowered]


def verified_contacts(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return [row[0] for row in connection.execute(
            "SELECT direct_address FROM contact WHERE verification = 'verified' AND direct_address != '' "
            "ORDER BY id LIMIT 2")]


def test_the_worker_process_logs_no_phi_at_debug_and_leaves_no_private_key_on_disk(
        seeded_template, direct_world, direct_dns, tls, tmp_path):
    from documents.packet import build_attachments
    from models.patients import Note
    from models.referrals import Referral
    from models.referring import ReferralDraft, create_referral
    from transports.direct.identity import load_identity

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(seeded_template, data / "referdesk.db")
    refused, accepted = verified_contacts(data / "referdesk.db")
    open_database(sqlite_url(data / "referdesk.db"))
    try:
        notes = list(Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).limit(2))
        ids = []
        for note, address in zip(notes, (refused, accepted)):
            draft = ReferralDraft(patient_id=note.patient_id, note_id=note.id, channel="direct", recipient=address,
                                  reason="PHI log test")
            ids.append(create_referral(draft, build_attachments(draft)).id)
        phi = phi_of([n.patient_id for n in notes])
    finally:
        close_database()
    assert len(phi) >= 10

    with RecordingSmtp(tls_context=server_context(tls["cert"], tls["key"]),
                       rcpt_replies={refused: "550 5.1.1 mailbox unavailable"}) as hisp:
        config = tmp_path / "config.toml"
        config.write_text(
            f'[direct]\naddress = "{PRACTICE_ADDRESS}"\ncertificate = "{direct_world.practice_p12}"\n'
            f'password_env = "{P12_PASSWORD_ENV}"\ntrust_anchors = "{direct_world.anchors}"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {hisp.port}\nca_file = "{tls["ca"]}"\ntimeout = 10\n'
            f'[dns]\nnameservers = ["{direct_dns.nameserver}"]\ntimeout = 0.5\nlifetime = 1.0\n')
        env = {**os.environ, "PYTHONPATH": str(ROOT), P12_PASSWORD_ENV: P12_PASSWORD, "TZ": "UTC",
               "REFERDESK_FROZEN_TIME": FROZEN_NOW.isoformat(), "REFERDESK_LOG_LEVEL": "DEBUG",
               "PYTHONASYNCIODEBUG": "1"}
        done = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(config), "--data-dir", str(data),
                               "worker", "--once"], env=env, cwd=ROOT, capture_output=True, timeout=120)
        assert len(hisp.received) == 1, done.stderr.decode(errors="replace")
    stderr = done.stderr.decode(errors="replace")
    assert " DEBUG peewee: " in stderr  # the debug log really was on, SQL included
    assert leaked(stderr, phi) == [], stderr[-3000:]

    open_database(sqlite_url(data / "referdesk.db"))
    try:
        statuses = {Referral.get_by_id(i).status for i in ids}
    finally:
        close_database()
    assert statuses == {"failed", "sent"}

    # the practice's private key was only ever in memory: no file in the data folder holds it
    key = load_identity(str(direct_world.practice_p12), P12_PASSWORD.encode()).private_key
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    traditional = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    marks = [der, traditional, base64.b64encode(der)[:64], base64.b64encode(traditional)[:64], b"PRIVATE KEY"]
    for path in data.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not [m for m in marks if m in content], f"{path} holds the private key"


def test_in_process_listener_and_failing_fax_log_no_phi_at_debug(seeded, tls, tmp_path, capsys, caplog):
    import aiosmtplib

    from documents.packet import build_attachments
    from loopback_phaxio import LoopbackPhaxio
    from models.config import Config, load_config
    from models.patients import Note, Patient
    from models.referring import ReferralDraft, create_referral
    from transports.direct.smtp_check import client_context
    from transports.listener import InboundListener
    from transports.outbox import OutboxWorker

    redact.configure_logging("DEBUG")
    caplog.set_level(logging.DEBUG)
    notes = list(Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id.desc()).limit(2))
    phi = phi_of([n.patient_id for n in notes])
    redact.forget_all()  # phi_of loaded them: the listener starts knowing nobody
    report_about = Patient.get_by_id(notes[0].patient_id)

    # a consult report arriving on the listener, naming the patient in its subject and text
    config_path = tmp_path / "config.toml"
    config_path.write_text(f'[direct]\naddress = "{PRACTICE_ADDRESS}"\n[inbound]\nsmtp_listen = "127.0.0.1:0"\n'
                           f'tls_certificate = "{tls["cert"]}"\ntls_key = "{tls["key"]}"\n')
    who = f"{report_about.first_name} {report_about.last_name}"
    raw = (f"From: ruiz@cardio.example.org\r\nTo: {PRACTICE_ADDRESS}\r\nSubject: Report: {who} "
           f"(DOB {report_about.birth_date:%m/%d/%Y}, MRN {report_about.mrn})\r\n"
           f"Message-ID: <phi-1@cardio.example.org>\r\nDate: Mon, 02 Nov 2026 09:00:00 +0000\r\n"
           f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nSeen {who}, born {report_about.birth_date}.\r\n"
           ).encode()

    async def receive() -> int:
        listener = InboundListener(load_config(config_path, db_url="sqlite:///unused", env={}))
        await listener.start()
        try:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=listener.port, start_tls=False, timeout=10,
                                     tls_context=client_context(str(tls["ca"])))
            await client.connect()
            await client.starttls()
            await client.mail("ruiz@cardio.example.org")
            await client.rcpt(PRACTICE_ADDRESS)
            code, _ = await client.data(raw)
            await client.quit()
            return code
        finally:
            await listener.stop()

    assert asyncio.run(receive(), debug=True) == 250

    # a fax the provider fails (bad number)
    with LoopbackPhaxio(polls_to_final=1) as phaxio:
        phaxio.script("+12175550142", ["bad-number"])
        draft = ReferralDraft(patient_id=notes[1].patient_id, note_id=notes[1].id, channel="efax",
                              recipient="2175550142", recipient_name="Dr. Ana Ruiz", reason="Palpitations")
        create_referral(draft, build_attachments(draft))
        config = Config(path=None, data_dir=tmp_path, database_url="",
                        values={"efax": {"provider": "phaxio", "api_url": phaxio.url, "retry_delays": [120]}})
        summary = asyncio.run(OutboxWorker(config, env={"PHAXIO_API_KEY": "k", "PHAXIO_API_SECRET": "s"})
                              .run_once())
    assert summary.failed == 1
    # a log line naming the patient this process just sent a fax for: the known-values layer redacts it
    faxed = Patient.get_by_id(notes[1].patient_id)
    logging.getLogger("referdesk.test").debug("fax for %s %s, born %s", faxed.first_name, faxed.last_name,
                                              faxed.birth_date)

    captured = capsys.readouterr()
    logged = caplog.text + captured.err
    assert "peewee" in logged  # debug logging was really on
    assert "fax for [redacted] [redacted], born [redacted]" in logged
    assert leaked(logged, phi) == [], logged[-3000:]
    assert leaked("\n".join(summary.details), phi) == []
