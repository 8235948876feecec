"""Certificate discovery against a real DNS server (UDP and TCP) and a real HTTP server on 127.0.0.1:
address- and domain-bound CERT records, truncation, IPKIX, AIA, caching by TTL, DNS down, LDAP fallback.
The DNS and HTTP servers count what they are asked, which is how the cache tests see "no query"."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes

from direct_ca import ADDRESS, DOMAIN, der, make_leaf
from direct_pki import NOW, closed_port, write_pem
from loopback_dns import LoopbackDns
from models import clock
from models.config import Config
from transports.direct.discovery import TtlCache, address_names, parse_nameserver
from transports.direct.recipient import NO_CERTIFICATE_REASON, DirectSettings, check_recipient

pytest_plugins = ["direct_ca"]  # its fixtures: http_server, pki, dns_server, settings, caches
ADDRESS_NAME = "ana.direct.example.org"


def test_address_bound_certificate_in_dns_is_verified(dns_server, settings, caches, pki):
    cert = pki.leaf(emails=[ADDRESS])
    dns_server.add_cert(ADDRESS_NAME, cert)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert (verdict.state, verdict.binding, verdict.source) == ("verified", "address", "dns")
    assert verdict.ok and not verdict.temporary
    assert verdict.certificate == cert and verdict.certificates == (cert,)
    assert verdict.fingerprint == cert.fingerprint(hashes.SHA256()).hex()
    assert (verdict.subject, verdict.issuer) == ("recipient", "Referdesk Direct Test Root")
    assert verdict.not_after == dt.datetime(2028, 1, 1) and verdict.checked_at == NOW
    assert "trusted Direct certificate is published for this address" in verdict.reason
    # A valid address-bound certificate ends discovery: the domain is not asked.
    assert dns_server.count(DOMAIN, "CERT") == 0
    as_json = json.loads(json.dumps(verdict.as_json()))
    assert as_json["state"] == "verified" and as_json["certificates"] == [verdict.fingerprint]


def test_domain_bound_certificate_is_used_when_the_address_has_none(dns_server, settings, caches, pki):
    cert = pki.leaf(dns=[DOMAIN])
    dns_server.add_cert(DOMAIN, cert)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert (verdict.state, verdict.binding, verdict.certificates) == ("verified", "domain", (cert,))
    assert f"for its domain {DOMAIN}" in verdict.reason
    assert dns_server.count(ADDRESS_NAME, "CERT") == 1 and dns_server.count(DOMAIN, "CERT") == 1


def test_nothing_published_is_no_certificate_not_untrusted(dns_server, settings, caches):
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert (verdict.state, verdict.reason) == ("no-certificate", NO_CERTIFICATE_REASON)
    assert verdict.certificate is None and verdict.certificates == () and verdict.fingerprint == ""
    # DCDT D11: both CERT names, then the LDAP SRV record, were looked for.
    assert dns_server.count(ADDRESS_NAME, "CERT") == dns_server.count(DOMAIN, "CERT") == 1
    assert dns_server.count(f"_ldap._tcp.{DOMAIN}", "SRV") == 1


def impatient(settings: DirectSettings) -> DirectSettings:
    return replace(settings, dns_timeout=0.1, dns_lifetime=0.3)


def test_dns_down_is_a_dns_error_not_no_certificate(dns_server, settings, caches):
    dns_server.stop()
    started = time.perf_counter()
    verdict = check_recipient(ADDRESS, impatient(settings), caches=caches)
    assert verdict.state == "dns-error" and verdict.temporary
    assert verdict.reason == ("The Direct certificate check could not be completed: the DNS server did not "
                              "answer in time; try again later.")
    assert time.perf_counter() - started < 2  # bounded by [dns] lifetime


def test_nothing_listening_on_the_port_is_a_dns_error(settings, caches, pki):
    dead = replace(impatient(settings), nameservers=(f"127.0.0.1:{closed_port()}",))
    assert check_recipient(ADDRESS, dead, caches=caches).state == "dns-error"


def test_truncated_udp_answer_is_retried_over_tcp(settings, caches, pki):
    with LoopbackDns(truncate_udp=True) as server:
        server.add_cert(ADDRESS_NAME, pki.leaf(emails=[ADDRESS]))
        tcp_settings = DirectSettings(anchors=settings.anchors, nameservers=(server.nameserver,), dns_timeout=0.5,
                                      dns_lifetime=1.0)
        verdict = check_recipient(ADDRESS, tcp_settings, caches=caches)
        assert verdict.state == "verified"
        assert server.count(ADDRESS_NAME, "CERT", "udp") == 1 and server.count(ADDRESS_NAME, "CERT", "tcp") == 1


def test_certificate_too_large_for_udp_comes_over_tcp(dns_server, settings, caches, pki):
    """DCDT D14: larger than 512 bytes - here larger than the 1232-byte EDNS payload too, so the real
    server truncates on its own."""
    cert = pki.leaf(emails=[ADDRESS], dns=[f"host{i}.{DOMAIN}" for i in range(60)])
    assert len(der(cert)) > 1300
    dns_server.add_cert(ADDRESS_NAME, cert)
    assert check_recipient(ADDRESS, settings, caches=caches).state == "verified"
    assert dns_server.count(ADDRESS_NAME, "CERT", "tcp") == 1


def test_ipkix_record_is_fetched_over_http(dns_server, settings, caches, pki, http_server):
    cert = pki.leaf(emails=[ADDRESS])
    url = http_server.put("certs/ana.cer", der(cert), "application/pkix-cert")
    dns_server.add_cert_url(ADDRESS_NAME, url)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert (verdict.state, verdict.certificate) == ("verified", cert)
    assert http_server.count("certs/ana.cer") == 1


def test_ipkix_download_failure_is_temporary(dns_server, settings, caches, http_server):
    dns_server.add_cert_url(ADDRESS_NAME, http_server.url("certs/missing.cer"))
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "dns-error"
    assert "certs/missing.cer could not be downloaded" in verdict.reason and "HTTP 404" in verdict.reason


def test_ipkix_url_that_is_not_http_is_not_fetched(dns_server, settings, caches):
    dns_server.add_cert_url(ADDRESS_NAME, "https://certs.example.org/ana.cer")
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "untrusted"
    assert verdict.reason == ("A certificate record is published for this address, but it cannot be used: the "
                              "certificate published at https://certs.example.org/ana.cer could not be downloaded: "
                              "only http addresses are fetched.")


def test_missing_intermediate_is_fetched_from_aia(dns_server, settings, caches, pki, http_server):
    """DCDT D18: the certificate's issuer is an intermediate known only through its AIA caIssuers URL."""
    before = http_server.count("intermediate.cer")
    cert = make_leaf(pki.intermediate, emails=[ADDRESS], crl_url=http_server.url("intermediate.crl"),
                     aia_url=http_server.url("intermediate.cer")).cert
    dns_server.add_cert(ADDRESS_NAME, cert)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert (verdict.state, verdict.issuer) == ("verified", "Referdesk Direct Test Issuing CA")
    assert http_server.count("intermediate.cer") == before + 1
    check_recipient(ADDRESS, settings, caches=caches)
    assert http_server.count("intermediate.cer") == before + 1  # cached


def test_intermediate_published_next_to_the_certificate_needs_no_aia(dns_server, settings, caches, pki,
                                                                     http_server):
    cert = make_leaf(pki.intermediate, emails=[ADDRESS], crl_url=http_server.url("intermediate.crl"),
                     aia_url=http_server.url("nowhere.cer")).cert
    dns_server.add_cert(ADDRESS_NAME, cert)
    dns_server.add_cert(ADDRESS_NAME, pki.intermediate.cert)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "verified" and verdict.certificates == (cert,)
    assert http_server.count("nowhere.cer") == 0


def test_missing_intermediate_without_aia_is_untrusted(dns_server, settings, caches, pki, http_server):
    cert = make_leaf(pki.intermediate, emails=[ADDRESS], crl_url=http_server.url("intermediate.crl")).cert
    dns_server.add_cert(ADDRESS_NAME, cert)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "untrusted"
    assert "“Referdesk Direct Test Issuing CA” is not in your trust bundle" in verdict.reason


def test_answers_are_cached_for_the_record_ttl(dns_server, settings, caches, pki):
    dns_server.add_cert(ADDRESS_NAME, pki.leaf(emails=[ADDRESS]), ttl=60)
    assert check_recipient(ADDRESS, settings, caches=caches).state == "verified"
    assert len(dns_server.queries) == 1
    assert check_recipient(ADDRESS, settings, caches=caches).state == "verified"
    assert len(dns_server.queries) == 1  # no DNS at all the second time
    clock.freeze(NOW + dt.timedelta(seconds=59))
    check_recipient(ADDRESS, settings, caches=caches)
    assert len(dns_server.queries) == 1
    clock.freeze(NOW + dt.timedelta(seconds=61))
    assert check_recipient(ADDRESS, settings, caches=caches).state == "verified"
    assert dns_server.count(ADDRESS_NAME, "CERT") == 2


def test_no_record_is_cached_for_the_zones_negative_ttl(settings, caches):
    with LoopbackDns() as server:
        server.add_zone("example.org", negative_ttl=30)
        local = DirectSettings(anchors=settings.anchors, nameservers=(server.nameserver,), dns_timeout=0.5,
                               dns_lifetime=1.0)
        assert check_recipient(ADDRESS, local, caches=caches).state == "no-certificate"
        assert check_recipient(ADDRESS, local, caches=caches).state == "no-certificate"
        assert server.count(ADDRESS_NAME, "CERT") == 1 and server.count(DOMAIN, "CERT") == 1
        clock.freeze(NOW + dt.timedelta(seconds=31))
        check_recipient(ADDRESS, local, caches=caches)
        assert server.count(ADDRESS_NAME, "CERT") == 2 and server.count(DOMAIN, "CERT") == 2


def test_a_dns_failure_is_not_cached(dns_server, settings, caches, pki):
    dns_server.stop()
    assert check_recipient(ADDRESS, impatient(settings), caches=caches).state == "dns-error"
    with LoopbackDns() as server:
        server.add_cert(ADDRESS_NAME, pki.leaf(emails=[ADDRESS]))
        back = DirectSettings(anchors=settings.anchors, nameservers=(server.nameserver,))
        assert check_recipient(ADDRESS, back, caches=caches).state == "verified"


def test_dotted_local_part_is_one_escaped_label(dns_server, settings, caches, pki):
    cert = pki.leaf(emails=["dr.ana@example.org"])
    dns_server.add_cert("dr\\.ana.example.org", cert)
    assert check_recipient("dr.ana@example.org", settings, caches=caches).state == "verified"
    assert [q.name for q in dns_server.queries][:1] == ["dr\\.ana.example.org"]


def test_dotted_local_part_also_found_where_reference_implementations_publish(dns_server, settings, caches, pki):
    """The Java and C# Direct reference implementations replace @ by . without escaping."""
    dns_server.add_cert("dr.ana.example.org", pki.leaf(emails=["dr.ana@example.org"]))
    assert check_recipient("dr.ana@example.org", settings, caches=caches).state == "verified"
    assert [q.name for q in dns_server.queries][:2] == ["dr\\.ana.example.org", "dr.ana.example.org"]


def test_address_names():
    assert [n.to_text() for n in address_names("a.b@Example.org")] == ["a\\.b.Example.org.", "a.b.Example.org."]
    assert [n.to_text() for n in address_names("ana@example.org")] == ["ana.example.org."]


@pytest.mark.parametrize("text, host, port", [("192.0.2.1", "192.0.2.1", 53), ("127.0.0.1:5353", "127.0.0.1", 5353),
                                              ("[::1]:5353", "::1", 5353), ("::1", "::1", 53)])
def test_parse_nameserver(text, host, port):
    server = parse_nameserver(text)
    assert (server.address, server.port) == (host, port)


@pytest.mark.parametrize("text", ["dns.example.org", "127.0.0.1:0", "127.0.0.1:http", "[::1]x"])
def test_parse_nameserver_rejects(text):
    with pytest.raises(ValueError):
        parse_nameserver(text)


def test_settings_from_config(tmp_path, dns_server, caches, pki):
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    write_pem(anchors / "root.pem", pki.root.cert)
    config = Config(None, tmp_path, "sqlite://", {
        "direct": {"trust_anchors": str(anchors), "fetch_timeout": 3},
        "dns": {"nameservers": [dns_server.nameserver], "timeout": 0.5, "lifetime": 2},
    })
    settings = DirectSettings.from_config(config)
    assert settings == DirectSettings(trust_anchors=str(anchors), nameservers=(dns_server.nameserver,),
                                      dns_timeout=0.5, dns_lifetime=2.0, fetch_timeout=3.0)
    dns_server.add_cert(ADDRESS_NAME, pki.leaf(emails=[ADDRESS]))
    assert check_recipient(ADDRESS, settings, caches=caches).state == "verified"
    defaults = DirectSettings.from_config(Config(None, tmp_path, "sqlite://", {}))
    assert (defaults.nameservers, defaults.trust_anchors, defaults.dns_lifetime) == ((), None, 8.0)


@pytest.mark.parametrize("section, message", [
    ({"dns": {"nameservers": ["dns.example.org"]}}, "[dns] nameservers"),
    ({"dns": {"timeout": "fast"}}, "[dns] timeout"),
    ({"direct": {"fetch_timeout": 0}}, "[direct] fetch_timeout"),
])
def test_settings_from_config_names_the_bad_setting(tmp_path, section, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        DirectSettings.from_config(Config(None, tmp_path, "sqlite://", section))


def test_ttl_cache_follows_the_frozen_clock():
    cache = TtlCache()
    cache.put("a", 1, seconds=10)
    cache.put("b", 2, until=NOW - dt.timedelta(seconds=1))  # already past: not kept
    assert (cache.get("a"), cache.get("b")) == (1, None)
    clock.freeze(NOW + dt.timedelta(seconds=10))
    assert cache.get("a") is None and len(cache) == 0


# --- LDAP, when DNS publishes no CERT record ---------------------------------------------------------

import loopback_ldap as ldap  # noqa: E402 (a real LDAP server on loopback)


def test_ldap_is_asked_when_dns_has_no_cert_record(dns_server, settings, caches, pki):
    cert = pki.leaf(emails=[ADDRESS])
    entry = ldap.Entry(f"mail={ADDRESS},dc=example,dc=org", ADDRESS, {"userCertificate;binary": [der(cert)]})
    with ldap.LoopbackLdap([entry]) as server:
        dns_server.add_srv(f"_ldap._tcp.{DOMAIN}", f"ldap.{DOMAIN}", server.port)
        dns_server.add_a(f"ldap.{DOMAIN}")
        verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert (verdict.state, verdict.source, verdict.binding, verdict.certificates) == (
        "verified", "ldap", "address", (cert,))


def test_ldap_is_not_asked_when_a_cert_record_exists(dns_server, settings, caches, pki):
    dns_server.add_cert(DOMAIN, pki.leaf(dns=[DOMAIN]))
    dns_server.add_srv(f"_ldap._tcp.{DOMAIN}", f"ldap.{DOMAIN}", closed_port())
    assert check_recipient(ADDRESS, settings, caches=caches).state == "verified"
    assert dns_server.count(f"_ldap._tcp.{DOMAIN}") == 0


def test_unreachable_ldap_directory_is_temporary_not_no_certificate(dns_server, settings, caches):
    """DCDT D12: the only directory is down. Nothing was found, but that says nothing about the address."""
    dns_server.add_srv(f"_ldap._tcp.{DOMAIN}", f"ldap.{DOMAIN}", closed_port())
    dns_server.add_a(f"ldap.{DOMAIN}")
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "dns-error"
    assert "the Direct directory (LDAP) of direct.example.org could not be reached" in verdict.reason
