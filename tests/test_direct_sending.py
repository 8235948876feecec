"""Sending a referral by Direct end to end, on loopback only: `referdesk send` queues it, `referdesk worker --once`
re-verifies the recipient (a real DNS server publishing CERT records, CRLs on a real HTTP server), seals it and
hands it to a real aiosmtpd HISP over STARTTLS; the real `openssl` opens what the HISP received. Then delivery
notifications (`referdesk receive`) move the referral to delivered or failed, and a HISP that is down, refuses
or speaks only TLS 1.1 gives the outcome a user needs to see."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import re
import subprocess

import pytest
from cryptography.hazmat.primitives import hashes

from direct_ca import dns_server, http_server, make_leaf, pki  # noqa: F401 (fixtures)
from direct_pki import closed_port, make_ca as make_tls_ca, make_leaf as make_tls_leaf, rsa_key, server_context
from direct_pki import write_key, write_p12, write_pem
from loopback_smtp import RecordingSmtp
from models import clock
from tests.conftest import FROZEN_NOW
from transports.direct.identity import load_identity
from transports.direct.smime import encrypt, sign

PRACTICE = "referrals@direct.riverbend-family.example.org"
PARTNER = "ruiz@cardio.example.org"
MRN = "1000001"
P12_PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """The HISP's TLS certificate, from a CA given to referdesk as [smtp] ca_file."""
    folder = tmp_path_factory.mktemp("hisp-tls")
    ca = make_tls_ca("HISP TLS CA")
    leaf = make_tls_leaf(ca, dns=["localhost"], ips=["127.0.0.1"], cn="hisp", usage=None)
    return {"ca": write_pem(folder / "ca.pem", ca.cert), "cert": write_pem(folder / "hisp.pem", leaf.cert),
            "key": write_key(folder / "hisp.key", leaf.key)}


@pytest.fixture(scope="module")
def parties(pki, tmp_path_factory):
    """The practice's identity (.p12 with a passphrase) and the partner's address-bound certificate, both from
    the trust anchor; the partner's key is kept to play the partner's side (openssl, MDNs)."""
    folder = tmp_path_factory.mktemp("parties")
    practice = make_leaf(pki.root, emails=[PRACTICE], key=rsa_key(slot="practice-send"), cn="practice",
                         crl_url=pki.root_crl_url)
    partner = make_leaf(pki.root, emails=[PARTNER], key=rsa_key(slot="partner-send"), cn="partner",
                        crl_url=pki.root_crl_url)
    outsider_ca = pki.other_root
    outsider = make_leaf(outsider_ca, emails=[PARTNER], key=rsa_key(slot="partner-forged"), cn="forger")
    anchors = folder / "anchors"
    anchors.mkdir()
    write_pem(anchors / "root.pem", pki.root.cert)
    return {
        "folder": folder, "practice": practice, "partner": partner, "outsider": outsider, "anchors": anchors,
        "p12": write_p12(folder / "practice.p12", practice, P12_PASSWORD.encode()),
        "partner_p12": write_p12(folder / "partner.p12", partner, None),
        "outsider_p12": write_p12(folder / "outsider.p12", outsider, None),
        "partner_pem": write_pem(folder / "partner.pem", partner.cert),
        "partner_key": write_key(folder / "partner.key", partner.key),
        "root_pem": write_pem(folder / "root.pem", pki.root.cert),
    }


@pytest.fixture
def site(parties, dns_server, tls, data_dir, tmp_path, monkeypatch):  # noqa: F811
    """A configured practice: config file, data dir, the partner's certificate in DNS; `run(*argv)` runs the
    command line against it. The HISP's port is set per test with `site.smtp_port(port)`."""
    dns_server.add_zone("cardio.example.org")
    dns_server.add_cert("ruiz.cardio.example.org", parties["partner"].cert)
    monkeypatch.setenv("TEST_P12_PASSWORD", P12_PASSWORD)

    class Site:
        config = tmp_path / "config.toml"

        def smtp_port(self, port: int, **smtp) -> None:
            extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in smtp.items())
            self.config.write_text(
                f'[direct]\naddress = "{PRACTICE}"\ncertificate = "{parties["p12"]}"\n'
                f'password_env = "TEST_P12_PASSWORD"\ntrust_anchors = "{parties["anchors"]}"\n'
                f'mdn_timeout_minutes = 60\n'
                f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nca_file = "{tls["ca"]}"\ntimeout = 5\n{extra}'
                f'[dns]\nnameservers = ["{dns_server.nameserver}"]\ntimeout = 0.5\nlifetime = 1.0\n')

        def run(self, cli, *argv):
            return cli("--config", self.config, "--data-dir", data_dir, *argv)

    return Site()


def starttls_hisp(tls, **kwargs) -> RecordingSmtp:
    return RecordingSmtp(tls_context=server_context(tls["cert"], tls["key"]), **kwargs)


def send(site, cli, to: str = PARTNER) -> int:
    code, out, err = site.run(cli, "send", "--patient", MRN, "--via", "direct", "--to", to)
    assert code == 0, err
    return int(out.strip())


class Summary(dict):
    """The worker's JSON summary; `log` keeps its stderr lines for assertion messages."""


def worker(site, cli) -> Summary:
    code, out, err = site.run(cli, "worker", "--once", "--json")
    assert code == 0, err
    summary = Summary(json.loads(out))
    summary.log = err
    return summary


def hand_overs(site, cli, referral_id: int) -> list[tuple[str, str, str, str]]:
    """The audit log's `referral.direct` rows for the referral, oldest first: (user, MRN, outcome, detail)."""
    code, out, err = site.run(cli, "audit", "--action", "referral.direct", "--detail", "--json")
    assert code == 0, err
    rows = [r for r in json.loads(out) if r["object_id"] == str(referral_id)]
    return [(r["username"], r["patient_mrn"], r["outcome"], r["detail"]) for r in sorted(rows, key=lambda r: r["id"])]


def referral(site, cli, referral_id: int) -> dict:
    code, out, err = site.run(cli, "referrals", "--json")
    assert code == 0, err
    return next(r for r in json.loads(out) if r["id"] == referral_id)


def openssl(folder, *args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], cwd=folder, input=data, capture_output=True)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


# --- the happy path, checked by an independent peer -----------------------------------------------------

def test_sent_over_starttls_and_opened_by_openssl(site, cli, tls, parties):
    with starttls_hisp(tls) as hisp:
        site.smtp_port(hisp.port)
        referral_id = send(site, cli)
        assert referral(site, cli, referral_id)["status"] == "queued"
        summary = worker(site, cli)
        assert summary["sent"] == 1, summary.log
    [got] = hisp.received
    assert (got.mail_from, got.rcpt_tos, got.tls) == (PRACTICE, [PARTNER], True)
    row = referral(site, cli, referral_id)
    assert row["status"] == "sent"
    assert [e["kind"] for e in row["events"]][-3:] == ["queued", "sending", "sent"]
    assert "accepted by 127.0.0.1" in row["events"][-1]["detail"]

    outer = email.message_from_bytes(got.content, policy=email.policy.compat32)
    assert outer.get_content_type() == "application/pkcs7-mime"
    assert outer["Message-ID"] == row["message_id"]
    assert b"\n" not in got.content.replace(b"\r\n", b"")
    folder = parties["folder"]
    (folder / "received.eml").write_bytes(got.content)
    signed = openssl(folder, "cms", "-decrypt", "-in", "received.eml", "-recip", "partner.pem",
                     "-inkey", "partner.key")
    printed = openssl(folder, "cms", "-cmsout", "-print", "-in", "received.eml")
    assert b"aes-256-cbc" in printed
    assert b'protocol="application/pkcs7-signature"' in signed and b"micalg=sha-256" in signed
    (folder / "signed.eml").write_bytes(signed)
    inner = openssl(folder, "cms", "-verify", "-in", "signed.eml", "-CAfile", "root.pem",
                    "-attime", str(int(FROZEN_NOW.replace(tzinfo=dt.timezone.utc).timestamp())))
    wrapped = email.message_from_bytes(inner, policy=email.policy.compat32)
    assert wrapped.get_content_type() == "message/rfc822"
    message = wrapped.get_payload()[0]
    assert message["Message-ID"] == row["message_id"]
    assert message["Disposition-Notification-Options"] == "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true"
    parts = {p.get_content_type(): p for p in message.walk() if p.get_filename()}
    assert set(parts) >= {"text/xml", "application/zip"}
    assert b"urn:hl7-org:v3" in parts["text/xml"].get_payload(decode=True)
    assert parts["application/zip"].get_payload(decode=True)[:2] == b"PK"


# --- delivery notifications -----------------------------------------------------------------------------

def mdn(original_id: str, disposition: str, *, message_id: str, final: bool = False) -> bytes:
    fields = (f"Reporting-UA: cardio.example.org; test HISP\r\nFinal-Recipient: rfc822;{PARTNER}\r\n"
              f"Original-Message-ID: {original_id}\r\n"
              f"Disposition: automatic-action/MDN-sent-automatically;{disposition}\r\n"
              + ("X-DIRECT-FINAL-DESTINATION-DELIVERY:\r\n" if final else ""))
    return (f"From: {PARTNER}\r\nTo: {PRACTICE}\r\nSubject: {disposition.title()}\r\nMessage-ID: {message_id}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification; "
            f'boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nYour message was {disposition}.\r\n'
            f"--b1\r\nContent-Type: message/disposition-notification\r\n\r\n{fields}\r\n--b1--\r\n").encode()


def sealed_mdn(parties, p12: str, original_id: str, disposition: str, message_id: str) -> bytes:
    """An MDN as a partner's HISP sends it: the report signed by the partner and encrypted to the practice."""
    report = mdn(original_id, disposition, message_id=message_id)
    headers, body = report.split(b"\r\n\r\n", 1)
    entity = b"Content-Type: " + re.search(rb"Content-Type: ([^\r]+)", headers)[1] + b"\r\n\r\n" + body
    signed = sign(entity, load_identity(parties[p12], None))
    enveloped = encrypt(signed, [parties["practice"].cert])
    return (f"From: {PARTNER}\r\nTo: {PRACTICE}\r\nSubject: Processed\r\nMessage-ID: {message_id}\r\n"
            f"MIME-Version: 1.0\r\n").encode() + enveloped


def receive(site, cli, tmp_path, raw: bytes) -> tuple[int, dict]:
    path = tmp_path / "in.eml"
    path.write_bytes(raw)
    code, out, err = site.run(cli, "receive", path, "--json")
    return code, json.loads(out)


@pytest.fixture
def sent(site, cli, tls):
    """A referral the HISP accepted; returns (id, Message-ID)."""
    with starttls_hisp(tls) as hisp:
        site.smtp_port(hisp.port)
        referral_id = send(site, cli)
        assert worker(site, cli)["sent"] == 1
    return referral_id, referral(site, cli, referral_id)["message_id"]


def test_processed_then_dispatched_make_it_delivered(site, cli, sent, tmp_path):
    referral_id, message_id = sent
    code, outcome = receive(site, cli, tmp_path, mdn(message_id, "processed", message_id="<m1@cardio.example.org>"))
    assert (code, outcome["outcome"], outcome["matched_referral"]) == (0, "accepted", referral_id)
    assert referral(site, cli, referral_id)["status"] == "sent"
    code, outcome = receive(site, cli, tmp_path, mdn(message_id, "dispatched", message_id="<m2@cardio.example.org>",
                                                     final=True))
    assert code == 0 and "delivered" in outcome["reason"]
    row = referral(site, cli, referral_id)
    assert row["status"] == "delivered"
    assert [e["kind"] for e in row["events"]][-3:] == ["mdn-processed", "mdn-dispatched", "delivered"]
    code, outcome = receive(site, cli, tmp_path, mdn(message_id, "dispatched", message_id="<m2@cardio.example.org>"))
    assert (code, outcome["outcome"]) == (0, "duplicate")


def test_a_failed_mdn_fails_the_referral_with_its_reason(site, cli, sent, tmp_path):
    referral_id, message_id = sent
    code, outcome = receive(site, cli, tmp_path, mdn(message_id, "failed", message_id="<f1@cardio.example.org>"))
    assert code == 0
    row = referral(site, cli, referral_id)
    assert row["status"] == "failed" and "failed" in row["status_reason"]


def test_no_processed_mdn_within_the_timeout_fails_it_and_a_late_one_changes_nothing(site, cli, sent, tmp_path):
    referral_id, message_id = sent
    clock.freeze(FROZEN_NOW + dt.timedelta(minutes=59))
    assert worker(site, cli)["unconfirmed"] == 0
    clock.freeze(FROZEN_NOW + dt.timedelta(minutes=61))
    assert worker(site, cli)["unconfirmed"] == 1
    row = referral(site, cli, referral_id)
    assert row["status"] == "failed" and "no delivery confirmation" in row["status_reason"]
    code, outcome = receive(site, cli, tmp_path, mdn(message_id, "processed", message_id="<late@cardio.example.org>"))
    assert code == 0 and "after the referral settled" in outcome["reason"]
    row = referral(site, cli, referral_id)
    assert row["status"] == "failed" and row["events"][-1]["kind"] == "mdn-late"


def test_an_smime_mdn_from_the_trusted_partner_is_accepted(site, cli, sent, parties, tmp_path):
    referral_id, message_id = sent
    raw = sealed_mdn(parties, "partner_p12", message_id, "processed", "<s1@cardio.example.org>")
    code, outcome = receive(site, cli, tmp_path, raw)
    assert (code, outcome["outcome"], outcome["matched_referral"]) == (0, "accepted", referral_id)
    assert referral(site, cli, referral_id)["events"][-1]["kind"] == "mdn-processed"


def test_an_smime_mdn_signed_outside_the_trust_bundle_is_rejected(site, cli, sent, parties, tmp_path):
    referral_id, message_id = sent
    raw = sealed_mdn(parties, "outsider_p12", message_id, "processed", "<s2@cardio.example.org>")
    code, outcome = receive(site, cli, tmp_path, raw)
    assert (code, outcome["outcome"]) == (3, "rejected")
    assert "no trusted signature" in outcome["reason"]
    assert referral(site, cli, referral_id)["events"][-1]["kind"] == "sent"


def test_a_notification_about_a_message_we_never_sent_is_rejected(site, cli, sent, tmp_path):
    code, outcome = receive(site, cli, tmp_path, mdn("<nobody@else>", "processed", message_id="<x@y>"))
    assert (code, outcome["outcome"]) == (3, "rejected")


# --- when the HISP is not there, refuses, or is too old -----------------------------------------------

def test_a_hisp_that_is_down_leaves_it_queued_and_the_next_attempt_sends_the_same_message(site, cli, tls):
    port = closed_port()
    site.smtp_port(port)
    referral_id = send(site, cli)
    assert worker(site, cli)["retried"] == 1
    row = referral(site, cli, referral_id)
    assert row["status"] == "queued"
    assert row["events"][-1]["kind"] == "retry" and "next attempt" in row["events"][-1]["detail"]
    with starttls_hisp(tls, port=port) as hisp:
        assert worker(site, cli)["sent"] == 0  # not due yet
        clock.freeze(FROZEN_NOW + dt.timedelta(minutes=5))
        assert worker(site, cli)["sent"] == 1
    [got] = hisp.received
    assert email.message_from_bytes(got.content)["Message-ID"] == row["message_id"]
    assert referral(site, cli, referral_id)["status"] == "sent"
    assert hand_overs(site, cli, referral_id) == [("worker", MRN, "retry", "attempt 1"),
                                                 ("worker", MRN, "ok", "attempt 2")]


def test_a_550_fails_it_with_the_servers_reply(site, cli, tls):
    with starttls_hisp(tls, rcpt_replies={PARTNER: "550 5.1.1 mailbox unavailable"}) as hisp:
        site.smtp_port(hisp.port)
        referral_id = send(site, cli)
        assert worker(site, cli)["failed"] == 1
    row = referral(site, cli, referral_id)
    assert row["status"] == "failed" and "550 5.1.1 mailbox unavailable" in row["status_reason"]
    assert hisp.received == []
    assert hand_overs(site, cli, referral_id) == [("worker", MRN, "failed", "attempt 1")]


def test_a_hisp_offering_only_tls_1_1_is_refused(site, cli, tls):
    import ssl

    with RecordingSmtp(tls_context=server_context(tls["cert"], tls["key"],
                                                  max_version=ssl.TLSVersion.TLSv1_1)) as hisp:
        site.smtp_port(hisp.port)
        referral_id = send(site, cli)
        worker(site, cli)
    row = referral(site, cli, referral_id)
    assert row["status"] == "failed" and "TLS 1.2" in row["status_reason"]
    assert hisp.received == []


def test_a_worker_that_died_mid_send_is_replaced_and_the_message_keeps_its_id(site, cli, tls):
    from models.db import close_database, open_database, sqlite_url
    from models.outbox import claim_due_jobs

    with starttls_hisp(tls) as hisp:
        site.smtp_port(hisp.port)
        referral_id = send(site, cli)
        message_id = referral(site, cli, referral_id)["message_id"]
        open_database(sqlite_url(site.config.parent / "data" / "referdesk.db"))
        try:
            [job] = claim_due_jobs("crashed-worker", ["direct"])  # ... and then it was killed
        finally:
            close_database()
        assert worker(site, cli)["sent"] == 0  # its lease still holds
        clock.freeze(FROZEN_NOW + dt.timedelta(minutes=11))
        assert worker(site, cli)["sent"] == 1
    [got] = hisp.received
    assert email.message_from_bytes(got.content)["Message-ID"] == message_id
    row = referral(site, cli, referral_id)
    assert [e["detail"] for e in row["events"] if e["kind"] == "sending"] == ["attempt 1", "attempt 2"]


def test_a_certificate_revoked_after_queueing_fails_it_at_send_time(site, cli, tls, pki, parties):
    with starttls_hisp(tls) as hisp:
        site.smtp_port(hisp.port)
        referral_id = send(site, cli)
        pki.revoke(parties["partner"].cert)
        try:
            from transports.direct.recipient import DEFAULT_CACHES

            DEFAULT_CACHES.clear()  # the in-process CRL cache would hide the new CRL until its nextUpdate
            assert worker(site, cli)["failed"] == 1
        finally:
            pki.revoked.pop(parties["partner"].cert.serial_number)
            pki.publish_crls()
            DEFAULT_CACHES.clear()
    row = referral(site, cli, referral_id)
    assert row["status"] == "failed" and row["status_reason"].startswith("revoked")
    assert hisp.received == []


def test_without_direct_set_up_the_worker_leaves_referrals_queued_and_says_why(cli, data_dir, tmp_path):
    config = tmp_path / "empty.toml"
    config.write_text("")
    code, out, err = cli("--config", config, "--data-dir", data_dir, "worker", "--once")
    assert code == 1 and "Direct is not set up" in err


# --- verify ---------------------------------------------------------------------------------------------

def test_verify_prints_the_verdict_with_the_certificate(site, cli, parties):
    site.smtp_port(closed_port())
    code, out, err = site.run(cli, "verify", "Ruiz@Cardio.Example.org", "--json")
    verdict = json.loads(out)
    assert code == 0, verdict
    assert verdict["state"] == "verified" and verdict["binding"] == "address"
    assert verdict["fingerprint"] == parties["partner"].cert.fingerprint(hashes.SHA256()).hex()
    code, out, err = site.run(cli, "verify", "nobody@cardio.example.org")
    assert code == 1 and "no-certificate" in out
    code, out, err = site.run(cli, "verify", "not an address", "--json")
    assert code == 1 and json.loads(out)["state"] == "malformed-address"


# --- MDNs we send about messages we received ------------------------------------------------------------

def test_a_queued_mdn_leaves_signed_and_encrypted_and_says_processed(site, cli, tls, parties, data_dir):
    from models.db import close_database, open_database, sqlite_url
    from models.outbox import queue_mdn
    from models.referrals import InboundMessage
    from transports.direct.cms_open import open_message
    from transports.direct.mdn import compose_mdn
    from transports.direct.notifications import parse_notification, read_message

    open_database(sqlite_url(data_dir / "referdesk.db"))
    try:
        inbound = InboundMessage.create(message_id="<report-1@cardio.example.org>", from_address=PARTNER,
                                        received_at=FROZEN_NOW, raw=b"(stored)", mdn_requested=True)
        mdn = compose_mdn(disposition="dispatched", practice_address=PRACTICE, to=PARTNER,
                          original_message_id=inbound.message_id, original_subject="Consult report",
                          message_id="<mdn-1@direct.riverbend-family.example.org>", date=FROZEN_NOW,
                          final_destination=True)
        queue_mdn(inbound.id, PARTNER, mdn)
    finally:
        close_database()
    with starttls_hisp(tls) as hisp:
        site.smtp_port(hisp.port)
        summary = worker(site, cli)
    assert (summary["mdns"], summary["sent"]) == (1, 0), summary.log
    [got] = hisp.received
    assert got.rcpt_tos == [PARTNER]
    opened = open_message(got.content, [load_identity(parties["partner_p12"], None)])
    assert opened.encrypted and opened.signed and all(s.digest_ok and s.signature_ok for s in opened.signers)
    assert opened.signers[0].certificate == parties["practice"].cert
    message = read_message(opened.content)
    assert message["Disposition-Notification-To"] is None  # an MDN never asks for one back
    found = parse_notification(message)
    assert (found.kind, found.original_message_id, found.final_destination) == (
        "dispatched", "<report-1@cardio.example.org>", True)
