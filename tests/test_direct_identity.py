"""The practice's Direct identity: PKCS#12 loading, certificate checks and trust anchors, on certificates made
here (with cryptography and with the real `openssl` command) and on the Direct Project's published samples."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from direct_pki import (ADDRESS, NOW, Issued, OpenSslCA, ec_key, make_ca, make_leaf, rsa_key, write_der,
                        write_key, write_p12, write_pem)
from transports.direct.identity import (DirectSetupError, Identity, check_address, check_chain, check_identity,
                                        describe_anchors, describe_certificate, load_identity, load_trust_anchors)

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "standards" / "direct" / "javari-agent" / "certs"


@pytest.fixture(scope="session")
def root() -> Issued:
    return make_ca("Referdesk Test Root")


@pytest.fixture(scope="session")
def address_bound(root) -> Issued:
    return make_leaf(root, emails=[ADDRESS])


@pytest.fixture(scope="session")
def ossl(tmp_path_factory) -> OpenSslCA:
    return OpenSslCA(tmp_path_factory.mktemp("openssl-ca"))


def identity_of(leaf: Issued, *extra) -> Identity:
    return Identity(certificate=leaf.cert, private_key=leaf.key, extra_certs=tuple(extra))


def levels(findings) -> list[str]:
    return [f.level for f in findings]


def finding(findings, text: str):
    hits = [f for f in findings if text in f.message]
    assert hits, f"no finding mentions {text!r}: {[f.message for f in findings]}"
    return hits[0]


# --- load_identity -------------------------------------------------------------------------------------

def test_p12_with_passphrase_loads_certificate_key_and_intermediates(tmp_path, root):
    intermediate = make_ca("Referdesk Test Intermediate", issuer=root, key=rsa_key(slot="intermediate"))
    leaf = make_leaf(intermediate, emails=[ADDRESS])
    path = write_p12(tmp_path / "practice.p12", leaf, b"correct horse", extra=[intermediate.cert])
    identity = load_identity(path, b"correct horse")
    assert identity.certificate == leaf.cert
    assert identity.extra_certs == (intermediate.cert,)
    assert levels(check_identity(identity, ADDRESS, now=NOW)) == ["ok"] * 6


def test_wrong_or_missing_passphrase_is_said_plainly(tmp_path, address_bound):
    path = write_p12(tmp_path / "practice.p12", address_bound, b"correct horse")
    with pytest.raises(DirectSetupError, match="wrong passphrase"):
        load_identity(path, b"battery staple")
    with pytest.raises(DirectSetupError, match="protected by a passphrase; none was given"):
        load_identity(path, None)


def test_p12_without_passphrase_loads_with_none_or_empty(tmp_path, address_bound):
    path = write_p12(tmp_path / "open.p12", address_bound, None)
    assert load_identity(path, None).certificate == address_bound.cert
    assert load_identity(path, b"").certificate == address_bound.cert


def test_files_that_are_not_a_usable_p12(tmp_path, address_bound):
    with pytest.raises(DirectSetupError, match="file not found"):
        load_identity(tmp_path / "nope.p12", None)
    with pytest.raises(DirectSetupError, match="is a folder"):
        load_identity(tmp_path, None)
    with pytest.raises(DirectSetupError, match=r"not a PKCS#12 \(.p12/.pfx\) file$"):
        load_identity(write_der(tmp_path / "cert.der", address_bound.cert), None)
    with pytest.raises(DirectSetupError, match="PEM text file"):
        load_identity(write_pem(tmp_path / "cert.pem", address_bound.cert), None)
    (tmp_path / "empty.p12").write_bytes(b"")
    with pytest.raises(DirectSetupError, match="not a PKCS#12"):
        load_identity(tmp_path / "empty.p12", None)


def test_p12_without_key_or_without_certificate(tmp_path, address_bound):
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption

    no_key = pkcs12.serialize_key_and_certificates(b"x", None, address_bound.cert, None,
                                                   BestAvailableEncryption(b"pw"))
    (tmp_path / "nokey.p12").write_bytes(no_key)
    with pytest.raises(DirectSetupError, match="contains no private key"):
        load_identity(tmp_path / "nokey.p12", b"pw")
    no_cert = pkcs12.serialize_key_and_certificates(b"x", address_bound.key, None, None,
                                                    BestAvailableEncryption(b"pw"))
    (tmp_path / "nocert.p12").write_bytes(no_cert)
    with pytest.raises(DirectSetupError, match="contains no certificate"):
        load_identity(tmp_path / "nocert.p12", b"pw")


def test_openssl_made_p12_with_passphrase(ossl):
    ossl.issue("practice", san=f"email:{ADDRESS}")
    path = ossl.p12("practice", "s3cret")
    identity = load_identity(path, b"s3cret")
    assert len(identity.extra_certs) == 1  # the CA, added with -certfile
    assert levels(check_identity(identity, ADDRESS, now=NOW)) == ["ok"] * 6
    with pytest.raises(DirectSetupError, match="wrong passphrase"):
        load_identity(path, b"S3cret")


def test_direct_project_encrypted_p12_sample():
    identity = load_identity(SAMPLES / "gm2552encrypted.p12", b"1kingpuff")
    findings = check_identity(identity, "gm2552@securehealthemail.com", now=NOW)
    assert finding(findings, "private key matches").level == "ok"
    assert finding(findings, "expired on 2011-05-28").level == "error"
    assert finding(findings, "no subjectAltName").level == "error"
    assert finding(findings, "RSA 1024-bit").level == "error"
    assert finding(findings, "SHA-1").level == "error"
    with pytest.raises(DirectSetupError, match="wrong passphrase"):
        load_identity(SAMPLES / "gm2552encrypted.p12", b"kingpuff")


# --- check_identity ------------------------------------------------------------------------------------

def test_address_bound_certificate_passes_everything(address_bound):
    findings = check_identity(identity_of(address_bound), ADDRESS, now=NOW)
    assert levels(findings) == ["ok"] * 6
    assert finding(findings, "Address-bound").message.endswith(ADDRESS)
    assert "valid 2026-01-01 to 2028-01-01" in findings[1].message


def test_local_part_compares_case_insensitively(root):
    leaf = make_leaf(root, emails=["Referrals@Direct.Example.org"])
    findings = check_identity(identity_of(leaf), "REFERRALS@direct.example.ORG", now=NOW)
    assert finding(findings, "Address-bound").level == "ok"


def test_domain_bound_certificate_is_named_as_such(root):
    leaf = make_leaf(root, dns=["direct.example.org"])
    findings = check_identity(identity_of(leaf), ADDRESS, now=NOW)
    assert finding(findings, "Domain-bound certificate").level == "ok"
    assert levels(findings) == ["ok"] * 6


def test_certificate_for_another_address_or_domain(root):
    other = make_leaf(root, emails=["intake@direct.example.org"], dns=["other.example.org"])
    found = finding(check_identity(identity_of(other), ADDRESS, now=NOW), "not bound to")
    assert found.level == "error"
    assert "email intake@direct.example.org, DNS other.example.org" in found.message


def test_wildcard_and_missing_subject_alt_names_are_errors(root):
    wildcard = make_leaf(root, dns=["*.example.org"])
    assert "wildcards" in finding(check_identity(identity_of(wildcard), ADDRESS, now=NOW), "not bound").message
    bare = make_leaf(root)
    assert finding(check_identity(identity_of(bare), ADDRESS, now=NOW), "no subjectAltName").level == "error"


def test_expired_not_yet_valid_and_expiring_soon(root):
    expired = make_leaf(root, emails=[ADDRESS], start=dt.datetime(2024, 1, 1), end=dt.datetime(2025, 1, 1))
    found = check_identity(identity_of(expired), ADDRESS, now=NOW)[1]
    assert (found.level, found.message) == ("error", "Certificate expired on 2025-01-01 (valid 2024-01-01 to "
                                                     "2025-01-01)")
    future = make_leaf(root, emails=[ADDRESS], start=dt.datetime(2027, 1, 1), end=dt.datetime(2029, 1, 1))
    found = check_identity(identity_of(future), ADDRESS, now=NOW)[1]
    assert (found.level, found.message) == ("error", "Certificate is not yet valid: valid 2027-01-01 to "
                                                     "2029-01-01")
    soon = make_leaf(root, emails=[ADDRESS], end=dt.datetime(2026, 11, 20))
    found = check_identity(identity_of(soon), ADDRESS, now=NOW)[1]
    assert found.level == "warning" and "expires in 17 days" in found.message


def test_now_may_be_aware_or_naive(address_bound):
    aware = NOW.replace(tzinfo=dt.timezone.utc)
    assert check_identity(identity_of(address_bound), ADDRESS, now=aware) == \
        check_identity(identity_of(address_bound), ADDRESS, now=NOW)


def test_weak_and_accepted_keys(root):
    weak = make_leaf(root, emails=[ADDRESS], key=rsa_key(1024))
    assert finding(check_identity(identity_of(weak), ADDRESS, now=NOW), "1024-bit").level == "error"
    p256 = make_leaf(root, emails=[ADDRESS], key=ec_key(ec.SECP256R1), usage=(True, False), key_agreement=True)
    assert levels(check_identity(identity_of(p256), ADDRESS, now=NOW)) == ["ok"] * 6
    p521 = make_leaf(root, emails=[ADDRESS], key=ec_key(ec.SECP521R1), usage=(True, False), key_agreement=True)
    assert finding(check_identity(identity_of(p521), ADDRESS, now=NOW), "secp521r1").level == "error"


def test_openssl_made_sha1_and_rsa1024_certificates(ossl):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    cert, key = ossl.issue("sha1signed", san=f"email:{ADDRESS}", md="sha1")
    leaf = Issued(x509.load_pem_x509_certificate(cert.read_bytes()), load_pem_private_key(key.read_bytes(), None))
    findings = check_identity(identity_of(leaf), ADDRESS, now=NOW)
    assert finding(findings, "signed with SHA-1").level == "error"
    assert finding(findings, "Address-bound").level == "ok"

    ossl.issue("small", san="DNS:direct.example.org", bits=1024)
    identity = load_identity(ossl.p12("small", "pw"), b"pw")
    findings = check_identity(identity, ADDRESS, now=NOW)
    assert finding(findings, "RSA 1024-bit key is too weak").level == "error"
    assert finding(findings, "Domain-bound").level == "ok"


def test_key_that_does_not_belong_to_the_certificate(address_bound):
    mismatched = Identity(certificate=address_bound.cert, private_key=rsa_key(slot="someone else"))
    found = check_identity(mismatched, ADDRESS, now=NOW)[0]
    assert (found.level, found.message) == ("error", "The private key does not belong to this certificate: "
                                                     "export the matching pair")


def test_key_usage(root):
    signing_only = make_leaf(root, emails=[ADDRESS], usage=(True, False))
    found = check_identity(identity_of(signing_only), ADDRESS, now=NOW)[5]
    assert found.level == "warning" and "keyEncipherment" in found.message
    unrestricted = make_leaf(root, emails=[ADDRESS], usage=None)
    assert check_identity(identity_of(unrestricted), ADDRESS, now=NOW)[5].level == "ok"


def test_describe_certificate(address_bound):
    assert describe_certificate(address_bound.cert) == (
        f"certificate for {ADDRESS} (address-bound), valid 2026-01-01 to 2028-01-01, issued by "
        "“Referdesk Test Root”")


def test_check_address_uses_the_form_rules():
    assert check_address(" Referrals@Direct.Example.org ").message == \
        "Direct address Referrals@direct.example.org is well formed"
    bad = check_address("referrals@@example.org")
    assert bad.level == "error" and "exactly one @" in bad.message


# --- trust anchors -------------------------------------------------------------------------------------

def test_anchor_folder_of_pem_and_der_files(tmp_path, root):
    other = make_ca("Another Root")
    folder = tmp_path / "anchors"
    folder.mkdir()
    write_pem(folder / "root.pem", root.cert)
    write_der(folder / "other.der", other.cert)
    (folder / ".hidden").write_text("ignored")
    anchors = load_trust_anchors(folder)
    assert sorted(a.subject.rfc4514_string() for a in anchors) == ["CN=Another Root", "CN=Referdesk Test Root"]
    assert describe_anchors(anchors).startswith("2 trust anchors: ")


def test_pem_file_with_several_certificates(tmp_path, root):
    bundle = write_pem(tmp_path / "bundle.pem", root.cert, make_ca("Another Root").cert)
    assert len(load_trust_anchors(bundle)) == 2


def test_p7b_bundles_made_by_openssl_pem_and_der(tmp_path, ossl, root):
    extra = write_pem(tmp_path / "root.pem", root.cert)
    pem = ossl.p7b(tmp_path / "anchors.p7b", ossl.cert_path, extra)
    der = ossl.p7b(tmp_path / "anchors.p7c", ossl.cert_path, extra, der=True)
    assert pem.read_bytes().startswith(b"-----BEGIN PKCS7-----")
    for path in (pem, der):
        names = [a.subject.rfc4514_string() for a in load_trust_anchors(path)]
        assert names == ["CN=OpenSSL Test Root", "CN=Referdesk Test Root"]


def test_anchor_errors(tmp_path):
    with pytest.raises(DirectSetupError, match="no such file or folder"):
        load_trust_anchors(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DirectSetupError, match="holds no certificate files"):
        load_trust_anchors(empty)
    (empty / "README.txt").write_text("DirectTrust bundle, downloaded 2026-10-01")
    with pytest.raises(DirectSetupError, match=r"README.txt: not a certificate"):
        load_trust_anchors(empty)
    (tmp_path / "junk.p7b").write_bytes(b"\x30\x03\x02\x01\x01")
    with pytest.raises(DirectSetupError, match="not a certificate or certificate bundle"):
        load_trust_anchors(tmp_path / "junk.p7b")


def test_chain_to_an_anchor_directly_and_through_the_p12_intermediates(root, address_bound):
    found = check_chain(identity_of(address_bound), [make_ca("Another Root").cert, root.cert], now=NOW)
    assert (found.level, found.message) == ("ok", "Certificate chains to trust anchor “Referdesk Test Root”")
    intermediate = make_ca("Referdesk Test Intermediate", issuer=root, key=rsa_key(slot="intermediate"))
    leaf = make_leaf(intermediate, emails=[ADDRESS])
    found = check_chain(identity_of(leaf, intermediate.cert), [root.cert], now=NOW)
    assert (found.level, found.message) == ("ok", "Certificate chains to trust anchor “Referdesk Test Root” "
                                                  "via 1 intermediate")
    found = check_chain(identity_of(leaf), [root.cert], now=NOW)  # intermediate not shipped in the .p12
    assert found.level == "error" and "its issuer “Referdesk Test Intermediate” is not among them" in found.message


def test_untrusted_and_same_name_impostor(address_bound):
    found = check_chain(identity_of(address_bound), [make_ca("Another Root").cert], now=NOW)
    assert found.message == ("Certificate does not chain to any of the 1 trust anchors: its issuer "
                             "“Referdesk Test Root” is not among them")
    impostor = make_ca("Referdesk Test Root", key=rsa_key(slot="impostor"))
    found = check_chain(identity_of(address_bound), [impostor.cert], now=NOW)
    assert found.level == "error" and "a different CA with the same name" in found.message


def test_expired_anchor(address_bound, root):
    old = make_ca("Referdesk Test Root", key=root.key, start=dt.datetime(2015, 1, 1), end=dt.datetime(2025, 1, 1))
    found = check_chain(identity_of(address_bound), [old.cert], now=NOW)
    assert found.level == "error" and "outside its validity (2015-01-01 to 2025-01-01)" in found.message


def test_openssl_p12_chains_to_its_openssl_p7b(ossl, tmp_path):
    ossl.issue("chained", san=f"email:{ADDRESS}")
    identity = load_identity(ossl.p12("chained", "pw", chain=False), b"pw")
    anchors = load_trust_anchors(ossl.p7b(tmp_path / "bundle.p7b", ossl.cert_path))
    assert check_chain(identity, anchors, now=NOW).level == "ok"


def test_direct_project_samples_sha1_chain_and_expired_certificate(tmp_path):
    identity = load_identity(SAMPLES / "test.email.com.p12", None)
    anchors = load_trust_anchors(SAMPLES / "Test_Alt_Name_CA_ROO.der")
    assert check_chain(identity, anchors, now=NOW).level == "ok"  # SHA-1 signed, verified all the same
    assert check_chain(identity, load_trust_anchors(SAMPLES / "secureHealthEmailCACert.der"), now=NOW).level \
        == "error"
    findings = check_identity(identity, "anyone@test.email.com", now=NOW)
    assert finding(findings, "Domain-bound").level == "ok"

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_der_private_key

    expired = Identity(x509.load_der_x509_certificate((SAMPLES / "expired.der").read_bytes()),
                       load_der_private_key((SAMPLES / "expiredKey.der").read_bytes(), None))
    findings = check_identity(expired, "expired@testexpired.email.com", now=NOW)
    assert finding(findings, "expired on 2010-12-03").level == "error"
    assert finding(findings, "private key matches").level == "ok"
    folder = tmp_path / "anchors"
    folder.mkdir()
    for name in ("Test_Alt_Name_CA_ROO.der", "secureHealthEmailCACert.der"):
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    # The published expired.der names Test_Alt_Name_CA_ROO as issuer but was signed by another key of that name.
    found = check_chain(expired, load_trust_anchors(folder), now=NOW)
    assert found.level == "error" and "a different CA with the same name" in found.message


def test_write_key_helper_round_trips(tmp_path, address_bound):
    """The helper the SMTP tests use for server keys writes a key openssl itself can read."""
    import subprocess

    path = write_key(tmp_path / "k.pem", address_bound.key)
    subprocess.run(["openssl", "pkey", "-in", str(path), "-noout"], check=True)
