"""The Phaxio provider against a real HTTP(S) server on loopback that speaks Phaxio v2.1 (tests/loopback_phaxio.py):
what arrives there, how statuses and errors are read, and which failures are worth trying again."""

from __future__ import annotations

import socket
import ssl

import pytest
from direct_pki import closed_port, make_ca, make_leaf, server_context, write_key, write_pem
from fpdf import FPDF
from loopback_phaxio import LoopbackPhaxio

from transports.efax.base import FAILURE, IN_PROGRESS, PARTIAL, QUEUED, SUCCESS, FaxError, FaxRequest
from transports.efax.phaxio import PhaxioProvider

KEY, SECRET = "test-key", "s3cret-Phaxio-value"
ENV = {"PHAXIO_API_KEY": KEY, "PHAXIO_API_SECRET": SECRET}


def two_page_pdf() -> bytes:
    """A real two-page PDF, with every byte value after %%EOF so nothing can be lost or rewritten in transit."""
    pdf = FPDF()
    for text in ("Referral letter", "Clinical summary"):
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.cell(text=text)
    return bytes(pdf.output()) + b"%" + bytes(range(256)) + b"\r\n--\r\n\n\r"


PDF = two_page_pdf()


def fax_request(to: str = "+15551230001", reference: str = "ref-1") -> FaxRequest:
    return FaxRequest(to=to, pdf=PDF, filename="referral-MRN000123-20261126.pdf", header_text="Dr Ada Lee 217-555-0100",
                      subject="Referral for J. Doe", reference=reference)


@pytest.fixture
def server():
    with LoopbackPhaxio(api_key=KEY, api_secret=SECRET, polls_to_final=1) as running:
        yield running


def provider_for(server: LoopbackPhaxio, **kwargs) -> PhaxioProvider:
    return PhaxioProvider(**({"base_url": server.url, "api_key": KEY, "api_secret": SECRET, "timeout": 2} | kwargs))


async def final_status(provider: PhaxioProvider, fax_id: str):
    for _ in range(10):
        status = await provider.status(fax_id)
        if status.final:
            return status
    raise AssertionError("never final")


async def failure_of(coroutine) -> FaxError:
    with pytest.raises(FaxError) as caught:
        await coroutine
    assert SECRET not in str(caught.value) and "J. Doe" not in str(caught.value)
    return caught.value


# --- sending ---

async def test_send_delivers_the_pdf_unchanged_with_number_header_and_tag(server):
    fax_id = await provider_for(server).send(fax_request(reference="attempt-7f3a"))
    fax = server.fax(fax_id)
    assert fax_id == str(fax.id)
    assert fax.pdf == PDF
    assert (fax.to, fax.header_text, fax.tags) == ("+15551230001", "Dr Ada Lee 217-555-0100",
                                                   {"reference": "attempt-7f3a"})
    assert (fax.filename, fax.content_type) == ("referral-MRN000123-20261126.pdf", "application/pdf")
    assert fax.callback_url is None
    assert server.requests == [("POST", "/v2.1/faxes", True)]  # basic auth with key:secret


async def test_each_send_gets_a_new_id_and_the_callback_url_when_configured(server):
    provider = provider_for(server, callback_url="https://referdesk.example.org/phaxio")
    first, second = [await provider.send(fax_request(reference=r)) for r in ("a", "b")]
    assert int(second) > int(first)
    assert [f.callback_url for f in server.faxes] == ["https://referdesk.example.org/phaxio"] * 2


async def test_wrong_secret_is_permanent_and_names_the_environment_variables(server):
    provider = PhaxioProvider.from_config(
        {"api_url": server.url, "api_key_env": "CLINIC_FAX_KEY", "api_secret_env": "CLINIC_FAX_SECRET"},
        {"CLINIC_FAX_KEY": KEY, "CLINIC_FAX_SECRET": "not-the-secret"})
    error = await failure_of(provider.send(fax_request()))
    assert not error.transient
    assert "CLINIC_FAX_KEY" in str(error) and "CLINIC_FAX_SECRET" in str(error) and "401" in str(error)
    assert server.faxes == []


async def test_an_invalid_number_refused_by_phaxio_is_permanent_with_its_words(server):
    error = await failure_of(provider_for(server).send(fax_request(to="5551234")))
    assert not error.transient
    assert "Invalid phone number" in str(error) and "422" in str(error)


@pytest.mark.parametrize("status, body, content_type, expected", [
    (500, {"success": False, "message": "Internal error"}, "application/json", "HTTP 500"),
    (503, "<html>Service Unavailable</html>", "text/html", "HTTP 503"),
    (429, {"success": False, "message": "Rate limit exceeded"}, "application/json", "Rate limit exceeded"),
    (200, "<html>Welcome to the hotel Wi-Fi</html>", "text/html", "not JSON"),
    (200, '{"success": true, "data"', "application/json", "not JSON"),
])
async def test_server_trouble_is_transient(server, status, body, content_type, expected):
    server.respond_next(status, body, content_type)
    error = await failure_of(provider_for(server).send(fax_request()))
    assert error.transient
    assert expected in str(error)


async def test_an_accepted_fax_without_an_id_is_not_resent_blindly(server):
    server.respond_next(200, {"success": True, "message": "Fax queued for sending", "data": {}})
    error = await failure_of(provider_for(server).send(fax_request()))
    assert not error.transient and "no fax id" in str(error)


async def test_server_down_is_transient():
    provider = PhaxioProvider(base_url=f"http://127.0.0.1:{closed_port()}/v2.1", api_key=KEY, api_secret=SECRET)
    error = await failure_of(provider.send(fax_request()))
    assert error.transient and "refused" in str(error)


async def test_a_server_that_never_answers_times_out_transient():
    with socket.socket() as silent:  # the kernel completes the TCP handshake; nobody ever replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        provider = PhaxioProvider(base_url=f"http://127.0.0.1:{silent.getsockname()[1]}/v2.1", api_key=KEY,
                                  api_secret=SECRET, timeout=0.2)
        error = await failure_of(provider.send(fax_request()))
    assert error.transient and "did not answer within 0.2 s" in str(error)


# --- status ---

async def test_status_moves_from_queued_through_in_progress_to_success_with_pages():
    with LoopbackPhaxio(api_key=KEY, api_secret=SECRET, polls_to_final=3) as server:
        provider = provider_for(server)
        fax_id = await provider.send(fax_request())
        seen = [await provider.status(fax_id) for _ in range(3)]
    assert [s.state for s in seen] == [QUEUED, IN_PROGRESS, SUCCESS]
    assert [s.final for s in seen] == [False, False, True]
    assert seen[-1].pages == 2 and seen[-1].reason == ""


async def test_scripted_busy_and_no_answer_are_transient_then_the_third_goes_through(server):
    server.script("+15551230001", ["busy", "no-answer"])
    provider = provider_for(server)
    outcomes = [await final_status(provider, await provider.send(fax_request(reference=str(n)))) for n in range(3)]
    assert [(s.state, s.reason, s.transient) for s in outcomes] == [
        (FAILURE, "Busy", True), (FAILURE, "No answer", True), (SUCCESS, "", False)]


@pytest.mark.parametrize("outcome, state, reason, transient", [
    ("bad-number", FAILURE, "Invalid number", False),
    ("conversion", FAILURE, "Failed to normalize PDF document", False),
    ("fatal", FAILURE, "Fatal error", False),
    ("fax-error", FAILURE, "No response after sending a page", True),
    ("partial", PARTIAL, "Disconnected after permitted retries", True),
])
async def test_failures_are_classified_by_phaxio_error_type(server, outcome, state, reason, transient):
    server.script("+15551230001", [outcome])
    provider = provider_for(server)
    status = await final_status(provider, await provider.send(fax_request()))
    assert (status.state, status.reason, status.transient, status.final) == (state, reason, transient, True)


@pytest.mark.parametrize("fax, expected", [
    # An error type we do not know: a person looks rather than the worker redialling.
    ({"status": "failure", "recipients": [{"error_type": "newKindOfError", "error_message": "Odd"}]},
     (FAILURE, "Odd", False)),
    # Sinch-style spelling of a line error; the reason taken from the fax when the recipient has none.
    ({"status": "failure", "error_type": "LINE_ERROR", "error_message": "Ring Timeout", "recipients": [{}]},
     (FAILURE, "Ring Timeout", True)),
    # v1 put the description in error_code.
    ({"status": "failure", "error_type": "lineError", "error_code": "Congestion"}, (FAILURE, "Congestion", True)),
    ({"status": "failure"}, (FAILURE, "Failed (Phaxio gave no reason)", False)),
    ({"status": "pendingbatch"}, (QUEUED, "", False)),
    ({"status": "somethingnew"}, (IN_PROGRESS, "", False)),
])
def test_reading_fax_objects(fax, expected):
    status = PhaxioProvider.fax_status(fax)
    assert (status.state, status.reason, status.transient) == expected


async def test_status_of_an_unknown_fax_is_permanent(server):
    error = await failure_of(provider_for(server).status("999999"))
    assert not error.transient and "404" in str(error)


# --- cancel ---

async def test_cancel_stops_a_pending_fax_and_it_is_not_resent():
    with LoopbackPhaxio(api_key=KEY, api_secret=SECRET, polls_to_final=3) as server:
        provider = provider_for(server)
        fax_id = await provider.send(fax_request())
        assert (await provider.status(fax_id)).state == QUEUED
        await provider.cancel(fax_id)
        status = await provider.status(fax_id)
        assert (status.state, status.reason, status.transient) == (FAILURE, "Cancelled", False)
        assert server.requests[-2] == ("POST", f"/v2.1/faxes/{fax_id}/cancel", True)
        error = await failure_of(provider.cancel(fax_id))  # already over
        assert not error.transient and "already completed" in str(error)


# --- configuration ---

def test_from_config_reads_credentials_only_from_the_named_environment_variables(server):
    provider = PhaxioProvider.from_config({"api_url": server.url, "timeout": 5, "callback_url": None}, ENV)
    assert (provider.name, provider.base_url, provider.timeout) == ("phaxio", server.url, 5.0)
    assert SECRET not in repr(provider) and KEY not in repr(provider)
    assert PhaxioProvider.from_config({}, ENV).base_url == "https://api.phaxio.com/v2.1"


@pytest.mark.parametrize("section, env, message", [
    ({}, {"PHAXIO_API_SECRET": SECRET}, "PHAXIO_API_KEY"),
    ({}, {"PHAXIO_API_KEY": KEY, "PHAXIO_API_SECRET": " "}, "PHAXIO_API_SECRET"),
    ({"api_key_env": "FAX_KEY"}, ENV, "FAX_KEY"),
    ({"api_secret": SECRET}, ENV, "must not hold api_secret"),
    ({"timeout": "soon"}, ENV, "timeout must be a number"),
    ({"timeout": 0}, ENV, "timeout must be a positive"),
    ({"api_url": "http://api.phaxio.com/v2.1"}, ENV, "must use https://"),
    ({"api_url": "http://10.0.0.5:8080/v2.1"}, ENV, "must use https://"),
    ({"api_url": "ftp://api.phaxio.com/v2.1"}, ENV, "must be an https:// URL"),
    ({"api_url": "https:///v2.1"}, ENV, "must be an https:// URL"),
    ({"api_url": "https://api.phaxio.com:99999/v2.1"}, ENV, "not a valid URL"),
    ({"api_url": "https://key:secret@api.phaxio.com/v2.1"}, ENV, "must not contain credentials"),
    ({"callback_url": "http://referdesk.example.org/cb"}, ENV, "callback_url must use https://"),
    ({"ca_file": "/nonexistent/ca.pem"}, ENV, "ca_file"),
])
def test_bad_configuration_is_refused_with_a_clear_message(section, env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")) as caught:
        PhaxioProvider.from_config(section, env)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/v2.1", "http://[::1]:8080/v2.1", "http://localhost/v2.1"])
def test_plain_http_is_allowed_to_loopback_only(url):
    assert PhaxioProvider(base_url=url, api_key=KEY, api_secret=SECRET).base_url == url


# --- TLS ---

@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phaxio-tls")
    ca = make_ca("Phaxio Test Root")
    good = make_leaf(ca, dns=["localhost"], ips=["127.0.0.1"], cn="api.phaxio.test", usage=None)
    wrong = make_leaf(ca, dns=["api.example.org"], cn="api.example.org", usage=None)
    return {"ca": str(write_pem(folder / "ca.pem", ca.cert)),
            "good": server_context(write_pem(folder / "good.pem", good.cert), write_key(folder / "good.key", good.key)),
            "wrong": server_context(write_pem(folder / "wrong.pem", wrong.cert),
                                    write_key(folder / "wrong.key", wrong.key))}


async def test_https_with_a_private_ca_works(tls):
    with LoopbackPhaxio(api_key=KEY, api_secret=SECRET, polls_to_final=1, ssl_context=tls["good"]) as server:
        provider = provider_for(server, ca_file=tls["ca"])
        fax_id = await provider.send(fax_request())
        assert (await provider.status(fax_id)).state == SUCCESS
        assert server.fax(fax_id).pdf == PDF


@pytest.mark.parametrize("context, ca", [("good", False), ("wrong", True)])
async def test_an_unverifiable_certificate_is_refused(tls, context, ca):
    with LoopbackPhaxio(api_key=KEY, api_secret=SECRET, ssl_context=tls[context]) as server:
        error = await failure_of(provider_for(server, **({"ca_file": tls["ca"]} if ca else {})).send(fax_request()))
        assert server.faxes == []
    assert error.transient and "certificate could not be verified" in str(error)


async def test_tls_older_than_1_2_is_refused(tmp_path, tls):
    leaf = make_leaf(make_ca("Phaxio Test Root"), ips=["127.0.0.1"], usage=None)
    old = server_context(write_pem(tmp_path / "c.pem", leaf.cert), write_key(tmp_path / "c.key", leaf.key),
                         max_version=ssl.TLSVersion.TLSv1_1)
    with LoopbackPhaxio(api_key=KEY, api_secret=SECRET, ssl_context=old) as server:
        error = await failure_of(provider_for(server, ca_file=tls["ca"]).send(fax_request()))
    assert error.transient and "TLS handshake failed" in str(error) and "TLS 1.2" in str(error)


async def test_https_to_a_plain_http_port_fails_clearly(server):
    provider = provider_for(server, base_url=server.url.replace("http://", "https://"))
    error = await failure_of(provider.send(fax_request()))
    assert error.transient and "TLS handshake failed" in str(error)
    assert server.faxes == []
