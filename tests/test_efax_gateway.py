"""Faxing through an email-to-fax gateway against a real aiosmtpd gateway on 127.0.0.1: the PDF goes out
unchanged inside verified TLS 1.2+ with nothing about the patient in the headers, the emailed report comes back
and is matched to the fax, and every failure is sorted into "retry later" or "a person must act"."""

from __future__ import annotations

import email
import email.policy
import random
import re
import ssl
import time

import pytest
from fpdf import FPDF

from direct_pki import closed_port, make_ca, make_leaf, server_context, write_key, write_pem
from loopback_fax_gateway import FaxGateway
from loopback_smtp import RecordingSmtp
from transports.direct.smtp_send import SmtpSettings, send_message
from transports.efax.base import FAILURE, IN_PROGRESS, PARTIAL, SUCCESS, FaxError, FaxRequest, FaxStatus
from transports.efax.gateway_report import GatewayReport, parse_gateway_report
from transports.efax.smtp_gateway import SmtpGatewayProvider

HOST = "127.0.0.1"
DOMAIN = "fax.example.net"
FROM = "fax@riverbend.example"
NUMBER = "15551230001"
PHI_SUBJECT = "Referral for Jane Q. Patient (DOB 1950-03-14), MRN000123: chest pain"


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fax-gateway-tls")
    ca = make_ca("Fax Gateway Test CA")
    leaf = make_leaf(ca, dns=["localhost"], ips=[HOST], cn="gateway", usage=None)
    return {"ca": str(write_pem(folder / "ca.pem", ca.cert)), "cert": str(write_pem(folder / "gw.pem", leaf.cert)),
            "key": str(write_key(folder / "gw.key", leaf.key))}


@pytest.fixture(scope="session")
def pdf() -> bytes:
    document = FPDF()
    for page in (1, 2):
        document.add_page()
        document.set_font("Helvetica", size=12)
        document.cell(text=f"Referral packet, page {page}")
    return bytes(document.output())


def gateway(tls, **kwargs) -> FaxGateway:
    return FaxGateway(DOMAIN, tls_context=server_context(tls["cert"], tls["key"]), **kwargs)


def provider(port: int, tls, domain: str = DOMAIN) -> SmtpGatewayProvider:
    settings = SmtpSettings(host=HOST, port=port, ca_file=tls["ca"], timeout=5)
    return SmtpGatewayProvider(settings, domain, FROM, env={})


def request(pdf: bytes, *, to: str = "+" + NUMBER, reference: str = "<efax-7-1@referdesk.riverbend.example>"):
    return FaxRequest(to=to, pdf=pdf, filename="referral-MRN000123-20261102.pdf",
                      header_text="Riverbend Family Medicine +1 555 010 0100", subject=PHI_SUBJECT,
                      reference=reference)


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


# --- sending ------------------------------------------------------------------------------------------------

async def test_pdf_arrives_unchanged_at_the_number_over_tls(tls, pdf):
    with gateway(tls) as server:
        fax_id = await provider(server.port, tls).send(request(pdf))
    assert fax_id == "<efax-7-1@referdesk.riverbend.example>"
    [fax] = server.faxes
    assert (fax.number, fax.pdf, fax.message_id, fax.mail_from) == (NUMBER, pdf, fax_id, FROM)
    assert fax.tls_version in ("TLSv1.2", "TLSv1.3")
    message = email.message_from_bytes(fax.raw, policy=email.policy.default)
    assert message["To"] == f"{NUMBER}@{DOMAIN}" and message["From"] == FROM and message["Date"]
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == "referral-MRN000123-20261102.pdf"


async def test_no_patient_information_in_the_headers(tls, pdf):
    with gateway(tls) as server:
        await provider(server.port, tls).send(request(pdf))
    raw = server.faxes[0].raw
    headers = header_block(raw).decode("ascii")
    assert PHI_SUBJECT not in headers and "Jane" not in headers
    assert PHI_SUBJECT.encode() not in raw  # nor in the body, which gateways print on the cover page
    assert re.search(r"^Subject: Fax [0-9a-f]{8}\r?$", headers, re.M)


async def test_a_bare_reference_is_made_a_message_id(tls, pdf):
    with gateway(tls) as server:
        fax_id = await provider(server.port, tls).send(request(pdf, reference="efax-9-2"))
    assert fax_id == "<efax-9-2@riverbend.example>" == server.faxes[0].message_id


async def test_login_uses_the_password_from_env(tls, pdf):
    with RecordingSmtp(tls_context=server_context(tls["cert"], tls["key"]), users={"clinic": "pw 1"}) as server:
        settings = SmtpSettings(host=HOST, port=server.port, ca_file=tls["ca"], timeout=5, username="clinic",
                                password_env="FAX_PW")
        await SmtpGatewayProvider(settings, DOMAIN, FROM, env={"FAX_PW": "pw 1"}).send(request(pdf))
        with pytest.raises(FaxError, match=r"not available: set \$FAX_PW$") as caught:
            await SmtpGatewayProvider(settings, DOMAIN, FROM, env={}).send(request(pdf))
    assert server.logins == [("PLAIN", "clinic", True)] and len(server.received) == 1
    assert caught.value.transient is False


async def test_status_waits_for_the_report_and_cancel_is_refused():
    fax = SmtpGatewayProvider(SmtpSettings(host=HOST, port=closed_port()), DOMAIN, FROM, env={})
    assert await fax.status("<x@y>") == FaxStatus(IN_PROGRESS)
    with pytest.raises(FaxError, match="^an email-to-fax gateway cannot cancel a fax once mailed$") as caught:
        await fax.cancel("<x@y>")
    assert caught.value.transient is False
    assert fax.name == "smtp-gateway"


# --- the report ---------------------------------------------------------------------------------------------

async def test_success_report_is_matched_to_the_fax(tls, pdf):
    with gateway(tls) as server:
        fax_id = await provider(server.port, tls).send(request(pdf))
        await server.settled()
    [raw] = server.reports
    report = parse_gateway_report(raw)
    assert report == GatewayReport(fax_id, FaxStatus(SUCCESS, pages=2), NUMBER)
    message = email.message_from_bytes(raw)
    assert (message["From"], message["To"], message["In-Reply-To"]) == (f"reports@{DOMAIN}", FROM, fax_id)


async def test_busy_busy_then_success(tls, pdf):
    with gateway(tls) as server:
        server.script(NUMBER, ["busy", "busy", "success"])
        fax = provider(server.port, tls)
        ids = [await fax.send(request(pdf, reference=f"<efax-7-{n}@referdesk.riverbend.example>"))
               for n in (1, 2, 3)]
        await server.settled()
    reports = [parse_gateway_report(raw) for raw in server.reports]
    assert [r.fax_id for r in reports] == ids
    assert [r.status for r in reports] == [FaxStatus(FAILURE, reason="Busy", transient=True, pages=0)] * 2 + [
        FaxStatus(SUCCESS, pages=2)]


@pytest.mark.parametrize("outcome, reason, transient", [
    ("busy", "Busy", True),
    ("no-answer", "No answer", True),
    ("line-error", "Line error", True),
    ("bad-number", "Invalid number", False),
    ("conversion", "Document conversion failed", False),
])
async def test_failed_reports_are_sorted(tls, pdf, outcome, reason, transient):
    with gateway(tls) as server:
        server.script(NUMBER, [outcome])
        fax_id = await provider(server.port, tls).send(request(pdf))
        await server.settled()
    report = parse_gateway_report(server.reports[0])
    assert report == GatewayReport(fax_id, FaxStatus(FAILURE, reason=reason, transient=transient, pages=0), NUMBER)


async def test_report_mailed_back_to_the_practice_is_read_from_what_arrived(tls, pdf):
    """The gateway mails its report over SMTP (same client, same TLS rules) to the practice's mail server."""
    with RecordingSmtp(tls_context=server_context(tls["cert"], tls["key"])) as inbox:
        inbox_settings = SmtpSettings(host=HOST, port=inbox.port, ca_file=tls["ca"], timeout=5)

        async def mail_back(report: bytes) -> None:
            await send_message(report, mail_from=f"reports@{DOMAIN}", rcpt_to=[FROM], settings=inbox_settings, env={})

        with gateway(tls, report_to=mail_back) as server:
            server.script(NUMBER, ["no-answer"])
            fax_id = await provider(server.port, tls).send(request(pdf))
            await server.settled()
    [arrived] = inbox.received
    assert arrived.rcpt_tos == [FROM] and arrived.tls
    assert parse_gateway_report(arrived.content) == GatewayReport(
        fax_id, FaxStatus(FAILURE, reason="No answer", transient=True, pages=0), NUMBER)


# --- refusals and outages -----------------------------------------------------------------------------------

async def test_550_for_the_number_is_permanent(tls, pdf):
    with gateway(tls) as server:
        server.refuse(NUMBER, "550 5.1.1 not a fax number")
        with pytest.raises(FaxError) as caught:
            await provider(server.port, tls).send(request(pdf))
    assert caught.value.transient is False
    assert str(caught.value) == (f"127.0.0.1:{server.port} refused the recipient {NUMBER}@{DOMAIN}: "
                                 "550 5.1.1 not a fax number")
    assert not server.faxes and not server.reports


async def test_wrong_gateway_domain_is_refused_permanently(tls, pdf):
    with gateway(tls) as server:
        with pytest.raises(FaxError, match="550 5.7.1 relaying denied") as caught:
            await provider(server.port, tls, domain="fax.other.example").send(request(pdf))
    assert caught.value.transient is False and not server.faxes


async def test_451_is_transient(tls, pdf):
    with gateway(tls) as server:
        server.refuse(NUMBER, "451 4.3.0 fax queue full, try later")
        with pytest.raises(FaxError, match="451 4.3.0") as caught:
            await provider(server.port, tls).send(request(pdf))
    assert caught.value.transient is True


async def test_gateway_down_is_transient(tls, pdf):
    port = closed_port()
    with pytest.raises(FaxError) as caught:
        await provider(port, tls).send(request(pdf))
    assert caught.value.transient is True
    assert str(caught.value).startswith(f"cannot reach 127.0.0.1:{port}: connection refused")


async def test_gateway_with_only_tls_1_1_gets_nothing(tls, pdf):
    context = server_context(tls["cert"], tls["key"], max_version=ssl.TLSVersion.TLSv1_1)
    with FaxGateway(DOMAIN, tls_context=context) as server:
        with pytest.raises(FaxError) as caught:
            await provider(server.port, tls).send(request(pdf))
    message = str(caught.value)
    if "offers only" in message:  # this OpenSSL still speaks TLS 1.1 at security level 0: version named
        assert caught.value.transient is False
        assert message == f"127.0.0.1:{server.port} offers only TLS 1.1; referdesk requires TLS 1.2 or newer"
    else:  # an OpenSSL built without TLS < 1.2 cannot tell: the handshake still fails, and says so
        assert message.startswith(f"TLS handshake with 127.0.0.1:{server.port} failed")
    assert not server.faxes


@pytest.mark.parametrize("to", ["555-0100", "+1555", "+0155512300", "fax: 15551230001", ""])
async def test_a_number_not_in_e164_connects_nowhere(pdf, to):
    with pytest.raises(FaxError, match="not in international") as caught:
        await provider(closed_port(), {"ca": None}).send(request(pdf, to=to))
    assert caught.value.transient is False


async def test_an_empty_pdf_is_refused(pdf):
    with pytest.raises(FaxError, match="no PDF") as caught:
        await provider(closed_port(), {"ca": None}).send(request(b""))
    assert caught.value.transient is False


# --- reading reports as gateways word them ------------------------------------------------------------------

FAX_ID = "<efax-7-1@referdesk.riverbend.example>"


def mail(headers: str, body: str, *, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = headers.strip("\n").replace("\n", "\r\n")
    return (f"{head}\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n"
            + body.replace("\n", "\r\n")).encode("utf-8")


def attached_original(subject: str, body: str) -> bytes:
    boundary = "b0undary"
    return mail(f"From: noreply@fax.example.net\nSubject: {subject}", (
        f"--{boundary}\nContent-Type: text/plain\n\n{body}\n"
        f"--{boundary}\nContent-Type: message/rfc822\n\n"
        f"From: {FROM}\nTo: {NUMBER}@{DOMAIN}\nSubject: Fax 1a2b3c4d\nMessage-ID: {FAX_ID}\n\n"
        f"Fax from Riverbend.\n--{boundary}--\n"), content_type=f'multipart/mixed; boundary="{boundary}"')


WORDINGS = {
    "busy, sentence and pages-of": (
        mail(f"From: Fax Service <noreply@efax.example>\nSubject: Fax Delivery Failure - {NUMBER}\n"
             f"In-Reply-To: {FAX_ID}",
             "Your fax to 1-555-123-0001 could not be delivered.\n\nReason: The line was busy.\nPages sent: 0 of 3\n"),
        GatewayReport(FAX_ID, FaxStatus(FAILURE, "The line was busy.", True, 0), "")),
    "result sent": (
        mail(f"From: service@fax.example.net\nSubject: Fax Transmission Results\nReferences: {FAX_ID}",
             f"Here are your fax transmission results.\n\nTo: {NUMBER}\nResult: Sent\nPages: 3\n"),
        GatewayReport(FAX_ID, FaxStatus(SUCCESS, pages=3), NUMBER)),
    "prose only": (
        mail(f"From: a@b.example\nSubject: Your fax\nReferences: {FAX_ID} <other@b.example>",
             "Sent: Mon, 2 Nov 2026 10:00\nYour fax was successfully sent. 4 pages were transmitted.\n"
             "Fax Number: +1 (555) 123-0001\n"),
        GatewayReport(FAX_ID, FaxStatus(SUCCESS, pages=4), NUMBER)),
    "html table": (
        mail(f"From: a@fax.example\nSubject: Fax report\nIn-Reply-To: {FAX_ID}",
             "<html><body><table><tr><td>Status:</td><td>Failed</td></tr><tr><td>Error:</td><td>No&nbsp;Answer"
             "</td></tr><tr><td>Pages:</td><td>0</td></tr></table></body></html>", content_type="text/html"),
        GatewayReport(FAX_ID, FaxStatus(FAILURE, "No Answer", True, 0), "")),
    "attached original, not a fax machine": (
        attached_original("Fax failed: not a fax machine", "We could not send your fax."),
        GatewayReport(FAX_ID, FaxStatus(FAILURE, "Fax failed: not a fax machine", False), NUMBER)),
    "x-fax-reference, unallocated": (
        mail("From: fax@gw.example\nSubject: Notification",
             f"X-Fax-Reference: {FAX_ID}\nFax Status: Failed\nError: Unallocated number\nTo Fax: +{NUMBER}\n"),
        GatewayReport(FAX_ID, FaxStatus(FAILURE, "Unallocated number", False), NUMBER)),
    "partial, call dropped": (
        mail(f"From: fax@gw.example\nSubject: Fax report\nIn-Reply-To: {FAX_ID}",
             "Status: Failed\nPages sent: 2 of 5\nReason: Call dropped\n"),
        GatewayReport(FAX_ID, FaxStatus(PARTIAL, "Call dropped", True, 2), "")),
    "unknown reason is permanent": (
        mail(f"From: fax@gw.example\nSubject: Fax report\nIn-Reply-To: {FAX_ID}", "Status: Failed\nReason: E-0x1F3\n"),
        GatewayReport(FAX_ID, FaxStatus(FAILURE, "E-0x1F3", False), "")),
    "unsupported file": (
        mail(f"From: fax@gw.example\nSubject: Fax failure\nIn-Reply-To: {FAX_ID}",
             "Status: Failure\nReason: Unsupported file type\n"),
        GatewayReport(FAX_ID, FaxStatus(FAILURE, "Unsupported file type", False), "")),
    "negated success in the subject": (
        mail(f"From: fax@gw.example\nSubject: Fax not successfully sent\nIn-Reply-To: {FAX_ID}",
             "Failure reason: Ring-no-answer\n"),
        GatewayReport(FAX_ID, FaxStatus(FAILURE, "Ring-no-answer", True), "")),
    "success word beaten by failure in the subject": (
        mail(f"From: fax@gw.example\nSubject: Fax sent notification: FAILED\nIn-Reply-To: {FAX_ID}",
             "Cause: communication error\n"),
        GatewayReport(FAX_ID, FaxStatus(FAILURE, "communication error", True), "")),
    "encoded subject": (
        mail(f"From: fax@gw.example\nSubject: =?utf-8?q?T=C3=A9l=C3=A9copie_r=C3=A9ussie?=\nIn-Reply-To: {FAX_ID}",
             "Fax status: Delivered\nPages: 1\n"),
        GatewayReport(FAX_ID, FaxStatus(SUCCESS, pages=1), "")),
    "bounce (DSN) from the gateway": (
        mail("From: MAILER-DAEMON@fax.example.net\nSubject: Undelivered Mail Returned to Sender", (
            "--dsn\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
            "--dsn\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; fax.example.net\n\n"
            f"Final-Recipient: rfc822; {NUMBER}@{DOMAIN}\nAction: failed\nStatus: 5.1.1\n"
            "Diagnostic-Code: smtp; 550 5.1.1 not a fax number\n"
            f"--dsn\nContent-Type: text/rfc822-headers\n\nMessage-ID: {FAX_ID}\nSubject: Fax 1a2b3c4d\n--dsn--\n"),
             content_type='multipart/report; report-type=delivery-status; boundary="dsn"'),
        GatewayReport(FAX_ID, FaxStatus(FAILURE, "status 5.1.1 550 5.1.1 not a fax number", False), NUMBER)),
}


@pytest.mark.parametrize("raw, expected", list(WORDINGS.values()), ids=list(WORDINGS))
def test_report_wordings(raw, expected):
    assert parse_gateway_report(raw) == expected


def test_raw_8bit_headers_are_read():
    raw = (b"From: fax@gw.example\r\nSubject: Fax r\xe9sultat \xff\xfe\r\nIn-Reply-To: " + FAX_ID.encode()
           + b"\r\n\r\nStatut\xe9: x\r\nStatus: Success\r\n")
    assert parse_gateway_report(raw) == GatewayReport(FAX_ID, FaxStatus(SUCCESS), "")


@pytest.mark.parametrize("raw", [
    mail(f"From: colleague@clinic.example\nSubject: Re: referral\nIn-Reply-To: {FAX_ID}",
         "Thanks, the chart was delivered to Dr Smith.\n"),  # a reply, not a fax report
    mail("From: fax@gw.example\nSubject: Fax delivery report: Success", "Status: Success\n"),  # names no fax
    mail(f"From: fax@gw.example\nSubject: Fax cover sheet question\nIn-Reply-To: {FAX_ID}",
         "Which cover sheet do you use?\n"),  # says nothing about an outcome
    mail("From: MAILER-DAEMON@x.example\nSubject: Delayed", (
        "--d\nContent-Type: message/delivery-status\n\n"
        f"Final-Recipient: rfc822; {NUMBER}@{DOMAIN}\nAction: delayed\nStatus: 4.4.1\n--d--\n"),
        content_type='multipart/report; report-type=delivery-status; boundary="d"'),
], ids=["reply", "no-id", "no-outcome", "dsn-delayed"])
def test_not_a_report(raw):
    assert parse_gateway_report(raw) is None


def _nested(depth: int) -> bytes:
    head = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
    return (f"Subject: Fax failed\r\nIn-Reply-To: {FAX_ID}\r\n" + head).encode()


GARBAGE = {
    "empty": b"",
    "binary": bytes(random.Random(5).randrange(256) for _ in range(200_000)),
    "nuls and 0xff": b"\x00\xff" * 50_000,
    "huge": b"Subject: Fax failed\r\n\r\n" + b"A" * 20_000_000,
    "huge header line": b"Subject: " + b"fax " * 2_000_000 + b"\r\n\r\nStatus: Failed\r\n",
    "deep nesting": _nested(5000),
    "bad base64": mail("Subject: Fax failed\nIn-Reply-To: <broken", "Status: ===\x00", content_type="text/plain")
                  .replace(b"\r\n\r\n", b"\r\nContent-Transfer-Encoding: base64\r\n\r\n", 1),
    "unknown charset": mail("Subject: fax\nIn-Reply-To: <a b>", "Status: Failed",
                            content_type="text/plain; charset=x-no-such"),
    "header only": b"In-Reply-To: " + FAX_ID.encode(),
    "not bytes": "Subject: Fax failed\r\nIn-Reply-To: <a@b>\r\n\r\nStatus: Failed",
    "none": None,
}


@pytest.mark.parametrize("raw", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_is_not_a_report_and_never_raises(raw):
    started = time.monotonic()
    assert parse_gateway_report(raw) is None
    assert time.monotonic() - started < 2


# --- configuration ------------------------------------------------------------------------------------------

def test_from_config():
    fax = SmtpGatewayProvider.from_config({"gateway_domain": " Fax.Example.NET. "}, {"host": "hisp.example"},
                                          {"PW": "x"}, "referrals@riverbend.example")
    assert (fax.gateway_domain, fax.from_address, fax.settings.host) == (
        "fax.example.net", "referrals@riverbend.example", "hisp.example")
    assert fax.env == {"PW": "x"} and fax.address_for("+15551230001") == "15551230001@fax.example.net"
    own = SmtpGatewayProvider.from_config(
        {"gateway_domain": "fax.example.net", "from_address": FROM,
         "smtp": {"host": "smtp.gateway.example", "port": 465, "username": "clinic"}},
        {"host": "hisp.example"}, {}, "referrals@riverbend.example")
    assert (own.from_address, own.settings.host, own.settings.implicit_tls, own.settings.username) == (
        FROM, "smtp.gateway.example", True, "clinic")


@pytest.mark.parametrize("efax, smtp, default_from, words", [
    ({}, {"host": "h.example"}, FROM, "[efax] gateway_domain is missing"),
    ({"gateway_domain": "  "}, {"host": "h.example"}, FROM, "[efax] gateway_domain is missing"),
    ({"gateway_domain": 7}, {"host": "h.example"}, FROM, "[efax] gateway_domain is missing"),
    ({"gateway_domain": "@fax.example.net"}, {"host": "h.example"}, FROM, "is not a domain name"),
    ({"gateway_domain": "https://fax.example.net"}, {"host": "h.example"}, FROM, "is not a domain name"),
    ({"gateway_domain": "fax..example.net"}, {"host": "h.example"}, FROM, "is not a domain name"),
    ({"gateway_domain": "-fax.example.net"}, {"host": "h.example"}, FROM, "is not a domain name"),
    ({"gateway_domain": "localhost"}, {"host": "h.example"}, FROM, "is not a domain name"),
    ({"gateway_domain": "10.0.0.1"}, {"host": "h.example"}, FROM, "is not a domain name"),
    ({"gateway_domain": "fax example.net"}, {"host": "h.example"}, FROM, "is not a domain name"),
    ({"gateway_domain": DOMAIN}, {"host": "h.example"}, None, "[efax] from_address is missing"),
    ({"gateway_domain": DOMAIN, "from_address": "front desk"}, {"host": "h.example"}, None,
     "[efax] from_address 'front desk' is not an email address"),
    ({"gateway_domain": DOMAIN}, {}, FROM, "[smtp] host is missing"),
    ({"gateway_domain": DOMAIN, "smtp": {"host": "g.example", "port": 0}}, {"host": "h.example"}, FROM,
     "[efax.smtp] port 0 is not a TCP port"),
    ({"gateway_domain": DOMAIN, "smtp": "g.example"}, {"host": "h.example"}, FROM, "[efax] smtp must be a table"),
])
def test_bad_config_is_named(efax, smtp, default_from, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        SmtpGatewayProvider.from_config(efax, smtp, {}, default_from)
