"""A full disk and a locked database: a real SQLITE_FULL ("database or disk is full", from `PRAGMA
max_page_count` capping the file at its current size) and a real SQLITE_BUSY (another connection holding a
write transaction past the busy timeout). Making a referral and receiving a message fail with words the user
can act on — never a traceback —, leave no partial rows behind (documents live in the database, in the same
transaction, so there is no orphan file either), and work again once space (or the lock) is back.

SQLite only: the page cap and the lock are SQLite's.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from models import db as store
from models.db import close_database, open_database, sqlite_url
from models.referrals import Document, InboundMessage, OutboxJob, Referral, ReferralEvent

SENDER = "ruiz@cardio.example.org"
PRACTICE = "referrals@direct.riverbend-family.example"
BODY = "Consult report, in many short lines.\r\n" * 400  # big enough to need new pages


def counts() -> dict[str, int]:
    from models.audit import AuditEvent

    return {model.__name__: model.select().count()
            for model in (Referral, Document, OutboxJob, ReferralEvent, InboundMessage, AuditEvent)}


@pytest.fixture
def data(seeded_template, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(seeded_template, folder / "referdesk.db")
    with sqlite3.connect(folder / "referdesk.db") as connection:
        connection.execute("VACUUM")  # no free pages: every new row needs the file to grow
    yield folder
    close_database()


def reopen(folder, monkeypatch, *, full: bool) -> None:
    """The database again, capped at its present size (every connection, every thread) or not."""
    close_database()
    path = folder / "referdesk.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
    if full:
        monkeypatch.setitem(store.SQLITE_PRAGMAS, "max_page_count", pages)
    else:
        monkeypatch.delitem(store.SQLITE_PRAGMAS, "max_page_count", raising=False)
    open_database(sqlite_url(path))


def draft_and_attachments(channel: str = "print", recipient: str = "/nonexistent-not-used"):
    from documents.packet import build_attachments
    from models.patients import Note
    from models.referring import ReferralDraft

    note = Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).first()
    draft = ReferralDraft(patient_id=note.patient_id, note_id=note.id, channel=channel, recipient=recipient,
                          reason="Disk full test")
    return draft, build_attachments(draft)


def inbound(number: int) -> bytes:
    return (f"From: {SENDER}\r\nTo: {PRACTICE}\r\nSubject: report\r\nMessage-ID: <full-{number}@cardio.example.org>"
            f"\r\nDate: Mon, 02 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
            f"{BODY}").encode()


def test_a_referral_on_a_full_disk_is_refused_plainly_leaves_nothing_and_goes_through_once_space_is_back(
        data, monkeypatch):
    from models.referring import ReferralError, create_referral

    reopen(data, monkeypatch, full=False)
    draft, attachments = draft_and_attachments()
    before = counts()
    reopen(data, monkeypatch, full=True)
    with pytest.raises(ReferralError) as refused:
        create_referral(draft, attachments)
    message = str(refused.value)
    assert "database is full" in message and "nothing was saved" in message and "Free some disk space" in message
    assert isinstance(refused.value.__cause__, Exception) and "database or disk is full" in str(refused.value.__cause__)
    assert counts() == before  # not the referral, not one of its documents, events, job or audit row
    reopen(data, monkeypatch, full=False)
    assert counts() == before
    referral = create_referral(draft, attachments)
    assert Referral.get_by_id(referral.id).status == "queued"
    after = counts()
    assert after["Referral"] == before["Referral"] + 1 and after["OutboxJob"] == before["OutboxJob"] + 1
    assert after["Document"] > before["Document"]


def test_the_command_line_send_on_a_full_disk_says_so_without_a_traceback(data, monkeypatch, cli, tmp_path):
    from models.patients import Patient

    reopen(data, monkeypatch, full=False)
    mrn = Patient.select().order_by(Patient.id).first().mrn
    before = counts()
    close_database()
    monkeypatch.setitem(store.SQLITE_PRAGMAS, "max_page_count", 1)  # below any size: every write is refused
    folder = tmp_path / "out"
    code, out, err = cli("--data-dir", data, "send", "--patient", mrn, "--via", "print", "--to", folder)
    assert code == 1 and out == ""
    assert "database is full" in err and "Traceback" not in err
    assert not folder.exists() or not any(folder.iterdir())  # nothing printed for a referral never stored
    reopen(data, monkeypatch, full=False)
    assert counts() == before
    code, out, err = cli("--data-dir", data, "send", "--patient", mrn, "--via", "print", "--to", folder)
    assert code == 0, err
    assert any(p.suffix == ".pdf" for p in folder.iterdir())


def test_receiving_on_a_full_disk_keeps_nothing_half_done_and_succeeds_when_sent_again(data, monkeypatch, cli,
                                                                                      tmp_path):
    from transports.inbound import receive_message

    reopen(data, monkeypatch, full=True)
    before = counts()
    with pytest.raises(Exception) as failed:
        receive_message(inbound(1), channel="file")
    assert "database or disk is full" in str(failed.value)
    assert counts() == before

    message = tmp_path / "report.eml"
    message.write_bytes(inbound(2))
    close_database()
    code, out, err = cli("--data-dir", data, "receive", message)  # the page cap applies to the CLI's connection
    assert code == 1 and "database is full" in err and "Traceback" not in err

    reopen(data, monkeypatch, full=False)
    assert counts() == before
    outcome = receive_message(inbound(1), channel="file")
    assert outcome.outcome in ("accepted", "rejected")  # stored and decided (unencrypted: rejected, kept)
    assert InboundMessage.select().count() == before["InboundMessage"] + 1


async def test_the_listener_answers_451_on_a_full_disk_says_why_and_takes_the_retry(data, monkeypatch, tmp_path):
    import aiosmtplib

    from direct_pki import make_ca, make_leaf, write_key, write_pem
    from models.config import load_config
    from transports.direct.smtp_check import client_context
    from transports.listener import InboundListener

    ca = make_ca("Full-disk TLS CA")
    leaf = make_leaf(ca, dns=["localhost"], ips=["127.0.0.1"], cn="edge", usage=None)
    tls = {"ca": write_pem(tmp_path / "ca.pem", ca.cert), "cert": write_pem(tmp_path / "edge.pem", leaf.cert),
           "key": write_key(tmp_path / "edge.key", leaf.key)}
    config_path = tmp_path / "config.toml"
    config_path.write_text(f'[direct]\naddress = "{PRACTICE}"\n[inbound]\nsmtp_listen = "127.0.0.1:0"\n'
                           f'tls_certificate = "{tls["cert"]}"\ntls_key = "{tls["key"]}"\n')

    async def deliver(listener, number: int) -> int:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=listener.port, start_tls=False, timeout=10,
                                 tls_context=client_context(str(tls["ca"])))
        await client.connect()
        await client.starttls()
        await client.mail(SENDER)
        await client.rcpt(PRACTICE)
        try:
            code, _ = await client.data(inbound(number))
        except aiosmtplib.SMTPDataError as exc:
            code = exc.code
        await client.quit()
        return code

    reopen(data, monkeypatch, full=True)
    before = counts()
    listener = InboundListener(load_config(config_path, db_url=sqlite_url(data / "referdesk.db"), env={}))
    await listener.start()
    try:
        assert await deliver(listener, 3) == 451  # the sender keeps the message and tries again
        assert "database is full" in listener.last_error and "Traceback" not in listener.last_error
    finally:
        await listener.stop()
    reopen(data, monkeypatch, full=False)
    assert counts() == before
    listener = InboundListener(load_config(config_path, db_url=sqlite_url(data / "referdesk.db"), env={}))
    await listener.start()
    try:
        assert await deliver(listener, 3) == 250
        assert listener.last_error == ""
    finally:
        await listener.stop()
    assert InboundMessage.select().count() == before["InboundMessage"] + 1


def test_a_locked_database_gives_a_clear_message_not_a_traceback(data, monkeypatch, cli, tmp_path):
    from models.referring import ReferralError, create_referral

    monkeypatch.setitem(store.SQLITE_PRAGMAS, "busy_timeout", 300)
    reopen(data, monkeypatch, full=False)
    draft, attachments = draft_and_attachments()
    before = counts()
    holder = sqlite3.connect(data / "referdesk.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    try:
        with pytest.raises(ReferralError) as refused:
            create_referral(draft, attachments)
        assert "database is busy" in str(refused.value) and "nothing was saved" in str(refused.value).lower()
        message = tmp_path / "report.eml"
        message.write_bytes(inbound(4))
        close_database()
        code, out, err = cli("--data-dir", data, "receive", message)
        assert code == 1 and "database is busy" in err and "Traceback" not in err
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    reopen(data, monkeypatch, full=False)
    assert counts() == before
    create_referral(draft, attachments)
    assert counts()["Referral"] == before["Referral"] + 1
