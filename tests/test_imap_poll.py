"""IMAPS polling of the practice's HISP mailbox against a real (minimal) IMAP server on loopback: unseen
messages go through the pipeline and are marked seen only then; a wrong password, a server that is down, an
untrusted certificate or a TLS 1.1-only server each end the poll with a message that says what is wrong."""

from __future__ import annotations

import json
import ssl

import pytest

from direct_pki import closed_port, make_ca, make_leaf, server_context, write_key, write_pem
from loopback_imap import LoopbackImap
from models.config import load_config
from models.db import sqlite_url
from models.referrals import InboundMessage
from transports.imap_poll import ImapPollError, ImapSettings, poll_once

USER = "referrals@direct.example.org"
PASSWORD = "s3cret imap"
ENV = {"TEST_IMAP_PASSWORD": PASSWORD}


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imap-tls")
    ca = make_ca("IMAP TLS CA")
    leaf = make_leaf(ca, dns=["localhost"], ips=["127.0.0.1"], cn="imap", usage=None)
    return {"ca": write_pem(folder / "ca.pem", ca.cert), "cert": write_pem(folder / "imap.pem", leaf.cert),
            "key": write_key(folder / "imap.key", leaf.key)}


def message(number: int) -> bytes:
    return (f"From: partner@direct.example.net\r\nTo: {USER}\r\nSubject: report {number}\r\n"
            f"Message-ID: <imap-{number}@direct.example.net>\r\nDate: Mon, 02 Nov 2026 09:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nConsult report {number}.\r\n").encode()


def make_config(tmp_path, db_path, port: int, *, ca=None, **inbound):
    settings = {"imap_url": f"imaps://{USER.replace('@', '%40')}@127.0.0.1:{port}/INBOX",
                "imap_password_env": "TEST_IMAP_PASSWORD", "imap_timeout": 5, **inbound}
    if ca is not None:
        settings["imap_ca_file"] = str(ca)
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    path = tmp_path / "config.toml"
    path.write_text(f'[direct]\naddress = "{USER}"\n[inbound]\n{lines}')
    return load_config(path, db_url=sqlite_url(db_path), env={})


def imap_server(tls, **kwargs) -> LoopbackImap:
    return LoopbackImap(server_context(tls["cert"], tls["key"], **kwargs), users={USER: PASSWORD})


def test_unseen_messages_are_stored_then_marked_seen_and_not_fetched_again(db, db_path, tmp_path, tls):
    with imap_server(tls) as server:
        server.add(b"old and already read\r\n", "\\Seen")
        server.add(message(1))
        server.add(message(2))
        config = make_config(tmp_path, db_path, server.port, ca=tls["ca"])
        first = poll_once(config, env=ENV)
        assert first.error == ""
        assert first.fetched == 2 and first.accepted + first.rejected + first.duplicates == 2
        rows = list(InboundMessage.select().order_by(InboundMessage.id))
        assert [bytes(row.raw) for row in rows] == [message(1), message(2)]
        assert {row.channel for row in rows} == {"imap"}
        assert all("\\Seen" in m.flags for m in server.messages)
        assert "UID FETCH" in server.commands and "UID STORE" in server.commands

        second = poll_once(config, env=ENV)
        assert (second.fetched, second.error) == (0, "")
        assert InboundMessage.select().count() == 2


def test_delete_after_storing(db, db_path, tmp_path, tls):
    with imap_server(tls) as server:
        server.add(message(3))
        keep = server.add(b"Subject: read by someone\r\n\r\nx\r\n", "\\Seen")
        summary = poll_once(make_config(tmp_path, db_path, server.port, ca=tls["ca"], imap_after="delete"),
                            env=ENV)
        assert (summary.fetched, summary.error) == (1, "")
        assert [m.uid for m in server.messages] == [keep]
        assert InboundMessage.select().count() == 1


def test_wrong_password_is_a_clear_error_and_fetches_nothing(db, db_path, tmp_path, tls):
    with imap_server(tls) as server:
        server.add(message(4))
        summary = poll_once(make_config(tmp_path, db_path, server.port, ca=tls["ca"]),
                            env={"TEST_IMAP_PASSWORD": "wrong"})
        assert summary.fetched == 0
        assert "refused the login" in summary.error and "AUTHENTICATIONFAILED" in summary.error
        assert PASSWORD not in summary.error and "wrong" not in summary.error
        assert not server.messages[0].flags
    assert InboundMessage.select().count() == 0


def test_missing_password_names_the_variable(db, db_path, tmp_path):
    summary = poll_once(make_config(tmp_path, db_path, closed_port()), env={})
    assert "TEST_IMAP_PASSWORD" in summary.error and summary.fetched == 0


def test_server_down_is_a_clear_error(db, db_path, tmp_path, tls):
    port = closed_port()
    summary = poll_once(make_config(tmp_path, db_path, port, ca=tls["ca"]), env=ENV)
    assert summary.error == (f"cannot reach 127.0.0.1:{port}: connection refused (is the server running, "
                             "is the port right?)")


def test_unknown_certificate_authority_is_named(db, db_path, tmp_path, tls):
    with imap_server(tls) as server:
        server.add(message(5))
        summary = poll_once(make_config(tmp_path, db_path, server.port), env=ENV)  # no imap_ca_file
        assert "unknown CA" in summary.error and "imap_ca_file" in summary.error
        assert summary.fetched == 0 and not server.messages[0].flags


def test_a_tls_1_1_only_server_is_refused(db, db_path, tmp_path, tls):
    with imap_server(tls, max_version=ssl.TLSVersion.TLSv1_1) as server:
        server.add(message(6))
        summary = poll_once(make_config(tmp_path, db_path, server.port, ca=tls["ca"]), env=ENV)
        assert summary.error == f"127.0.0.1:{server.port} offers only TLS 1.1; referdesk requires TLS 1.2 or newer"
        assert "LOGIN" not in server.commands and summary.fetched == 0


@pytest.mark.parametrize("url, problem", [
    ("imap://u@host/INBOX", "must start with imaps://"),
    ("imaps://u:pw@host/INBOX", "holds a password"),
    ("imaps://host/INBOX", "USER@HOST"),
])
def test_bad_urls_are_refused(tmp_path, db_path, url, problem):
    path = tmp_path / "config.toml"
    path.write_text(f'[inbound]\nimap_url = "{url}"\n')
    with pytest.raises(ImapPollError, match=problem):
        ImapSettings.from_config(load_config(path, db_url=sqlite_url(db_path), env={}), {"REFERDESK_IMAP_PASSWORD": "x"})


def test_settings_read_the_url(tmp_path, db_path):
    settings = ImapSettings.from_config(make_config(tmp_path, db_path, 993), ENV)
    assert (settings.host, settings.port, settings.user, settings.mailbox) == ("127.0.0.1", 993, USER, "INBOX")
    assert settings.describe() == f"imaps://{USER}@127.0.0.1:993/INBOX" and PASSWORD not in settings.describe()


def test_worker_once_polls_the_mailbox(db, db_path, tmp_path, tls, cli, monkeypatch):
    monkeypatch.setenv("TEST_IMAP_PASSWORD", PASSWORD)
    with imap_server(tls) as server:
        server.add(message(7))
        make_config(tmp_path, db_path, server.port, ca=tls["ca"])
        code, out, err = cli("--config", tmp_path / "config.toml", "--db", sqlite_url(db_path), "worker", "--once",
                             "--json")
    imap = json.loads(out)["imap"]
    assert (imap["fetched"], imap["error"]) == (1, "")
    assert "IMAP: fetched 1" in err
    assert InboundMessage.select().count() == 1
