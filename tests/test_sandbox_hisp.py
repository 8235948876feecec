"""The sandbox's HISP and eFax gateway against real servers on 127.0.0.1: mail is relayed byte for byte inside
verified TLS to the route for its domain, the sender hears the truth about the onward hop (550 no route, 451
down, the route's own 5xx), and a fax mailed by referdesk's own gateway provider is "printed" to a 0600 file
and answered by a report that referdesk's report reader matches to it."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import ssl
import stat
import warnings

import aiosmtplib
import pytest
from fpdf import FPDF

from direct_pki import closed_port, make_ca, make_leaf, server_context, write_key, write_pem
from loopback_smtp import RecordingSmtp
from transports.direct.smtp_check import client_context
from transports.direct.smtp_send import PermanentSendError, SmtpSettings, TransientSendError, send_message
from transports.efax.base import FAILURE, SUCCESS, FaxRequest
from transports.efax.gateway_report import parse_gateway_report
from transports.efax.smtp_gateway import SmtpGatewayProvider
from transports.sandbox.fax_gateway import DemoFaxGateway, count_pages
from transports.sandbox.hisp import DemoHisp

HOST = "127.0.0.1"
SENDER = "referrals@direct.riverbend.example"
PARTNER = "intake@direct.partner.example"
OTHER = "desk@direct.other.example"
FAX_DOMAIN = "fax.sandbox.example"
FAX_FROM = "fax@direct.riverbend.example"
NUMBER = "15551230001"


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sandbox-hisp-tls")
    ca = make_ca("Sandbox HISP Test CA")
    leaf = make_leaf(ca, dns=["localhost"], ips=[HOST], cn="sandbox", usage=None)
    return {"ca": str(write_pem(folder / "ca.pem", ca.cert)), "cert": str(write_pem(folder / "leaf.pem", leaf.cert)),
            "key": str(write_key(folder / "leaf.key", leaf.key))}


@pytest.fixture(scope="session")
def pdf() -> bytes:
    document = FPDF()
    for page in (1, 2):
        document.add_page()
        document.set_font("Helvetica", size=12)
        document.cell(text=f"Referral packet, page {page}")
    return bytes(document.output())


def tls(pki) -> ssl.SSLContext:
    return server_context(pki["cert"], pki["key"])


def recorder(pki, **kwargs) -> RecordingSmtp:
    return RecordingSmtp(tls_context=tls(pki), **kwargs)


def settings(pki, port: int) -> SmtpSettings:
    return SmtpSettings(host=HOST, port=port, ca_file=pki["ca"], timeout=5)


def message(n: int, to: str = PARTNER) -> bytes:
    return (f"From: {SENDER}\r\nTo: {to}\r\nSubject: test {n}\r\nMessage-ID: <m{n}@riverbend.example>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAxggE=\r\n.leading dot\r\n"
            "\r\n").encode()


@contextlib.asynccontextmanager
async def running(*services):
    started = []
    try:
        for service in services:
            await service.start()
            started.append(service)
        yield services
    finally:
        for service in reversed(started):
            await service.stop()


async def plain_session(port: int, context: ssl.SSLContext | None = None) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False, tls_context=context, timeout=5)
    await client.connect()
    await client.ehlo()
    return client


# --- the HISP -------------------------------------------------------------------------------------------------

async def test_relays_the_exact_bytes_over_tls_to_the_route_for_the_domain(pki):
    with recorder(pki) as partner, recorder(pki) as other:
        hisp = DemoHisp(tls(pki), pki["ca"], {"direct.partner.example": (HOST, partner.port),
                                              "direct.other.example": (HOST, other.port)})
        async with running(hisp):
            raw = message(1)
            receipt = await send_message(raw, mail_from=SENDER, rcpt_to=["intake@Direct.Partner.Example"],
                                         settings=settings(pki, hisp.port))
    assert receipt.code == 250
    [got] = partner.received
    assert (got.content, got.mail_from, got.tls) == (raw, SENDER, True)
    assert got.rcpt_tos == ["intake@Direct.Partner.Example"] and other.received == []
    [entry] = hisp.log
    assert (entry.mail_from, entry.rcpt_tos, entry.outcome[:3]) == (SENDER, ("intake@Direct.Partner.Example",), "250")


async def test_two_recipients_on_two_routes_both_get_it(pki):
    with recorder(pki) as partner, recorder(pki) as other:
        hisp = DemoHisp(tls(pki), pki["ca"], {"direct.partner.example": (HOST, partner.port),
                                              "direct.other.example": (HOST, other.port)})
        async with running(hisp):
            raw = message(2)
            await send_message(raw, mail_from=SENDER, rcpt_to=[PARTNER, OTHER], settings=settings(pki, hisp.port))
    assert [(r.rcpt_tos, r.content) for r in partner.received] == [([PARTNER], raw)]
    assert [(r.rcpt_tos, r.content) for r in other.received] == [([OTHER], raw)]


async def test_a_null_sender_notification_is_relayed_too(pki):
    with recorder(pki) as partner:
        hisp = DemoHisp(tls(pki), pki["ca"], {"direct.partner.example": (HOST, partner.port)})
        async with running(hisp):
            await send_message(message(11), mail_from="", rcpt_to=[PARTNER], settings=settings(pki, hisp.port))
    assert [(r.mail_from, r.content) for r in partner.received] == [("<>", message(11))]


async def test_an_unknown_domain_is_refused_at_rcpt(pki):
    hisp = DemoHisp(tls(pki), pki["ca"], {})
    async with running(hisp):
        with pytest.raises(PermanentSendError) as refused:
            await send_message(message(3), mail_from=SENDER, rcpt_to=[PARTNER], settings=settings(pki, hisp.port))
    assert refused.value.reply_code == 550
    assert "550 5.1.2 no route to direct.partner.example in the sandbox" in str(refused.value)
    assert list(hisp.log) == []


async def test_a_route_that_is_down_is_a_451_and_the_sender_keeps_the_message(pki):
    hisp = DemoHisp(tls(pki), pki["ca"], {"direct.partner.example": (HOST, closed_port())})
    async with running(hisp):
        with pytest.raises(TransientSendError) as later:
            await send_message(message(4), mail_from=SENDER, rcpt_to=[PARTNER], settings=settings(pki, hisp.port))
    assert later.value.reply_code == 451 and "direct.partner.example" in str(later.value)
    assert hisp.log[-1].outcome.startswith("451 ")


async def test_a_route_with_an_untrusted_certificate_is_a_451(pki, tmp_path):
    stranger = make_ca("Some Other CA")
    leaf = make_leaf(stranger, ips=[HOST], cn="stranger", usage=None)
    context = server_context(write_pem(tmp_path / "s.pem", leaf.cert), write_key(tmp_path / "s.key", leaf.key))
    with RecordingSmtp(tls_context=context) as partner:
        hisp = DemoHisp(tls(pki), pki["ca"], {"direct.partner.example": (HOST, partner.port)})
        async with running(hisp):
            with pytest.raises(TransientSendError) as later:
                await send_message(message(5), mail_from=SENDER, rcpt_to=[PARTNER],
                                   settings=settings(pki, hisp.port))
    assert later.value.reply_code == 451 and "not trusted" in str(later.value)
    assert partner.received == []


async def test_a_route_that_refuses_passes_its_own_5xx_to_the_sender(pki):
    with recorder(pki, rcpt_replies={PARTNER: "550 5.1.1 mailbox unavailable"}) as partner:
        hisp = DemoHisp(tls(pki), pki["ca"], {"direct.partner.example": (HOST, partner.port)})
        async with running(hisp):
            with pytest.raises(PermanentSendError) as refused:
                await send_message(message(6), mail_from=SENDER, rcpt_to=[PARTNER],
                                   settings=settings(pki, hisp.port))
    assert refused.value.reply_code == 550 and "550 5.1.1 mailbox unavailable" in str(refused.value)
    assert hisp.log[-1].outcome == "550 5.1.1 mailbox unavailable"


async def test_one_route_refusing_fails_the_message_even_when_another_took_it(pki):
    with recorder(pki) as partner, recorder(pki, data_reply="554 5.6.0 content refused") as other:
        hisp = DemoHisp(tls(pki), pki["ca"], {"direct.partner.example": (HOST, partner.port),
                                              "direct.other.example": (HOST, other.port)})
        async with running(hisp):
            with pytest.raises(PermanentSendError) as refused:
                await send_message(message(7), mail_from=SENDER, rcpt_to=[PARTNER, OTHER],
                                   settings=settings(pki, hisp.port))
    assert refused.value.reply_code == 554 and "content refused" in str(refused.value)


async def test_routes_change_at_runtime(pki):
    with recorder(pki) as partner:
        hisp = DemoHisp(tls(pki), pki["ca"], {"direct.partner.example": (HOST, closed_port())})
        async with running(hisp):
            hisp.set_route("Direct.Partner.Example.", HOST, partner.port)
            await send_message(message(8), mail_from=SENDER, rcpt_to=[PARTNER], settings=settings(pki, hisp.port))
            hisp.remove_route("direct.partner.example")
            with pytest.raises(PermanentSendError):
                await send_message(message(9), mail_from=SENDER, rcpt_to=[PARTNER],
                                   settings=settings(pki, hisp.port))
    assert len(partner.received) == 1 and hisp.status()["routes"] == {}


async def test_mail_before_starttls_is_refused_with_530(pki):
    with recorder(pki) as partner:
        hisp = DemoHisp(tls(pki), pki["ca"], {"direct.partner.example": (HOST, partner.port)})
        async with running(hisp):
            client = await plain_session(hisp.port)
            assert client.supports_extension("starttls")
            with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
                await client.mail(SENDER)
            assert refused.value.code == 530
            await client.quit()
    assert partner.received == [] and partner.mail_commands == []


async def test_a_tls_1_1_only_client_is_refused_and_the_next_one_served(pki):
    legacy = client_context(pki["ca"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy.minimum_version = ssl.TLSVersion.TLSv1
        legacy.maximum_version = ssl.TLSVersion.TLSv1_1
    legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
    with recorder(pki) as partner:
        hisp = DemoHisp(tls(pki), pki["ca"], {"direct.partner.example": (HOST, partner.port)})
        async with running(hisp):
            client = await plain_session(hisp.port, legacy)
            with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError, ConnectionError)):
                await client.starttls()
            client.close()
            await send_message(message(10), mail_from=SENDER, rcpt_to=[PARTNER], settings=settings(pki, hisp.port))
    assert len(partner.received) == 1


async def test_stop_closes_the_port_and_sessions_and_leaves_no_tasks(pki, tmp_path, pdf):
    hisp = DemoHisp(tls(pki), pki["ca"], {})
    gateway = DemoFaxGateway(FAX_DOMAIN, tls(pki), tmp_path / "faxes", relay=(HOST, closed_port()),
                             ca_file=pki["ca"], report_delay=60)
    await hisp.start()
    await gateway.start()
    hisp.set_route(FAX_DOMAIN, HOST, gateway.port)
    provider = SmtpGatewayProvider(settings(pki, hisp.port), FAX_DOMAIN, FAX_FROM, env={})
    await provider.send(fax(pdf, "<efax-0-1@referdesk.riverbend.example>"))  # its report is a minute away
    idle = await plain_session(hisp.port)  # clients still connected when the sandbox stops, one inside TLS
    inside = await plain_session(gateway.port, client_context(pki["ca"]))
    await inside.starttls()
    started = asyncio.get_running_loop().time()
    await gateway.stop()
    await hisp.stop()
    assert asyncio.get_running_loop().time() - started < 2
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    for port in (hisp.port, gateway.port):
        with pytest.raises(OSError):
            await asyncio.open_connection(HOST, port)
    idle.close()
    inside.close()


# --- the fax gateway ----------------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def fax_world(pki, tmp_path, **gateway_kwargs):
    """practice stand-in <- HISP <-> gateway, with referdesk's provider mailing faxes to the HISP."""
    with recorder(pki) as practice:
        hisp = DemoHisp(tls(pki), pki["ca"], {"direct.riverbend.example": (HOST, practice.port)})
        async with running(hisp):
            gateway = DemoFaxGateway(FAX_DOMAIN, tls(pki), tmp_path / "faxes", relay=(HOST, hisp.port),
                                     ca_file=pki["ca"], report_delay=0.05, **gateway_kwargs)
            async with running(gateway):
                hisp.set_route(FAX_DOMAIN, HOST, gateway.port)
                provider = SmtpGatewayProvider(settings(pki, hisp.port), FAX_DOMAIN, FAX_FROM, env={})
                yield practice, gateway, provider


def fax(pdf: bytes, reference: str) -> FaxRequest:
    return FaxRequest(to="+" + NUMBER, pdf=pdf, filename="referral.pdf", header_text="Riverbend +1 555 010 0100",
                      subject="Referral", reference=reference)


async def test_a_fax_is_printed_to_a_private_file_and_reported_back(pki, tmp_path, pdf):
    async with fax_world(pki, tmp_path) as (practice, gateway, provider):
        fax_id = await provider.send(fax(pdf, "<efax-1-1@referdesk.riverbend.example>"))
        await gateway.settled()
    [(digits, path, message_id, outcome)] = gateway.faxes
    assert (digits, message_id, outcome) == (NUMBER, fax_id, "success")
    assert path.name == f"fax-{NUMBER}-20261102-100000-1.pdf" and path.read_bytes() == pdf
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    [report] = practice.received
    assert (report.mail_from, report.rcpt_tos, report.tls) == (f"reports@{FAX_DOMAIN}", [FAX_FROM], True)
    parsed = parse_gateway_report(report.content)
    assert (parsed.fax_id, parsed.status.state, parsed.status.pages, parsed.number) == (fax_id, SUCCESS, 2, NUMBER)
    headers = email.message_from_bytes(report.content, policy=email.policy.default)
    assert headers["To"] == FAX_FROM and headers["Subject"] == "Fax delivery report: Success"
    assert headers["Message-ID"].startswith("<report-") and headers["Message-ID"].endswith(f"@{FAX_DOMAIN}>")
    assert gateway.reports_sent == 1 and gateway.last_error == ""


async def test_a_scripted_busy_line_is_reported_as_a_transient_failure(pki, tmp_path, pdf):
    async with fax_world(pki, tmp_path) as (practice, gateway, provider):
        gateway.script(NUMBER, ["busy"])
        first = await provider.send(fax(pdf, "<efax-2-1@referdesk.riverbend.example>"))
        second = await provider.send(fax(pdf, "<efax-2-2@referdesk.riverbend.example>"))
        await gateway.settled()
    assert [(f.outcome, f.path is None) for f in gateway.faxes] == [("busy", True), ("success", False)]
    reports = {r.fax_id: r.status for r in map(parse_gateway_report, (m.content for m in practice.received))}
    assert (reports[first].state, reports[first].reason, reports[first].transient) == (FAILURE, "Busy", True)
    assert reports[second].state == SUCCESS
    with pytest.raises(ValueError):
        gateway.script(NUMBER, ["on-fire"])


async def test_a_bad_number_and_a_missing_attachment_are_permanent_failures(pki, tmp_path, pdf):
    async with fax_world(pki, tmp_path) as (practice, gateway, provider):
        gateway.script(NUMBER, ["bad-number"])
        bad = await provider.send(fax(pdf, "<efax-3-1@referdesk.riverbend.example>"))
        bare = (f"From: {FAX_FROM}\r\nTo: {NUMBER}@{FAX_DOMAIN}\r\nSubject: Fax\r\n"
                "Message-ID: <efax-3-2@referdesk.riverbend.example>\r\n\r\nno PDF here\r\n").encode()
        await send_message(bare, mail_from=FAX_FROM, rcpt_to=[f"{NUMBER}@{FAX_DOMAIN}"],
                           settings=settings(pki, provider.settings.port))
        await gateway.settled()
    reports = {r.fax_id: r.status for r in map(parse_gateway_report, (m.content for m in practice.received))}
    assert (reports[bad].state, reports[bad].reason, reports[bad].transient) == (FAILURE, "Invalid number", False)
    missing = reports["<efax-3-2@referdesk.riverbend.example>"]
    assert (missing.state, missing.reason, missing.transient) == (FAILURE, "No attachment to fax", False)
    assert not (tmp_path / "faxes").exists() or list((tmp_path / "faxes").iterdir()) == []


async def test_only_fax_numbers_at_its_domain_are_accepted(pki, tmp_path):
    async with fax_world(pki, tmp_path) as (practice, gateway, provider):
        client = await plain_session(gateway.port, client_context(pki["ca"]))
        await client.starttls()
        await client.ehlo()
        await client.mail(FAX_FROM)
        for address in (f"123456@{FAX_DOMAIN}", f"reception@{FAX_DOMAIN}", f"{NUMBER}@fax.elsewhere.example"):
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(address)
            assert refused.value.code == 550
        assert (await client.rcpt(f"{NUMBER}@{FAX_DOMAIN.upper()}")).code == 250
        await client.quit()


async def test_a_report_that_cannot_be_relayed_is_retried_then_given_up(pki, tmp_path, pdf):
    with recorder(pki) as practice:
        hisp = DemoHisp(tls(pki), pki["ca"], {})
        gateway = DemoFaxGateway(FAX_DOMAIN, tls(pki), tmp_path / "faxes", relay=(HOST, closed_port()),
                                 ca_file=pki["ca"], report_delay=0.01)
        gateway.retry_delays = (0.01, 0.01)
        async with running(hisp, gateway):
            hisp.set_route(FAX_DOMAIN, HOST, gateway.port)
            provider = SmtpGatewayProvider(settings(pki, hisp.port), FAX_DOMAIN, FAX_FROM, env={})
            await provider.send(fax(pdf, "<efax-4-1@referdesk.riverbend.example>"))
            await gateway.settled()
    assert practice.received == [] and gateway.reports_sent == 0
    assert "could not be relayed: 451" in gateway.last_error and gateway.faxes[0].outcome == "success"


def test_pages_are_counted_without_counting_the_page_tree(pdf):
    assert count_pages(pdf) == 2
    assert count_pages(b"<< /Type /Pages /Kids [3 0 R] /Count 1 >> << /Type/Page >>") == 1
