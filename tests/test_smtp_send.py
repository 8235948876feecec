"""Sending a sealed message to the HISP against real aiosmtpd servers on 127.0.0.1: delivered byte for byte only
inside verified TLS 1.2+, and every failure sorted into "retry later" or "a person must act"."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import ssl

import pytest

from direct_pki import closed_port, make_ca, make_leaf, server_context, write_key, write_pem
from loopback_smtp import RecordingSmtp
from transports.direct.smtp_send import (HandOverGate, PermanentSendError, SendError, SendReceipt, SmtpConnection,
                                         SmtpSettings, TransientSendError, retry_delay, send_message)

HOST = "127.0.0.1"
FROM = "referrals@direct.riverbend.example"
TO = "intake@direct.cardiology.example"
# CRLF throughout, a line that starts with a dot (SMTP dot-stuffing must be undone), trailing spaces, 8-bit-free
# base64 body as S/MIME is.
RAW = (b"From: <referrals@direct.riverbend.example>\r\nTo: <intake@direct.cardiology.example>\r\n"
       b"Subject: Referral\r\nMIME-Version: 1.0\r\n"
       b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
       b"Content-Transfer-Encoding: base64\r\n\r\n"
       b"MIAGCSqGSIb3DQEHA6CAMIACAQAxggFYMIIBVAIBADA8MDAxLjAsBgNVBAMTJVJlZmVy  \r\n"
       b".ZGVzayBUZXN0IFJvb3QCCAwJZQ==\r\n..\r\n")


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smtp-send-tls")
    ca = make_ca("HISP Test CA")
    good = make_leaf(ca, dns=["localhost"], ips=[HOST], cn="hisp", usage=None)
    return {
        "ca": str(write_pem(folder / "ca.pem", ca.cert)),
        "other_ca": str(write_pem(folder / "other-ca.pem", make_ca("Unrelated CA").cert)),
        "cert": str(write_pem(folder / "hisp.pem", good.cert)), "key": str(write_key(folder / "hisp.key", good.key)),
    }


def starttls_server(tls, **kwargs) -> RecordingSmtp:
    return RecordingSmtp(tls_context=server_context(tls["cert"], tls["key"]), **kwargs)


def settings(port: int, tls, **kwargs) -> SmtpSettings:
    return SmtpSettings(host=HOST, port=port, ca_file=tls["ca"], timeout=5, **kwargs)


async def send(port, tls, *, rcpt_to=(TO,), env=None, **kwargs):
    return await send_message(RAW, mail_from=FROM, rcpt_to=list(rcpt_to), settings=settings(port, tls, **kwargs),
                              env=env or {})


async def test_delivered_over_starttls_byte_for_byte(tls):
    with starttls_server(tls) as server:
        receipt = await send(server.port, tls)
    assert receipt == SendReceipt(250, "2.0.0 queued as T1", {})
    [got] = server.received
    assert (got.mail_from, got.rcpt_tos, got.tls) == (FROM, [TO], True)
    assert got.content == RAW
    assert server.mail_commands == [(FROM, True)]


async def test_delivered_over_implicit_tls(tls):
    with RecordingSmtp(ssl_context=server_context(tls["cert"], tls["key"])) as server:
        receipt = await send_message(RAW, mail_from=FROM, rcpt_to=[TO], env={}, settings=SmtpSettings(
            host="localhost", port=server.port, starttls=False, ca_file=tls["ca"], timeout=5))
    assert receipt.code == 250
    assert [(r.content, r.tls) for r in server.received] == [(RAW, True)]


async def test_login_then_delivered(tls):
    with starttls_server(tls, users={"referrals": "s3cret pass"}) as server:
        receipt = await send(server.port, tls, username="referrals", password_env="HISP_PW",
                             env={"HISP_PW": "s3cret pass"})
    assert receipt.code == 250
    assert server.logins == [("PLAIN", "referrals", True)]
    assert server.received[0].content == RAW


async def test_login_behind_implicit_tls(tls):
    with RecordingSmtp(ssl_context=server_context(tls["cert"], tls["key"]), users={"referrals": "pw"}) as server:
        receipt = await send(server.port, tls, starttls=False, username="referrals",
                             env={"REFERDESK_SMTP_PASSWORD": "pw"})
    assert receipt.code == 250 and server.logins == [("PLAIN", "referrals", True)]


async def test_wrong_password_is_permanent_535(tls):
    with starttls_server(tls, users={"referrals": "right"}) as server:
        with pytest.raises(PermanentSendError) as caught:
            await send(server.port, tls, username="referrals", env={"REFERDESK_SMTP_PASSWORD": "Xy-guess"})
    assert caught.value.reply_code == 535
    assert str(caught.value).startswith(f"127.0.0.1:{server.port} refused the login for 'referrals'")
    assert "$REFERDESK_SMTP_PASSWORD" in str(caught.value) and "535 5.7.8" in str(caught.value)
    assert "Xy-guess" not in str(caught.value)
    assert len(server.logins) == 1 and not server.received  # one attempt only: no lock-out by retrying


async def test_missing_password_env_is_permanent_and_connects_nowhere():
    with pytest.raises(PermanentSendError) as caught:
        await send_message(RAW, mail_from=FROM, rcpt_to=[TO], env={}, settings=SmtpSettings(
            host=HOST, port=closed_port(), username="referrals", password_env="HISP_PW"))
    assert str(caught.value) == "the SMTP password for 'referrals' is not available: set $HISP_PW"
    assert caught.value.reply_code is None


@pytest.mark.parametrize("version, label", [(ssl.TLSVersion.TLSv1_1, "TLS 1.1"),
                                            (ssl.TLSVersion.TLSv1, "TLS 1.0")])
async def test_server_with_only_old_tls_is_permanent_and_gets_nothing(tls, version, label):
    with RecordingSmtp(tls_context=server_context(tls["cert"], tls["key"], max_version=version)) as server:
        with pytest.raises(SendError) as caught:
            await send(server.port, tls)
    message = str(caught.value)
    if "offers only" in message:  # this OpenSSL still speaks TLS 1.0/1.1 at security level 0: version named
        assert isinstance(caught.value, PermanentSendError)
        assert message == f"127.0.0.1:{server.port} offers only {label}; referdesk requires TLS 1.2 or newer"
    else:  # an OpenSSL built without TLS < 1.2 cannot tell: the handshake still fails, and says so
        assert message.startswith(f"TLS handshake with 127.0.0.1:{server.port} failed")
    assert not server.received and not server.mail_commands


async def test_untrusted_server_certificate_is_permanent(tls):
    with starttls_server(tls) as server:
        with pytest.raises(PermanentSendError) as caught:
            await send(server.port, {**tls, "ca": tls["other_ca"]})
    assert f"TLS certificate of 127.0.0.1:{server.port} is not signed by a CA in the CA file {tls['other_ca']}" \
        in str(caught.value)
    assert not server.mail_commands


async def test_server_down_is_transient_then_the_same_send_succeeds(tls):
    port = closed_port()
    with pytest.raises(TransientSendError) as caught:
        await send(port, tls)
    assert str(caught.value).startswith(f"cannot reach 127.0.0.1:{port}: connection refused")
    with starttls_server(tls, port=port) as server:
        receipt = await send(port, tls)
    assert server.port == port and receipt.code == 250 and server.received[0].content == RAW


async def test_starttls_against_an_implicit_tls_port_times_out_with_a_hint(tls):
    with RecordingSmtp(ssl_context=server_context(tls["cert"], tls["key"])) as server:
        with pytest.raises(TransientSendError) as caught:
            await send_message(RAW, mail_from=FROM, rcpt_to=[TO], env={},
                               settings=SmtpSettings(host=HOST, port=server.port, ca_file=tls["ca"], timeout=0.3))
    assert str(caught.value) == (f"127.0.0.1:{server.port} accepted the connection but sent no greeting within "
                                 "0.3 s (a port with implicit TLS, like 465, waits for TLS first: switch STARTTLS off)")
    assert not server.received


async def test_missing_ca_file_is_permanent(tmp_path, tls):
    with pytest.raises(PermanentSendError, match=r"^CA file .*none\.pem: file not found$"):
        await send(closed_port(), {**tls, "ca": str(tmp_path / "none.pem")})


async def test_unknown_host_is_transient(tls, monkeypatch):
    async def no_such_name(*args, **kwargs):  # no real DNS in tests: the resolver's answer for an unknown name
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_such_name)
    with pytest.raises(TransientSendError) as caught:
        await send_message(RAW, mail_from=FROM, rcpt_to=[TO], env={}, settings=SmtpSettings(
            host="hisp.example", port=587, ca_file=tls["ca"], timeout=5))
    assert str(caught.value) == "cannot reach hisp.example:587: unknown host name (DNS lookup failed)"


async def test_550_on_rcpt_is_permanent_with_the_reply(tls):
    with starttls_server(tls, rcpt_replies={TO: "550 5.1.1 mailbox unavailable"}) as server:
        with pytest.raises(PermanentSendError) as caught:
            await send(server.port, tls)
    assert caught.value.reply_code == 550
    assert str(caught.value) == (f"127.0.0.1:{server.port} refused the recipient {TO}: "
                                 "550 5.1.1 mailbox unavailable")
    assert caught.value.rejected == {TO: (550, "5.1.1 mailbox unavailable")}
    assert not server.received


async def test_some_recipients_refused_are_reported_with_the_receipt(tls):
    other = "nobody@direct.cardiology.example"
    with starttls_server(tls, rcpt_replies={other: "550 5.1.1 mailbox unavailable"}) as server:
        receipt = await send(server.port, tls, rcpt_to=[TO, other])
    assert receipt.rejected == {other: (550, "5.1.1 mailbox unavailable")}
    assert server.received[0].rcpt_tos == [TO]


@pytest.mark.parametrize("where", ["rcpt", "data"])
async def test_451_is_transient(tls, where):
    reply = "451 4.3.0 try again later"
    kwargs = {"rcpt_replies": {TO: reply}} if where == "rcpt" else {"data_reply": reply}
    with starttls_server(tls, **kwargs) as server:
        with pytest.raises(TransientSendError) as caught:
            await send(server.port, tls)
    assert caught.value.reply_code == 451 and "451 4.3.0 try again later" in str(caught.value)
    assert not server.received


async def test_no_starttls_offered_refuses_to_send_in_clear(tls):
    with RecordingSmtp(users={"referrals": "pw"}) as server:
        with pytest.raises(PermanentSendError) as caught:
            await send(server.port, tls, username="referrals", env={"REFERDESK_SMTP_PASSWORD": "pw"})
    assert str(caught.value).startswith(f"127.0.0.1:{server.port} does not offer STARTTLS: referdesk never sends "
                                        "over an unencrypted connection")
    assert not server.mail_commands and not server.logins and not server.received


async def test_sessions_sharing_a_gate_take_turns_between_data_and_settled(tls):
    """Two sessions, one gate: the second message's MAIL and RCPT go ahead, but its DATA waits until the first
    sender says its outcome is recorded, so at most one message is ever "accepted but not yet written down"."""
    gate = HandOverGate()
    with starttls_server(tls) as server:
        first = SmtpConnection(settings(server.port, tls), {}, gate=gate)
        second = SmtpConnection(settings(server.port, tls), {}, gate=gate)
        await first.send(RAW, mail_from=FROM, rcpt_to=[TO])
        waiting = asyncio.ensure_future(second.send(RAW, mail_from=FROM, rcpt_to=["other@direct.cardiology.example"]))
        await asyncio.sleep(0.5)
        assert not waiting.done() and len(server.received) == 1
        assert len(server.mail_commands) == 2  # the second envelope is open, its DATA not begun
        second.settled()  # not the holder: changes nothing
        await asyncio.sleep(0.2)
        assert not waiting.done()
        first.settled()
        await asyncio.wait_for(waiting, 5)
        assert [got.rcpt_tos for got in server.received] == [[TO], ["other@direct.cardiology.example"]]
        second.settled()
        await first.send(RAW, mail_from=FROM, rcpt_to=[TO])  # the gate is free again
        first.settled()
        await first.close()
        await second.close()
    assert len(server.received) == 3


def test_retry_delay_grows_is_capped_and_jittered():
    rng = random.Random(7)
    assert retry_delay(1, rng=rng) == 60
    for attempt in range(1, 30):
        ceiling = min(24 * 3600, 60 * 2 ** (attempt - 1))
        samples = [retry_delay(attempt, rng=rng) for _ in range(200)]
        assert all(60 <= s <= ceiling for s in samples)
        if attempt > 3:
            assert max(samples) > 0.9 * ceiling and min(samples) < 0.5 * ceiling  # spread, not fixed
    assert max(retry_delay(10_000, rng=rng) for _ in range(100)) <= 24 * 3600
    assert retry_delay(3, base=1, cap=3, rng=random.Random(1)) <= 3
    with pytest.raises(ValueError):
        retry_delay(0)


def test_settings_from_config():
    assert SmtpSettings.from_config({"host": "hisp.example"}) == SmtpSettings(host="hisp.example", ca_file=None,
                                                                                username=None)
    implicit = SmtpSettings.from_config({"host": "hisp.example", "port": 465, "username": "referrals",
                                         "ca_file": "~/hisp-ca.pem", "timeout": 10})
    assert implicit.implicit_tls and not implicit.starttls and implicit.username == "referrals"
    assert SmtpSettings.from_config({"host": "h", "port": 2525, "starttls": False}).implicit_tls
    assert SmtpSettings.from_config({"host": "h", "password_env": ""}).password_env == "REFERDESK_SMTP_PASSWORD"


@pytest.mark.parametrize("section, words", [
    ({}, "[smtp] host is missing"),
    ({"host": "  "}, "[smtp] host is missing"),
    ({"host": "smtp://hisp.example"}, "is not a host name"),
    ({"host": "hisp.example", "port": 0}, "[smtp] port 0 is not a TCP port"),
    ({"host": "hisp.example", "port": 70000}, "[smtp] port 70000 is not a TCP port"),
    ({"host": "hisp.example", "port": "abc"}, "[smtp] port 'abc' is not a TCP port"),
    ({"host": "hisp.example", "port": True}, "[smtp] port True is not a TCP port"),
    ({"host": "hisp.example", "starttls": "yes"}, "[smtp] starttls must be true or false"),
    ({"host": "hisp.example", "password_env": "hunter 2"}, "is not an environment variable name"),
    ({"host": "hisp.example", "timeout": 0}, "[smtp] timeout 0 must be a number"),
])
def test_bad_settings_are_named(section, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        SmtpSettings.from_config(section)
