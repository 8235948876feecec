"""S/MIME for Direct: messages referdesk seals are opened and verified by the real `openssl cms`, messages
`openssl cms` makes (and the Direct Project's and ETT's published samples) are opened by referdesk."""

from __future__ import annotations

import base64
import calendar
import datetime as dt
import email
import email.policy
import re
import subprocess
import warnings
from dataclasses import dataclass
from email.header import decode_header, make_header
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from direct_pki import ADDRESS, NOW, Issued, ec_key, make_ca, make_leaf, rsa_key, write_key, write_pem
from transports.direct.identity import DirectSetupError, Identity, load_identity
from transports.direct.smime import (Part, SmimeError, compose_message, encrypt, open_message, seal_message,
                                     sign)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "standards" / "direct"
PARTNER = "dr.okafor@direct.partner.example"
PARTNER2 = "intake@direct.partner.example"
ATTIME = str(calendar.timegm(NOW.timetuple()))
CCDA = ('<?xml version="1.0" encoding="UTF-8"?>\n<ClinicalDocument xmlns="urn:hl7-org:v3">'
        '<title>Referral Note — Zoë Ångström</title></ClinicalDocument>\n').encode()
XDM = bytes(range(256)) * 40 + b"PK\x05\x06" + b"\0" * 18
TEXT = "Dear Dr Okafor,\nplease see Zoë Ångström (DOB 1961-04-09) — knee pain.\n\nRegards\n"
SUBJECT = "Referral: Zoë Ångström"
ATTACHMENTS = [Part("referral.xml", "text/xml", CCDA), Part("referral-xdm.zip", "application/zip", XDM)]


@dataclass
class Pki:
    folder: Path
    ca: Issued
    sender: Issued
    partner: Issued
    partner2: Issued
    ec_sender: Issued

    def identity(self, leaf: Issued, *extra) -> Identity:
        return Identity(certificate=leaf.cert, private_key=leaf.key, extra_certs=tuple(extra))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("smime-pki")
    ca = make_ca("Referdesk S/MIME Test Root")
    leaves = {
        "sender": make_leaf(ca, emails=[ADDRESS], key=rsa_key(slot="smime-sender"), cn="sender"),
        "partner": make_leaf(ca, emails=[PARTNER], key=rsa_key(slot="smime-partner"), cn="partner"),
        "partner2": make_leaf(ca, emails=[PARTNER2], key=rsa_key(slot="smime-partner2"), cn="partner2"),
        "ec_sender": make_leaf(ca, emails=[ADDRESS], key=ec_key(), cn="ec-sender"),
    }
    write_pem(folder / "ca.pem", ca.cert)
    for name, leaf in leaves.items():
        write_pem(folder / f"{name}.pem", leaf.cert)
        write_key(folder / f"{name}.key", leaf.key)
    return Pki(folder, ca, **leaves)


def openssl(folder: Path, *args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], cwd=folder, input=data, capture_output=True)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def seal(pki: Pki, recipients=(PARTNER,), certs=None, identity=None, **overrides) -> bytes:
    arguments = dict(sender=ADDRESS, recipients=list(recipients), subject=SUBJECT, text=TEXT,
                     attachments=ATTACHMENTS, message_id="20261102100000.42@direct.example.org", date=NOW,
                     identity=identity or pki.identity(pki.sender, pki.ca.cert),
                     recipient_certs=certs or [pki.partner.cert])
    arguments.update(overrides)
    return seal_message(**arguments)


def decrypt_with_openssl(pki: Pki, message: bytes, who: str) -> bytes:
    (pki.folder / "in.eml").write_bytes(message)
    return openssl(pki.folder, "cms", "-decrypt", "-in", "in.eml", "-recip", f"{who}.pem", "-inkey", f"{who}.key")


def verify_with_openssl(pki: Pki, signed: bytes) -> bytes:
    """openssl's S/MIME verification, then the same signature over the exact first-part bytes (detached, binary):
    `openssl cms -verify -binary` itself mis-splits an all-CRLF multipart/signed (it keeps the CR before the
    boundary), and text mode would hide a signature made over LF bytes."""
    (pki.folder / "signed.eml").write_bytes(signed)
    verified = openssl(pki.folder, "cms", "-verify", "-in", "signed.eml", "-CAfile", "ca.pem", "-attime", ATTIME)
    boundary = re.search(rb'boundary="([^"]+)"', headers_of(signed))[1]
    _, content, signature, _ = signed.split(b"\r\n--" + boundary)
    content = content.removeprefix(b"\r\n")
    (pki.folder / "content.bin").write_bytes(content)
    (pki.folder / "signature.der").write_bytes(base64.b64decode(signature.split(b"\r\n\r\n", 1)[1]))
    openssl(pki.folder, "cms", "-verify", "-binary", "-inform", "DER", "-in", "signature.der", "-content",
            "content.bin", "-CAfile", "ca.pem", "-attime", ATTIME, "-out", "/dev/null")
    return verified


def lines_of(data: bytes) -> list[bytes]:
    assert b"\n" not in data.replace(b"\r\n", b""), "a bare LF or CR"
    return data.split(b"\r\n")


def headers_of(entity: bytes) -> bytes:
    return entity.split(b"\r\n\r\n", 1)[0]


def identity_from(cert: Path, key: Path) -> Identity:
    return Identity(x509.load_pem_x509_certificate(cert.read_bytes()),
                    serialization.load_pem_private_key(key.read_bytes(), None))


# --- what referdesk sends, checked by openssl -----------------------------------------------------------

def test_sealed_message_decrypts_and_verifies_with_openssl(pki):
    message = seal(pki)

    outer = headers_of(message)
    assert outer.isascii() and b"Message-ID: <20261102100000.42@direct.example.org>" in outer
    assert (b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=smime.p7m") in outer
    assert b"x-pkcs7" not in message
    body_lines = lines_of(message.split(b"\r\n\r\n", 1)[1])
    assert max(len(line) for line in body_lines) == 76
    (pki.folder / "sealed.eml").write_bytes(message)
    printed = openssl(pki.folder, "cms", "-cmsout", "-print", "-in", "sealed.eml").decode()
    assert "aes-256-cbc" in printed and "rsaEncryption" in printed

    signed = decrypt_with_openssl(pki, message, "partner")
    lines_of(signed)
    signed_head = headers_of(signed).decode("ascii")
    assert 'multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;' in signed_head
    parsed = email.message_from_bytes(signed, policy=email.policy.default)
    content, signature = parsed.get_payload()
    assert content.get_content_type() == "message/rfc822"
    assert signature.get_content_type() == "application/pkcs7-signature"
    assert signature.get_filename() == "smime.p7s"

    verified = verify_with_openssl(pki, signed)
    assert verified.startswith(b"Content-Type: message/rfc822\r\n\r\nDate: ")
    inner_bytes = verified.split(b"\r\n\r\n", 1)[1]
    lines_of(inner_bytes)
    assert headers_of(inner_bytes).isascii()
    inner = email.message_from_bytes(inner_bytes, policy=email.policy.default)
    assert inner["Disposition-Notification-Options"] == "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true"
    assert inner["Disposition-Notification-To"] == ADDRESS
    assert inner["Message-ID"] == "<20261102100000.42@direct.example.org>"
    assert inner["To"] == PARTNER and inner["From"] == ADDRESS and inner["MIME-Version"] == "1.0"
    assert str(make_header(decode_header(inner["Subject"]))) == SUBJECT
    assert inner.get_content_type() == "multipart/mixed"
    text, ccda, xdm = inner.iter_parts()
    assert text.get_content_type() == "text/plain" and text.get_content().replace("\r\n", "\n") == TEXT.rstrip("\n")
    assert ccda.get_content_type() == "text/xml" and ccda.get_filename() == "referral.xml"
    assert ccda.get_payload(decode=True) == CCDA
    assert xdm.get_content_type() == "application/zip" and xdm.get_payload(decode=True) == XDM
    assert xdm["Content-Disposition"].startswith("attachment")


def test_each_of_two_recipients_can_decrypt(pki):
    message = seal(pki, recipients=(PARTNER, PARTNER2), certs=[pki.partner.cert, pki.partner2.cert])
    assert b"To: " + PARTNER.encode() + b",\r\n " + PARTNER2.encode() in headers_of(message)
    for who, leaf in (("partner", pki.partner), ("partner2", pki.partner2)):
        verify_with_openssl(pki, decrypt_with_openssl(pki, message, who))
        opened = open_message(message, [pki.identity(leaf)])
        assert opened.encrypted and opened.signers[0].ok


def test_ecdsa_identity_signs_and_openssl_verifies(pki):
    message = seal(pki, identity=pki.identity(pki.ec_sender, pki.ca.cert))
    verify_with_openssl(pki, decrypt_with_openssl(pki, message, "partner"))
    opened = open_message(message, [pki.identity(pki.partner)])
    assert [(s.certificate, s.ok) for s in opened.signers] == [(pki.ec_sender.cert, True)]


def test_sign_alone_is_a_two_part_signature_over_the_canonical_bytes(pki):
    entity = b"Content-Type: text/plain\n\nline one\nline two\n"
    signed = sign(entity, pki.identity(pki.sender))
    lines_of(signed)
    assert verify_with_openssl(pki, signed) == entity.replace(b"\n", b"\r\n")
    opened = open_message(b"From: x@y.example\r\nMIME-Version: 1.0\r\n" + signed, [])
    assert not opened.encrypted and opened.signed and opened.signers[0].ok and not opened.wrapped
    assert opened.content == entity.replace(b"\n", b"\r\n")


def test_composition_is_deterministic_ascii_and_optional_mdn(pki):
    arguments = dict(sender=ADDRESS, recipients=[PARTNER], subject=SUBJECT, text=TEXT,
                     attachments=[Part("Überweisung.pdf", "application/pdf", b"%PDF-1.7\n")],
                     message_id="abc@direct.example.org",
                     date=dt.datetime(2026, 11, 2, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))))
    first, second = compose_message(**arguments), compose_message(**arguments)
    assert first == second and first.isascii()
    assert b"Date: Mon, 02 Nov 2026 05:00:00 -0500\r\n" in first
    assert b"filename*=utf-8''%C3%9Cberweisung.pdf" in first
    quiet = compose_message(**arguments, request_mdn=False)
    assert b"Disposition-Notification" not in quiet
    with pytest.raises(ValueError):
        compose_message(**{**arguments, "subject": "hi\r\nBcc: everyone@example.org"})
    with pytest.raises(ValueError):
        compose_message(**{**arguments, "recipients": ["zoë@direct.partner.example"]})


def test_encrypting_to_a_non_rsa_certificate_is_refused(pki):
    with pytest.raises(SmimeError, match="RSA"):
        encrypt(b"Content-Type: text/plain\r\n\r\nhi\r\n", [pki.ec_sender.cert])


# --- what referdesk opens -------------------------------------------------------------------------------

def test_own_sealed_message_round_trips(pki):
    message = seal(pki)
    opened = open_message(message, [pki.identity(pki.sender), pki.identity(pki.partner)])
    assert (opened.encrypted, opened.signed, opened.wrapped) == (True, True, True)
    assert opened.content_encryption == "aes256_cbc"
    assert opened.content == compose_message(
        sender=ADDRESS, recipients=[PARTNER], subject=SUBJECT, text=TEXT,
        attachments=ATTACHMENTS, message_id="20261102100000.42@direct.example.org", date=NOW)
    [signer] = opened.signers
    assert signer.certificate == pki.sender.cert and signer.ok and signer.digest_algorithm == "sha256"
    assert set(opened.certificates) == {pki.sender.cert, pki.ca.cert}


INNER = (b"Content-Type: message/rfc822\r\n\r\nFrom: " + PARTNER.encode() + b"\r\nTo: " + ADDRESS.encode()
         + b"\r\nSubject: Consult report\r\nMessage-ID: <r1@direct.partner.example>\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: text/plain; charset=utf-8\r\n\r\nReport attached.\r\n")


@pytest.mark.parametrize("signer, sign_options, encrypt_options, cipher, digest", [
    ("sender", ["-md", "sha256"], ["-aes256"], "aes256_cbc", "sha256"),
    ("sender", ["-md", "sha256"], ["-aes128", "-keyopt", "rsa_padding_mode:oaep"], "aes128_cbc", "sha256"),
    ("sender", ["-md", "sha256"], ["-aes256", "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"],
     "aes256_cbc", "sha256"),
    ("sender", ["-md", "sha256"], ["-aes-128-gcm"], "aes128_gcm", "sha256"),
    ("sender", ["-md", "sha256"], ["-aes-256-gcm", "-keyopt", "rsa_padding_mode:oaep"], "aes256_gcm", "sha256"),
    ("sender", ["-md", "sha256"], ["-des3"], "tripledes_3key", "sha256"),
    ("ec_sender", ["-md", "sha256"], ["-aes256"], "aes256_cbc", "sha256"),
    ("sender", ["-keyopt", "rsa_padding_mode:pss", "-md", "sha256"], ["-aes256"], "aes256_cbc", "sha256"),
    ("sender", ["-md", "sha384"], ["-aes192"], "aes192_cbc", "sha384"),
    ("ec_sender", ["-md", "sha512"], ["-aes256"], "aes256_cbc", "sha512"),
    ("sender", ["-md", "sha1", "-nodetach"], ["-aes256"], "aes256_cbc", "sha1"),
], ids=["rsa-aes256", "oaep-sha1", "oaep-sha256", "aes128-gcm", "oaep-aes256-gcm", "des3", "ecdsa", "rsa-pss",
        "sha384", "ecdsa-sha512", "opaque-signed-data"])
def test_opens_what_openssl_signs_and_encrypts(pki, signer, sign_options, encrypt_options, cipher, digest):
    signed = openssl(pki.folder, "cms", "-sign", "-signer", f"{signer}.pem", "-inkey", f"{signer}.key",
                     *sign_options, data=INNER)
    recipient = ["-recip", "partner.pem"]
    keyopts = [o for o in encrypt_options if o.startswith("rsa_") or o == "-keyopt"]
    ciphers = [o for o in encrypt_options if o not in keyopts]
    message = openssl(pki.folder, "cms", "-encrypt", *ciphers, *recipient, *keyopts, data=signed)
    opened = open_message(message, [pki.identity(pki.sender), pki.identity(pki.partner)])
    assert (opened.encrypted, opened.signed, opened.wrapped, opened.content_encryption) == (True, True, True, cipher)
    [result] = opened.signers
    assert (result.digest_ok, result.signature_ok, result.error) == (True, True, "")
    assert result.certificate == getattr(pki, signer).cert and result.digest_algorithm == digest
    assert opened.content.replace(b"\r\n", b"\n") == INNER.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")


def test_recipient_and_signer_named_by_subject_key_identifier(pki):
    key = rsa_key(slot="smime-keyid")
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyid")]))
            .issuer_name(pki.ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime(2026, 1, 1)).not_valid_after(dt.datetime(2028, 1, 1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(pki.ca.key, hashes.SHA256()))
    write_pem(pki.folder / "keyid.pem", leaf)
    write_key(pki.folder / "keyid.key", key)
    signed = openssl(pki.folder, "cms", "-sign", "-keyid", "-signer", "keyid.pem", "-inkey", "keyid.key", data=INNER)
    message = openssl(pki.folder, "cms", "-encrypt", "-keyid", "-aes256", "keyid.pem", data=signed)
    printed = openssl(pki.folder, "cms", "-cmsout", "-print", data=message).decode()
    assert "d.subjectKeyIdentifier" in printed
    opened = open_message(message, [pki.identity(pki.partner), Identity(leaf, key)])
    assert opened.encrypted and [(s.certificate, s.ok) for s in opened.signers] == [(leaf, True)]


def test_signed_but_unencrypted_message_opens_unencrypted(pki):
    signed = openssl(pki.folder, "cms", "-sign", "-signer", "sender.pem", "-inkey", "sender.key", data=INNER)
    opened = open_message(signed, [pki.identity(pki.partner)])
    assert (opened.encrypted, opened.signed, opened.wrapped) == (False, True, True)
    assert opened.signers[0].ok


def test_tampered_content_fails_the_digest_not_the_opening(pki):
    signed = openssl(pki.folder, "cms", "-sign", "-signer", "sender.pem", "-inkey", "sender.key", data=INNER)
    assert b"Report attached." in signed
    opened = open_message(signed.replace(b"Report attached.", b"Report attacked."), [])
    [result] = opened.signers
    assert (result.digest_ok, result.signature_ok) == (False, True)
    assert "tampered" in result.error and not result.ok

    ours = sign(INNER, pki.identity(pki.sender)).replace(b"Consult report", b"Consult rep0rt")
    [result] = open_message(ours, []).signers
    assert not result.digest_ok and "tampered" in result.error


def test_forged_signature_is_reported(pki):
    signed = sign(INNER, pki.identity(pki.sender))
    encoded = re.search(rb"filename=smime.p7s\r\n\r\n([A-Za-z0-9+/=\r\n]+?)\r\n--", signed)[1]
    forged = bytearray(base64.b64decode(encoded))
    forged[-10] ^= 0xFF  # inside the signature value, the last field of the only SignerInfo
    tampered = signed.replace(encoded, base64.encodebytes(bytes(forged)).replace(b"\n", b"\r\n").rstrip())
    [result] = open_message(tampered, []).signers
    assert result.digest_ok and not result.signature_ok and "not valid" in result.error


def test_missing_signer_certificate_is_reported(pki):
    signed = openssl(pki.folder, "cms", "-sign", "-signer", "sender.pem", "-inkey", "sender.key", "-nocerts",
                     data=INNER)
    [result] = open_message(signed, []).signers
    assert result.certificate is None and not result.ok and "not included" in result.error


def test_message_for_someone_else_is_refused(pki):
    message = seal(pki, certs=[pki.partner2.cert])
    with pytest.raises(SmimeError, match="not encrypted for this practice's certificate"):
        open_message(message, [pki.identity(pki.partner)])


def test_tampered_gcm_ciphertext_does_not_open(pki):
    signed = openssl(pki.folder, "cms", "-sign", "-signer", "sender.pem", "-inkey", "sender.key", data=INNER)
    der = openssl(pki.folder, "cms", "-encrypt", "-aes-128-gcm", "-outform", "DER", "-recip", "partner.pem",
                  data=signed)
    damaged = bytearray(der)
    damaged[-40] ^= 0x01
    message = (b"Content-Type: application/x-pkcs7-mime; smime-type=authEnveloped-data\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(bytes(damaged)))
    with pytest.raises(SmimeError, match="could not be decrypted"):
        open_message(message, [pki.identity(pki.partner)])
    intact = message.replace(base64.encodebytes(bytes(damaged)), base64.encodebytes(der))
    assert open_message(intact, [pki.identity(pki.partner)]).content_encryption == "aes128_gcm"


P7M = b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\n"


@pytest.mark.parametrize("raw, words", [
    (P7M + b"AAAA\r\n", "damaged"),
    (P7M + b"MIIgngYJKoZIhvcNAQcD\r\n", "damaged"),
    (P7M + b"A==\r\n", "not valid base64"),
    (P7M + base64.b64encode(bytes.fromhex("300b06092a864886f70d010701")) + b"\r\n", "not a CMS EnvelopedData"),
    (b"Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\n\r\nhi\r\n--b--\r\n", "2 parts"),
])
def test_damaged_input_gives_a_sentence(raw, words):
    with pytest.raises(SmimeError, match=words):
        open_message(raw, [])


def test_plain_message_is_neither_encrypted_nor_signed():
    raw = b"From: a@b.example\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    opened = open_message(raw, [])
    assert (opened.encrypted, opened.signed, opened.signers, opened.content) == (False, False, [], raw)


def test_oversized_input_is_refused_before_parsing():
    with pytest.raises(SmimeError, match="larger than 50 MB"):
        open_message(b"x" * (50 * 1024 * 1024 + 1), [])


# --- published samples ----------------------------------------------------------------------------------

def test_java_reference_implementation_message_opens_and_verifies():
    certs = SHARED / "javari-agent" / "certs"
    ryan = Identity(x509.load_der_x509_certificate((certs / "ryan.der").read_bytes()),
                    serialization.load_der_private_key((certs / "ryanKey.der").read_bytes(), None))
    opened = open_message((SHARED / "javari-agent" / "messages" / "EncryptedMessage2.txt").read_bytes(), [ryan])
    assert (opened.encrypted, opened.signed, opened.wrapped, opened.content_encryption) == (True, True, True,
                                                                                           "aes128_cbc")
    [signer] = opened.signers
    assert signer.certificate == x509.load_der_x509_certificate((certs / "gm2552.der").read_bytes())
    assert (signer.digest_ok, signer.signature_ok, signer.digest_algorithm) == (True, True, "sha256")
    inner = email.message_from_bytes(opened.content, policy=email.policy.default)
    assert inner["Subject"] == "test pic" and inner.get_content_type() == "multipart/mixed"


def _ett_identity(tmp_path: Path) -> Identity:
    p12 = SHARED / "ett" / "certs" / "testCert.p12"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its serial number is 0
            return load_identity(p12, None)
    except DirectSetupError:
        pem = tmp_path / "ett.pem"
        openssl(tmp_path, "pkcs12", "-legacy", "-in", str(p12), "-passin", "pass:", "-nodes", "-out", pem.name)
        return identity_from(pem, pem)


def test_ett_generated_message_opens_and_verifies(tmp_path):
    opened = open_message((SHARED / "ett" / "messages" / "TestGeneratedMessage.eml").read_bytes(),
                          [_ett_identity(tmp_path)])
    assert (opened.encrypted, opened.signed, opened.wrapped, opened.content_encryption) == (True, True, True,
                                                                                           "aes128_cbc")
    [signer] = opened.signers
    assert (signer.digest_ok, signer.signature_ok, signer.digest_algorithm) == (True, True, "sha1")
    inner = email.message_from_bytes(opened.content, policy=email.policy.default)
    assert inner["Subject"] == "Test Message"
    documents = [p.get_payload(decode=True) for p in inner.walk() if p.get_content_maintype() != "multipart"]
    assert any(b"ClinicalDocument" in d for d in documents if d)
