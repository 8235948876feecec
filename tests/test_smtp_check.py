"""The HISP/SMTP check against real aiosmtpd servers on 127.0.0.1 (free ports picked by the kernel), with TLS
certificates from a test CA made here: each way a set-up goes wrong gets its own message."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from direct_pki import (LoopbackSmtp, closed_port, make_ca, make_leaf, server_context, write_key, write_pem)
from transports.direct.smtp_check import check_smtp

HOST = "127.0.0.1"


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    """CA file, a server certificate for 127.0.0.1/localhost, one for another name, and an unrelated CA."""
    folder = tmp_path_factory.mktemp("smtp-tls")
    ca = make_ca("HISP Test CA")
    good = make_leaf(ca, dns=["localhost"], ips=[HOST], cn="hisp", usage=None)
    wrong_name = make_leaf(ca, dns=["mail.example.org"], cn="mail.example.org", usage=None)
    paths = {
        "ca": write_pem(folder / "ca.pem", ca.cert),
        "other_ca": write_pem(folder / "other-ca.pem", make_ca("Unrelated CA").cert),
        "cert": write_pem(folder / "hisp.pem", good.cert), "key": write_key(folder / "hisp.key", good.key),
        "wrong_cert": write_pem(folder / "mail.pem", wrong_name.cert),
        "wrong_key": write_key(folder / "mail.key", wrong_name.key),
    }
    return {k: str(v) for k, v in paths.items()}


def only_error(result) -> str:
    errors = [f.message for f in result.findings if f.level == "error"]
    assert len(errors) == 1, result.findings
    return errors[0]


async def test_starttls_server_with_modern_tls_passes_and_reports_version(tls):
    with LoopbackSmtp(tls_context=server_context(tls["cert"], tls["key"])) as server:
        result = await check_smtp(HOST, server.port, starttls=True, ca_file=tls["ca"])
    assert result.ok
    assert result.tls_version in ("TLSv1.2", "TLSv1.3")
    assert [f.message for f in result.findings] == [
        "SMTP server 127.0.0.1 answered (STARTTLS)",
        f"{result.tls_version} with {result.cipher}; the server certificate is valid for 127.0.0.1",
    ]


async def test_tls_1_2_server_is_accepted_and_named(tls):
    with LoopbackSmtp(tls_context=server_context(tls["cert"], tls["key"],
                                                  max_version=ssl.TLSVersion.TLSv1_2)) as server:
        result = await check_smtp(HOST, server.port, starttls=True, ca_file=tls["ca"])
    assert result.ok and result.tls_version == "TLSv1.2"
    assert result.findings[1].message.startswith("TLSv1.2 with ")


@pytest.mark.parametrize("version, label", [(ssl.TLSVersion.TLSv1_1, "TLS 1.1"), (ssl.TLSVersion.TLSv1, "TLS 1.0")])
async def test_server_offering_only_old_tls_is_refused(tls, version, label):
    with LoopbackSmtp(tls_context=server_context(tls["cert"], tls["key"], max_version=version)) as server:
        result = await check_smtp(HOST, server.port, starttls=True, ca_file=tls["ca"])
    message = only_error(result)
    assert "referdesk requires TLS 1.2 or newer" in message
    if "offers only" in message:  # this OpenSSL still speaks TLS 1.0/1.1 at security level 0: version named
        assert message == f"127.0.0.1:{server.port} offers only {label}; referdesk requires TLS 1.2 or newer"
    else:  # an OpenSSL built without TLS < 1.2: the handshake still fails, and says why
        assert message.startswith(f"TLS handshake with 127.0.0.1:{server.port} failed")
    assert result.tls_version is None


async def test_nothing_listening_is_connection_refused():
    port = closed_port()
    result = await check_smtp(HOST, port, starttls=True, ca_file=None)
    assert only_error(result).startswith(f"cannot reach 127.0.0.1:{port}: connection refused")


async def test_certificate_from_an_unknown_ca(tls):
    with LoopbackSmtp(tls_context=server_context(tls["cert"], tls["key"])) as server:
        with_other = await check_smtp(HOST, server.port, starttls=True, ca_file=tls["other_ca"])
        with_system = await check_smtp(HOST, server.port, starttls=True, ca_file=None)
    message = only_error(with_other)
    assert f"TLS certificate of 127.0.0.1:{server.port} is not signed by a CA in the CA file" in message
    assert "(unknown CA: " in message
    assert "is not signed by a CA in this system's CA list" in only_error(with_system)


async def test_certificate_for_another_host_name(tls):
    with LoopbackSmtp(tls_context=server_context(tls["wrong_cert"], tls["wrong_key"])) as server:
        result = await check_smtp(HOST, server.port, starttls=True, ca_file=tls["ca"])
    assert only_error(result).startswith(f"TLS certificate of 127.0.0.1:{server.port} is not valid for the name "
                                         "'127.0.0.1' (hostname mismatch)")


async def test_server_without_starttls(tls):
    with LoopbackSmtp() as server:
        result = await check_smtp(HOST, server.port, starttls=True, ca_file=tls["ca"])
    assert only_error(result).startswith(f"127.0.0.1:{server.port} does not offer STARTTLS: referdesk never sends "
                                         "over an unencrypted connection")


async def test_implicit_tls_when_starttls_is_off(tls):
    with LoopbackSmtp(ssl_context=server_context(tls["cert"], tls["key"])) as server:
        result = await check_smtp("localhost", server.port, starttls=False, ca_file=tls["ca"])
    assert result.ok, result.findings
    assert result.findings[0].message == "SMTP server localhost answered (implicit TLS)"


async def test_implicit_tls_against_a_starttls_port(tls):
    with LoopbackSmtp(tls_context=server_context(tls["cert"], tls["key"])) as server:
        result = await check_smtp(HOST, server.port, starttls=False, ca_file=tls["ca"])
    assert "the port may expect STARTTLS" in only_error(result)


async def test_silent_server_times_out_with_the_step_named():
    async def silent(reader, writer):
        await reader.read()  # accepts, never greets

    server = await asyncio.start_server(silent, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await check_smtp(HOST, port, starttls=True, ca_file=None, timeout=0.5)
    finally:
        server.close()
    assert only_error(result).startswith(f"127.0.0.1:{port} accepted the connection but stopped answering "
                                         "(greeting) within 0.5 s")


async def test_server_that_is_not_smtp():
    async def refusing(reader, writer):
        writer.write(b"554 no service here\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refusing, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await check_smtp(HOST, port, starttls=True, ca_file=None)
    finally:
        server.close()
    assert only_error(result) == f"127.0.0.1:{port} did not greet as an SMTP server: 554 no service here"


async def test_missing_ca_file(tmp_path):
    result = await check_smtp(HOST, 587, starttls=True, ca_file=str(tmp_path / "none.pem"))
    assert only_error(result) == f"CA file {tmp_path / 'none.pem'}: file not found"
    (tmp_path / "junk.pem").write_text("not a certificate")
    result = await check_smtp(HOST, 587, starttls=True, ca_file=str(tmp_path / "junk.pem"))
    assert only_error(result) == f"CA file {tmp_path / 'junk.pem'}: holds no PEM CA certificate"
