"""Which discovered certificate may be used, and the verdict's words: trust anchors, expiry, revocation by a
CRL served on loopback HTTP (hard-fail: an unreachable CRL is a temporary verdict, never a pass), binding
(case-insensitive address, no wildcards), key and signature strength, and STANDARDS.md's selection rules
(address-bound first; an expired or revoked address-bound certificate stops discovery)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from direct_ca import ADDRESS, DOMAIN, make_ca, make_crl, make_leaf
from direct_pki import NOW, OpenSslCA, ec_key, rsa_key, write_pem
from models import clock
from transports.direct.discovery import TtlCache
from transports.direct.recipient import (NO_CERTIFICATE_REASON, Caches, DirectSettings, anchors_for,
                                         check_recipient)
from transports.direct.trust import SIGN, TrustChecker

pytest_plugins = ["direct_ca"]  # its fixtures: http_server, pki, dns_server, settings, caches
ADDRESS_NAME = "ana.direct.example.org"


def publish(dns_server, *certs, name=ADDRESS_NAME):
    for cert in certs:
        dns_server.add_cert(name, cert)


# --- trust anchors ---------------------------------------------------------------------------------------

def test_certificate_from_a_ca_outside_the_trust_bundle_is_untrusted(dns_server, settings, caches, pki):
    cert = make_leaf(pki.other_root, emails=[ADDRESS]).cert
    publish(dns_server, cert)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "untrusted" and verdict.certificate == cert and verdict.certificates == ()
    assert verdict.reason == ("A Direct certificate is published for this address, but it is not trusted: its "
                              "issuer “Somebody Else's Root” is not in your trust bundle.")
    assert verdict.reason != NO_CERTIFICATE_REASON


def test_same_name_different_key_is_untrusted(dns_server, settings, caches):
    """An impostor CA with the anchor's name: found by name, refused by pyhanko's signature check."""
    impostor = make_ca("Referdesk Direct Test Root", key=rsa_key(slot="impostor"))
    publish(dns_server, make_leaf(impostor, emails=[ADDRESS]).cert)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "untrusted" and "does not chain to your trust bundle" in verdict.reason


def test_unusable_trust_bundle_is_said(dns_server, tmp_path, caches, pki):
    publish(dns_server, pki.leaf(emails=[ADDRESS]))
    broken = DirectSettings(trust_anchors=tmp_path / "missing", nameservers=(dns_server.nameserver,))
    verdict = check_recipient(ADDRESS, broken, caches=caches)
    assert verdict.state == "untrusted" and "your trust bundle cannot be used" in verdict.reason


# --- expiry and the no-fallback rule ----------------------------------------------------------------------

def test_expired_address_bound_certificate_stops_discovery(dns_server, settings, caches, pki):
    expired = pki.leaf(emails=[ADDRESS], start=dt.datetime(2024, 6, 1), end=dt.datetime(2026, 6, 1))
    publish(dns_server, expired)
    publish(dns_server, pki.leaf(dns=[DOMAIN]), name=DOMAIN)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert (verdict.state, verdict.binding, verdict.certificate) == ("expired", "address", expired)
    assert verdict.reason == ("The Direct certificate published for this address expired on 2026-06-01: the "
                              "recipient must renew it before anything can be sent.")
    assert dns_server.count(DOMAIN, "CERT") == 0  # no fallback: the domain is not even asked


def test_revoked_address_bound_certificate_stops_discovery(dns_server, settings, caches, pki):
    revoked = pki.leaf(emails=[ADDRESS])
    pki.revoke(revoked)
    publish(dns_server, revoked)
    publish(dns_server, pki.leaf(dns=[DOMAIN]), name=DOMAIN)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert (verdict.state, verdict.binding) == ("revoked", "address")
    assert verdict.reason == ("The Direct certificate published for this address was revoked by its issuer on "
                              "2026-10-30.")


def test_untrusted_address_bound_certificate_falls_back_to_the_domain(dns_server, settings, caches, pki):
    """Only expiry and revocation stop discovery; a certificate that was never ours to trust does not."""
    publish(dns_server, make_leaf(pki.other_root, emails=[ADDRESS]).cert)
    domain_cert = pki.leaf(dns=[DOMAIN])
    publish(dns_server, domain_cert, name=DOMAIN)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert (verdict.state, verdict.binding, verdict.certificates) == ("verified", "domain", (domain_cert,))
    assert any("not in your trust bundle" in note for note in verdict.notes)


def test_expired_domain_bound_certificate(dns_server, settings, caches, pki):
    publish(dns_server, pki.leaf(dns=[DOMAIN], end=dt.datetime(2026, 3, 1)), name=DOMAIN)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert (verdict.state, verdict.binding) == ("expired", "domain")
    assert verdict.reason.startswith(f"The Direct certificate published for its domain {DOMAIN} expired on 2026-03-01")


def test_not_yet_valid_certificate_is_untrusted(dns_server, settings, caches, pki):
    publish(dns_server, pki.leaf(emails=[ADDRESS], start=dt.datetime(2027, 1, 1)))
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "untrusted" and "not valid until 2027-01-01" in verdict.reason


# --- revocation (CRL on loopback HTTP) ----------------------------------------------------------------

def test_valid_address_bound_certificate_is_chosen_over_a_revoked_one(dns_server, settings, caches, pki):
    """DCDT D9/D17: several address-bound certificates; the valid one is used, and only it."""
    revoked, good = pki.leaf(emails=[ADDRESS]), pki.leaf(emails=[ADDRESS])
    pki.revoke(revoked)
    publish(dns_server, revoked, good)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert (verdict.state, verdict.certificates) == ("verified", (good,))
    assert any("was revoked" in note for note in verdict.notes)


def test_all_valid_certificates_are_handed_to_the_sender(dns_server, settings, caches, pki):
    older = pki.leaf(emails=[ADDRESS], end=dt.datetime(2027, 6, 1))
    newer = pki.leaf(emails=[ADDRESS])
    publish(dns_server, older, newer)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.certificates == (newer, older) and verdict.certificate == newer


def test_unreachable_crl_is_a_temporary_verdict_not_a_pass(dns_server, settings, caches, pki, http_server):
    publish(dns_server, pki.leaf(emails=[ADDRESS], crl_url=http_server.url("gone.crl")))
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "dns-error" and verdict.temporary
    assert verdict.reason == (
        f"The Direct certificate published for this address could not be checked for revocation: the revocation "
        f"list at {http_server.url('gone.crl')} could not be downloaded (127.0.0.1 answered HTTP 404); try again "
        "later.")


@pytest.mark.parametrize("crl_url, why", [
    ("ldap://ldap.example.org/cn=CRL", "its revocation list is not published over http."),
    ("garbage.crl", "cannot be read."),
])
def test_unusable_crl_is_untrusted_not_retried(dns_server, settings, caches, pki, http_server, crl_url, why):
    """Waiting will not fix a CRL that cannot be used at all, so this is not the retryable dns-error."""
    http_server.put("garbage.crl", b"this is not a CRL")
    url = crl_url if ":" in crl_url else http_server.url(crl_url)
    publish(dns_server, pki.leaf(emails=[ADDRESS], crl_url=url))
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "untrusted" and verdict.reason.endswith(why)
    assert "could not be checked for revocation" in verdict.reason


@pytest.fixture
def crl_ca(http_server):
    """A CA of its own, so this test can move its CRL (and the clock) without touching the shared root."""
    ca = make_ca("CRL Cache Test CA")
    http_server.put("cache-test.crl", make_crl(ca, next_update=NOW + dt.timedelta(hours=6)))
    return ca


def test_crl_is_cached_until_its_next_update(dns_server, caches, crl_ca, http_server):
    publish(dns_server, make_leaf(crl_ca, emails=[ADDRESS], crl_url=http_server.url("cache-test.crl")).cert)
    settings = DirectSettings(anchors=(crl_ca.cert,), nameservers=(dns_server.nameserver,))
    before = http_server.count("cache-test.crl")
    assert check_recipient(ADDRESS, settings, caches=caches).state == "verified"
    clock.freeze(NOW + dt.timedelta(hours=5, minutes=59))
    assert check_recipient(ADDRESS, settings, caches=caches).state == "verified"
    assert http_server.count("cache-test.crl") == before + 1
    # Past nextUpdate the list is fetched again; the CA still serving the old one is "out of date", not a pass.
    clock.freeze(NOW + dt.timedelta(hours=6, minutes=1))
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert http_server.count("cache-test.crl") == before + 2
    assert verdict.state == "dns-error" and "revocation list is out of date" in verdict.reason
    later = NOW + dt.timedelta(hours=6, minutes=1)
    http_server.put("cache-test.crl", make_crl(crl_ca, this_update=later - dt.timedelta(minutes=1),
                                               next_update=later + dt.timedelta(hours=6)))
    assert check_recipient(ADDRESS, settings, caches=caches).state == "verified"
    assert http_server.count("cache-test.crl") == before + 3


def test_revoked_intermediate_revokes_what_it_issued(dns_server, caches, http_server):
    root = make_ca("Revocation Test Root")
    issuing = make_ca("Revoked Issuing CA", issuer=root, crl_url=http_server.url("revocation-root.crl"))
    http_server.put("revocation-root.crl", make_crl(root, {issuing.cert.serial_number: NOW - dt.timedelta(days=1)}))
    http_server.put("revocation-issuing.crl", make_crl(issuing))
    publish(dns_server, make_leaf(issuing, emails=[ADDRESS], crl_url=http_server.url("revocation-issuing.crl")).cert,
            issuing.cert)
    settings = DirectSettings(anchors=(root.cert,), nameservers=(dns_server.nameserver,))
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "revoked"
    assert "the certificate authority that issued it was revoked on 2026-11-01" in verdict.reason


# --- binding, key, algorithms -------------------------------------------------------------------------

def test_address_comparison_ignores_case(dns_server, settings, caches, pki):
    publish(dns_server, pki.leaf(emails=["dr.ana@example.org"]), name="dr\\.ana.example.org")
    verdict = check_recipient("Dr.Ana@Example.org", settings, caches=caches)
    assert (verdict.state, verdict.binding, verdict.address) == ("verified", "address", "Dr.Ana@example.org")


def test_certificate_for_another_address_is_not_bound(dns_server, settings, caches, pki):
    publish(dns_server, pki.leaf(emails=[f"bob@{DOMAIN}"]))
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "untrusted"
    assert verdict.reason == (f"A Direct certificate is published for this address, but it is not bound to "
                              f"{ADDRESS}: it is issued to bob@{DOMAIN}.")


def test_wildcard_dns_name_is_rejected(dns_server, settings, caches, pki):
    publish(dns_server, pki.leaf(dns=["*.example.org"]), name=DOMAIN)
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "untrusted" and verdict.binding == ""
    assert "wildcard certificates are not allowed in Direct" in verdict.reason


def test_rsa_1024_key_is_rejected(dns_server, settings, caches, pki):
    publish(dns_server, pki.leaf(emails=[ADDRESS], key=rsa_key(1024)))
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "untrusted"
    assert "its RSA key has 1024 bits; Direct requires 2048 or more" in verdict.reason


def test_sha1_signature_is_rejected(dns_server, caches, tmp_path):
    """cryptography no longer signs with SHA-1; the real openssl command still does."""
    ca = OpenSslCA(tmp_path / "sha1-ca")
    cert_path, _ = ca.issue("ana", san=f"email:{ADDRESS}", md="sha1")
    publish(dns_server, x509.load_pem_x509_certificate(cert_path.read_bytes()))
    anchors = (x509.load_pem_x509_certificate(ca.cert_path.read_bytes()),)
    settings = DirectSettings(anchors=anchors, nameservers=(dns_server.nameserver,))
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "untrusted"
    assert "it is signed with SHA-1, which Direct no longer accepts" in verdict.reason


def test_ec_p256_certificate_is_accepted(dns_server, settings, caches, pki):
    cert = pki.leaf(emails=[ADDRESS], key=ec_key())
    publish(dns_server, cert)
    assert check_recipient(ADDRESS, settings, caches=caches).certificates == (cert,)


def test_ec_p521_certificate_is_rejected(dns_server, settings, caches, pki):
    publish(dns_server, pki.leaf(emails=[ADDRESS], key=ec_key(ec.SECP521R1)))
    verdict = check_recipient(ADDRESS, settings, caches=caches)
    assert verdict.state == "untrusted" and "P-256 and P-384" in verdict.reason


def test_signing_only_certificate_is_passed_over_for_an_encryption_one(dns_server, settings, caches, pki):
    signing = pki.leaf(emails=[ADDRESS], encrypt=False)
    encryption = pki.leaf(emails=[ADDRESS])
    publish(dns_server, signing, encryption)
    assert check_recipient(ADDRESS, settings, caches=caches).certificates == (encryption,)


def test_malformed_address_asks_nothing(dns_server, settings, caches):
    verdict = check_recipient("ana at example.org", settings, caches=caches)
    assert verdict.state == "malformed-address"
    assert verdict.reason == "This is not a valid Direct address: an address cannot contain spaces."
    assert dns_server.queries == []


# --- speed and calling contexts -------------------------------------------------------------------------

def test_cold_and_warm_checks_are_fast(dns_server, settings, pki):
    publish(dns_server, pki.leaf(emails=[ADDRESS]))
    check_recipient(ADDRESS, settings, caches=Caches())  # imports and first-use costs out of the way
    caches = Caches()
    started = time.perf_counter()
    assert check_recipient(ADDRESS, settings, caches=caches).state == "verified"
    cold = time.perf_counter() - started
    started = time.perf_counter()
    assert check_recipient(ADDRESS, settings, caches=caches).state == "verified"
    warm = time.perf_counter() - started
    assert cold < 1.0 and warm < 0.1, (cold, warm)


async def test_works_when_called_inside_an_event_loop(dns_server, settings, caches, pki):
    publish(dns_server, pki.leaf(emails=[ADDRESS]))
    assert check_recipient(ADDRESS, settings, caches=caches).state == "verified"
    verdict = await asyncio.to_thread(check_recipient, ADDRESS, settings, caches=caches)
    assert verdict.ok


# --- the same checks for an inbound message's signer ------------------------------------------------------

def test_signer_certificate_is_judged_for_signing(pki):
    checker = TrustChecker((pki.root.cert,), crl_cache=TtlCache())
    signing_only = pki.leaf(emails=[ADDRESS], encrypt=False)
    assert checker.assess(signing_only, ADDRESS, purpose=SIGN).reason == (
        "The sender's certificate is trusted (issued by “Referdesk Direct Test Root”, valid until 2028-01-01).")
    assert checker.assess(signing_only, ADDRESS).status == "unusable"  # as a recipient's: nothing to encrypt to
    expired = pki.leaf(emails=[ADDRESS], end=dt.datetime(2026, 6, 1))
    assert checker.assess(expired, ADDRESS, purpose=SIGN).reason == "The sender's certificate expired on 2026-06-01."
    stranger = make_leaf(pki.other_root, emails=[ADDRESS]).cert
    assert checker.assess(stranger, ADDRESS, purpose=SIGN).reason == (
        "The sender's certificate is not trusted: its issuer “Somebody Else's Root” is not in your trust bundle.")


def test_trust_bundle_is_read_once_until_it_changes(tmp_path, pki):
    folder = tmp_path / "anchors"
    folder.mkdir()
    write_pem(folder / "root.pem", pki.root.cert)
    settings = DirectSettings(trust_anchors=folder)
    first = anchors_for(settings)
    assert anchors_for(settings) is first and first == (pki.root.cert,)
    write_pem(folder / "other.pem", pki.other_root.cert)
    assert set(anchors_for(settings)) == {pki.root.cert, pki.other_root.cert}


def test_threads_checking_at_once_on_cold_caches_all_get_the_true_verdict(pki):
    """A worker checks several recipients at once on its first batch. asn1crypto decodes lazily, writing into
    the shared anchors and CRLs as it goes, so unserialised threads saw half-decoded objects and a good
    certificate came out "malformed" (a permanent failure). Thread switches forced very often to expose it."""
    import sys
    import threading

    from transports.direct import trust

    leaves = [pki.leaf(emails=[f"user{i}@{DOMAIN}"]) for i in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(15):
            trust._trust_manager.cache_clear()
            # anchors freshly loaded, so nothing of them is decoded yet
            root = x509.load_der_x509_certificate(pki.root.cert.public_bytes(serialization.Encoding.DER))
            checker = TrustChecker((root,), crl_cache=TtlCache())
            start = threading.Barrier(len(leaves))
            verdicts: dict[int, str] = {}

            def check(i: int) -> None:
                start.wait()
                try:
                    verdicts[i] = checker.assess(leaves[i], f"user{i}@{DOMAIN}").status
                except Exception as exc:  # noqa: BLE001 - what a worker would have turned into a retry
                    verdicts[i] = f"raised {type(exc).__name__}: {exc}"

            threads = [threading.Thread(target=check, args=(i,)) for i in range(len(leaves))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert verdicts == {i: "valid" for i in range(len(leaves))}
    finally:
        sys.setswitchinterval(interval)
