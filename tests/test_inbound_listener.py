"""The inbound SMTP listener on 127.0.0.1 with a real SMTP client (aiosmtplib): STARTTLS before MAIL, TLS 1.2
or newer, mail only for the practice's addresses and within the size limit, and a 250 once the raw message is
in the database — whatever the pipeline then made of it."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import warnings

import aiosmtplib
import pytest

from direct_pki import closed_port, make_ca, make_leaf, write_key, write_pem
from models.config import load_config
from models.db import sqlite_url
from models.referrals import InboundMessage
from transports.direct.smtp_check import client_context
from transports.listener import InboundListener, ListenerError, parse_listen

PRACTICE = "referrals@direct.example.org"
INTAKE = "intake@direct.example.org"
SENDER = "ruiz@cardio.example.org"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    folder = tmp_path_factory.mktemp("listener-tls")
    ca = make_ca("Listener TLS CA")
    leaf = make_leaf(ca, dns=["localhost"], ips=["127.0.0.1"], cn="edge", usage=None)
    return {"ca": write_pem(folder / "ca.pem", ca.cert), "cert": write_pem(folder / "edge.pem", leaf.cert),
            "key": write_key(folder / "edge.key", leaf.key)}


def make_config(tmp_path, db_path, tls, **inbound):
    settings = {"smtp_listen": "127.0.0.1:0", "tls_certificate": str(tls["cert"]), "tls_key": str(tls["key"]),
                "accept_addresses": [INTAKE], **inbound}
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    path = tmp_path / "config.toml"
    path.write_text(f'[direct]\naddress = "{PRACTICE}"\n[inbound]\n{lines}')
    return load_config(path, db_url=sqlite_url(db_path), env={})


@pytest.fixture
async def listener(db, db_path, tmp_path, tls):
    server = InboundListener(make_config(tmp_path, db_path, tls, max_message_mb=0.05))
    await server.start()
    yield server
    await server.stop()


def message(number: int = 1, body: str = "Consult report.") -> bytes:
    return (f"From: {SENDER}\r\nTo: {PRACTICE}\r\nSubject: report\r\nMessage-ID: <edge-{number}@cardio.example.org>\r\n"
            f"Date: Mon, 02 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
            f"{body}\r\n").encode()


async def session(listener, tls, *, context: ssl.SSLContext | None = None) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=listener.port, start_tls=False, timeout=5,
                             tls_context=context or client_context(str(tls["ca"])))
    await client.connect()
    await client.ehlo()
    return client


async def deliver(client: aiosmtplib.SMTP, raw: bytes, to: str = PRACTICE) -> tuple[int, str]:
    await client.mail(SENDER)
    await client.rcpt(to)
    code, text = await client.data(raw)
    return code, text


async def test_mail_before_starttls_is_refused(listener, tls):
    client = await session(listener, tls)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await client.mail(SENDER)
    assert refused.value.code == 530
    await client.quit()
    assert InboundMessage.select().count() == 0


async def test_a_message_for_the_practice_is_stored_raw_and_answered_250(listener, tls):
    client = await session(listener, tls)
    await client.starttls()
    assert client.get_transport_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    await client.ehlo()
    raw = message(1)
    code, _ = await deliver(client, raw)
    await client.quit()
    assert code == 250
    row = InboundMessage.get()
    assert (bytes(row.raw), row.channel) == (raw, "smtp")  # bytes: PostgreSQL gives a memoryview
    assert listener.received == 1 and listener.last_error == ""


async def test_the_extra_accept_address_and_any_case(listener, tls):
    client = await session(listener, tls)
    await client.starttls()
    await client.ehlo()
    code, _ = await deliver(client, message(2), to=INTAKE.upper())
    await client.quit()
    assert code == 250 and InboundMessage.select().count() == 1


async def test_a_recipient_elsewhere_is_refused(listener, tls):
    client = await session(listener, tls)
    await client.starttls()
    await client.ehlo()
    await client.mail(SENDER)
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
        await client.rcpt("someone@other.example.org")
    assert refused.value.code == 550 and "5.1.1" in refused.value.message
    await client.quit()


async def test_an_oversize_message_is_refused_and_not_stored(listener, tls):
    client = await session(listener, tls)
    await client.starttls()
    await client.ehlo()
    await client.mail(SENDER)
    await client.rcpt(PRACTICE)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await client.data(message(3, body="x" * 76 + "\r\n") * 1000)  # ~ 300 KB against a 50 KB limit
    assert refused.value.code == 552
    assert InboundMessage.select().count() == 0


async def test_a_declared_oversize_is_refused_at_mail(listener, tls):
    client = await session(listener, tls)
    await client.starttls()
    await client.ehlo()
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await client.mail(SENDER, options=[f"SIZE={10 * 1024 * 1024}"])
    assert refused.value.code == 552


async def test_a_tls_1_1_only_client_is_refused(listener, tls):
    legacy = client_context(str(tls["ca"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy.minimum_version = ssl.TLSVersion.TLSv1
        legacy.maximum_version = ssl.TLSVersion.TLSv1_1
    legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
    client = await session(listener, tls, context=legacy)
    with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError, ConnectionError)):
        await client.starttls()
    client.close()
    # the listener is still there for a client that does it right
    good = await session(listener, tls)
    await good.starttls()
    await good.ehlo()
    assert (await deliver(good, message(4)))[0] == 250
    await good.quit()


async def test_the_same_message_twice_is_answered_250_both_times(listener, tls):
    raw = message(5)
    for _ in range(2):
        client = await session(listener, tls)
        await client.starttls()
        await client.ehlo()
        assert (await deliver(client, raw))[0] == 250
        await client.quit()
    rows = list(InboundMessage.select())
    assert 1 <= len(rows) <= 2 and all(bytes(row.raw) == raw for row in rows)
    assert listener.received == 2


async def test_a_storage_failure_is_451_so_the_sender_retries(listener, tls, monkeypatch):
    def broken(raw):
        raise OSError("disk full")

    monkeypatch.setattr(listener, "receive", broken)
    client = await session(listener, tls)
    await client.starttls()
    await client.ehlo()
    await client.mail(SENDER)
    await client.rcpt(PRACTICE)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await client.data(message(6))
    assert refused.value.code == 451
    assert "disk full" in listener.last_error
    await client.quit()


@pytest.mark.parametrize("value", ["2525", ":2525", "localhost:2525", "*:25", "127.0.0.1:99999", ""])
def test_only_an_explicit_address_is_accepted(value):
    with pytest.raises(ListenerError, match="smtp_listen"):
        parse_listen(value)


def test_explicit_addresses():
    assert parse_listen("127.0.0.1:2525") == ("127.0.0.1", 2525)
    assert parse_listen("[::1]:25") == ("::1", 25)


def test_no_tls_certificate_no_listener(db_path, tmp_path, tls):
    config = make_config(tmp_path, db_path, tls, tls_certificate="")
    with pytest.raises(ListenerError, match="tls_certificate"):
        InboundListener(config)


async def test_nothing_about_a_message_reaches_the_log(listener, tls, caplog):
    caplog.set_level(logging.DEBUG)
    client = await session(listener, tls)
    await client.starttls()
    await client.ehlo()
    assert (await deliver(client, message(7, body="Patient Jane Doe, MRN 1000001")))[0] == 250
    await client.quit()
    logged = "\n".join(record.getMessage() for record in caplog.records if record.name != "peewee")
    assert SENDER not in logged and PRACTICE not in logged and "Jane Doe" not in logged


async def test_the_worker_service_listens_even_when_imap_polling_fails(db, db_path, tmp_path, tls):
    from transports.service import Service

    config = make_config(tmp_path, db_path, tls, imap_url=f"imaps://u@127.0.0.1:{closed_port()}/INBOX",
                         imap_password_env="TEST_NO_SUCH_VARIABLE", imap_poll_seconds=0.05)
    lines: list[str] = []
    service, stop = Service(config, report=lines.append, poll=0.05, env={}), asyncio.Event()
    running = asyncio.create_task(service.run(stop))
    async with asyncio.timeout(5):
        while service.listener is None or "inbound IMAP" not in service.errors:
            await asyncio.sleep(0.01)
    client = await session(service.listener, tls)
    await client.starttls()
    await client.ehlo()
    assert (await deliver(client, message(8)))[0] == 250
    await client.quit()
    stop.set()
    await asyncio.wait_for(running, 5)
    assert InboundMessage.get().channel == "smtp"
    assert "TEST_NO_SUCH_VARIABLE" in service.errors["inbound IMAP"]
    assert any(line.startswith("inbound SMTP: listening on 127.0.0.1:") for line in lines)
    assert any(line.startswith("inbound IMAP: polling imaps://u@127.0.0.1:") for line in lines)
    assert sum("TEST_NO_SUCH_VARIABLE" in line for line in lines) == 1  # reported once, not every poll
