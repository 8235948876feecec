"""A corpus of broken and hostile messages through `receive_message`: each ends rejected (quarantined, no MDN),
failed (a trusted sender's message that cannot be filed: processed and failed MDNs, the reason kept), or
filed with findings (the C-CDA ones) — never an exception. Most are sealed by the trusted partner, so the
damage is met *after* the trust check, where it is hardest to handle; the big inputs are made once."""

from __future__ import annotations

import base64
import io
import os
import zipfile

import pytest

from direct_ca import http_server, pki  # noqa: F401 (fixtures)
from models.inbox import inbox_detail
from models.referral_history import get_referral
from models.referrals import Document, InboundMessage, OutboxJob
from receiving_kit import (EVE_MRN, PARTNER, PRACTICE, ccda, documents_of, envelope, inbound, inner_message,
                           make_parties, make_site, mdns, opener_for, seal)
from transports.direct.mime import Part
from transports.inbound import MAX_BYTES, receive_message

MID = "<broken@cardio.example.org>"
HEAD = (f"From: {PARTNER}\r\nTo: {PRACTICE}\r\nSubject: Report\r\nMessage-ID: {MID}\r\n"
        f"Disposition-Notification-To: {PARTNER}\r\nMIME-Version: 1.0\r\n").encode()


@pytest.fixture(scope="module")
def parties(pki, tmp_path_factory):  # noqa: F811
    return make_parties(pki, tmp_path_factory.mktemp("malformed"))


@pytest.fixture
def site(db):
    return make_site()


@pytest.fixture
def opener(parties, pki):  # noqa: F811
    return opener_for(parties, pki)


def sealed(parties, inner: bytes) -> bytes:
    """`inner` signed by the trusted partner and encrypted to the practice, whatever it contains."""
    return seal(inner, parties, signer=parties.partner, headers=envelope(inner, message_id=MID, subject="Report"))


def report_with(*attachments: Part, reply: bool = True) -> bytes:
    return inner_message(message_id=MID, attachments=list(attachments), subject="Report",
                         in_reply_to=f"<ref-{EVE_MRN}@direct.riverbend-family.example>" if reply else None)


def assert_failed(outcome, *words: str) -> InboundMessage:
    """Accepted for trust, not filed: the reason kept, processed + failed MDNs (the failure says why)."""
    assert outcome.outcome == "rejected", outcome
    row = inbound(MID)
    assert row.state == "failed" and row.processed_at is not None, (row.state, row.error)
    for word in words:
        assert word in row.error, row.error
    assert row.error in outcome.reason
    assert [m.disposition for m in mdns(row.id)] == ["processed", "failed"]
    assert mdns(row.id)[1].failure.startswith(row.error[:60].encode("ascii", "replace").decode())
    assert Document.select().count() == 0
    return row


def assert_quarantined(outcome, *words: str) -> InboundMessage:
    assert outcome.outcome == "rejected", outcome
    row = InboundMessage.select().order_by(InboundMessage.id.desc()).get()
    assert row.state == "rejected" and row.processed_at is None
    for word in words:
        assert word in row.error, row.error
    assert OutboxJob.select().count() == 0 and Document.select().count() == 0
    return row


# --- size limits ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fifty_mb(parties) -> bytes:
    """A Direct message carrying a 50 MB attachment, as it arrives: transport headers and a 68 MB base64
    smime.p7m. Refused before anything is decrypted, so its ciphertext need not be real (sealing 50 MB for
    real costs seconds and proves nothing more)."""
    line = base64.b64encode(os.urandom(57)) + b"\r\n"  # 57 bytes per 76-column line
    payload = line * (50 * 1024 * 1024 // 57 + 1)
    return (envelope(report_with(), message_id=MID, subject="Report")
            + b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
              b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7m\r\n\r\n"
            + payload)


def test_a_50_mb_attachment_is_refused_at_the_door(site, fifty_mb):
    def must_not_open(raw, message):
        raise AssertionError("opened a message over the size limit")

    assert len(fifty_mb) > MAX_BYTES
    outcome = receive_message(fifty_mb, opener=must_not_open)
    row = assert_quarantined(outcome, "message too large", "the limit is 50 MB")
    assert (row.message_id, row.from_address, bytes(row.raw)) == (MID, PARTNER, b"")  # who sent it is still known


def test_an_attachment_over_the_document_limit_fails_with_the_reason(site, parties, opener, monkeypatch):
    monkeypatch.setattr("transports.filing.MAX_DOCUMENT_BYTES", 1024 * 1024)  # 25 MB in production
    scan = Part("scan.pdf", "application/pdf", b"%PDF-1.4\n" + os.urandom(1024 * 1024))
    assert_failed(receive_message(sealed(parties, report_with(scan)), opener=opener), "scan.pdf is 1.0 MB",
                  "limit is 1 MB")


# --- MIME damage inside a trusted message -----------------------------------------------------------------------

def _nested(levels: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nhello\r\n"
    for level in range(levels, 0, -1):
        body = (f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n--n{level}\r\n').encode() + body \
            + f"\r\n--n{level}--\r\n".encode()
    return HEAD + body


def _siblings(count: int) -> bytes:
    parts = b"".join(b"--s\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(count))
    return HEAD + b'Content-Type: multipart/mixed; boundary="s"\r\n\r\n' + parts + b"--s--\r\n"


def _truncated_base64() -> bytes:
    inner = report_with(Part("report.pdf", "application/pdf", b"%PDF-1.4\n" + bytes(range(256)) * 40))
    head, rest = inner.split(b"filename=\"report.pdf\"\r\n\r\n", 1)
    encoded, tail = rest.split(b"\r\n--", 1)
    return head + b"filename=\"report.pdf\"\r\n\r\n" + encoded[:-7] + b"\r\n--" + tail


MIME_DAMAGE = {
    "truncated base64": (_truncated_base64, ["report.pdf is damaged", "base64"]),
    "cut off mid-message": (lambda: report_with(Part("r.xml", "text/xml",
                                                     ccda("Betterhalf", "Eve", "19750501")))[:-200],
                            ["incomplete", "final MIME boundary"]),
    "wrong boundary": (lambda: HEAD + b'Content-Type: multipart/mixed; boundary="expected"\r\n\r\n--actual\r\n'
                                      b"Content-Type: text/plain\r\n\r\nhi\r\n--actual--\r\n",
                       ["boundary does not occur"]),
    "missing boundary": (lambda: HEAD + b"Content-Type: multipart/mixed\r\n\r\n--x\r\nContent-Type: text/plain\r\n"
                                        b"\r\nhi\r\n--x--\r\n", ["declares no MIME boundary"]),
    "10,000 nested multiparts": (lambda: _nested(10_000), ["nested too deeply"]),
    "40 nested multiparts": (lambda: _nested(40), ["nested more than 12 levels"]),
    "10,000 parts side by side": (lambda: _siblings(10_000), ["more than 200 MIME parts"]),
    "base64 with foreign characters": (
        lambda: report_with(Part("a.pdf", "application/pdf", b"%PDF-1.4 x")).replace(
            base64.b64encode(b"%PDF-1.4 x"), b"JVBERi0x*jQgeA=="), ["a.pdf is damaged"]),
}


@pytest.mark.parametrize("case", list(MIME_DAMAGE))
def test_mime_damage_in_a_trusted_message_fails_it_with_a_reason(site, parties, opener, case):
    make, words = MIME_DAMAGE[case]
    assert_failed(receive_message(sealed(parties, make()), opener=opener), *words)
    assert get_referral(site.referrals[EVE_MRN]).status == "delivered"


def test_the_same_damage_unencrypted_is_only_quarantined(site, opener):
    for n, raw in enumerate((_nested(10_000), _siblings(10_000), _truncated_base64())):
        outcome = receive_message(raw.replace(MID.encode(), f"<plain-{n}@cardio.example.org>".encode()),
                                  opener=opener)
        assert outcome.outcome == "rejected"
    assert {r.state for r in InboundMessage.select()} == {"rejected"}
    assert OutboxJob.select().count() == 0


# --- the S/MIME layer itself ------------------------------------------------------------------------------------

def test_a_damaged_envelope_is_quarantined(site, parties, opener):
    good = sealed(parties, report_with(Part("r.xml", "text/xml", ccda("Betterhalf", "Eve", "19750501"))))
    head, body = good.split(b"\r\n\r\n", 1)
    cut = head + b"\r\n\r\n" + body[:len(body) // 2].rstrip(b"\r\n")[:-1]
    assert_quarantined(receive_message(cut, opener=opener))
    garbage = head + b"\r\n\r\n" + base64.encodebytes(os.urandom(3000))
    row = assert_quarantined(receive_message(garbage.replace(MID.encode(), b"<g2@cardio.example.org>"),
                                             opener=opener))
    assert "damaged" in row.error


# --- headers ------------------------------------------------------------------------------------------------------

def test_non_utf8_headers_are_stored_readable(site, parties, opener):
    inner = report_with(Part("r.xml", "text/xml", ccda("Betterhalf", "Eve", "19750501"))).replace(
        b"Subject: Report", b"Subject: Bericht f\xfcr Frau Betterhalf")
    outer = (f"From: Dr Ru\xedz <{PARTNER}>\r\nTo: {PRACTICE}\r\n").encode("latin-1") \
        + b"Subject: Bericht f\xfcr Frau Betterhalf \xff\xfe\r\n" \
        + f"Message-ID: {MID}\r\nMIME-Version: 1.0\r\n".encode()
    outcome = receive_message(seal(inner, parties, signer=parties.partner, headers=outer), opener=opener)
    assert outcome.outcome == "accepted", outcome.reason
    row = inbound(MID)
    assert (row.state, row.from_address) == ("filed", PARTNER)
    assert row.subject.startswith("Bericht für Frau Betterhalf")
    assert [m.disposition for m in mdns(row.id)] == ["processed", "dispatched"]

    plain = (b"From: J\xe9r\xf4me <jerome@example.org>\r\nSubject: \xe9\xe8\r\nMessage-ID: <latin@x>\r\n\r\nhello")
    outcome = receive_message(plain, opener=opener)
    assert outcome.outcome == "rejected" and "not encrypted" in outcome.reason
    assert inbound("<latin@x>").subject == "éè"


@pytest.mark.parametrize("raw, words", [
    (b"", "no Message-ID"),
    (b"\x00\xff" * 3000, "no Message-ID"),
    (os.urandom(20000), ""),
    (b"Message-ID: <caf\xc3\xa9@x>\r\n\r\nhi", "not usable"),
    (b"From: a@b\r\nMessage-ID: <only-headers@x>\r\n", "not encrypted"),
    (b"Message-ID: <x@y>\r\nContent-Type: application/pkcs7-mime\r\n\r\n!!!!", ""),
], ids=["empty", "binary", "random", "non-ascii id", "headers only", "fake smime"])
def test_garbage_is_quarantined_never_raised(site, opener, raw, words):
    outcome = receive_message(raw, opener=opener)
    assert outcome.outcome == "rejected"
    row = InboundMessage.select().order_by(InboundMessage.id.desc()).get()
    assert row.state == "rejected" and words in row.error and bytes(row.raw) == raw
    assert OutboxJob.select().count() == 0


# --- packages and C-CDAs ------------------------------------------------------------------------------------------

METADATA = (b'<?xml version="1.0"?><SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0">'
            b'<RegistryObjectList xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">'
            b'<ExtrinsicObject id="doc1" mimeType="text/xml"><Slot name="URI"><ValueList><Value>DOC0001.XML</Value>'
            b'</ValueList></Slot></ExtrinsicObject></RegistryObjectList></SubmitObjectsRequest>')


def _xdm(document: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("README.TXT", "XDM")
        package.writestr("INDEX.HTM", "<html xmlns='http://www.w3.org/1999/xhtml'><body/></html>")
        package.writestr("IHE_XDM/SUBSET01/METADATA.XML", METADATA)
        package.writestr("IHE_XDM/SUBSET01/DOC0001.XML", document)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """An XDM package whose listed C-CDA inflates to 30 MB of spaces (30 KB zipped; the limit per document read
    from a package is 20 MB, 100 MB for the whole package)."""
    filler = b" " * (30 * 1024 * 1024)
    return _xdm(ccda("Betterhalf", "Eve", "19750501")[:-20] + filler + b"</ClinicalDocument>\n")


def test_an_xdm_zip_bomb_fails_with_the_reason(site, parties, opener, bomb):
    assert len(bomb) < 100 * 1024
    outcome = receive_message(sealed(parties, report_with(Part("package.zip", "application/zip", bomb))),
                              opener=opener)
    assert_failed(outcome, "package.zip cannot be filed completely", "possibly a zip bomb")


def test_a_sound_xdm_package_is_unpacked(site, parties, opener):
    package = _xdm(ccda("Betterhalf", "Eve", "19750501"))
    outcome = receive_message(sealed(parties, report_with(Part("package.zip", "application/zip", package))),
                              opener=opener)
    assert outcome.outcome == "accepted" and outcome.matched_referral == site.referrals[EVE_MRN], outcome.reason
    assert [(d.filename, d.kind) for d in documents_of(inbound(MID).id, "patient")] == [
        ("message.txt", "message"), ("DOC0001.XML", "ccda")]


def test_a_package_listing_a_missing_document_fails(site, parties, opener):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        package.writestr("IHE_XDM/SUBSET01/METADATA.XML", METADATA)
    outcome = receive_message(sealed(parties, report_with(Part("p.zip", "application/zip", buffer.getvalue()))),
                              opener=opener)
    assert_failed(outcome, "lists 'DOC0001.XML', which is not in the package")


def test_a_zip_that_is_not_a_zip_fails(site, parties, opener):
    outcome = receive_message(sealed(parties, report_with(Part("p.zip", "application/zip", b"PK\x03\x04garbage"))),
                              opener=opener)
    assert_failed(outcome, "not a readable zip archive")


def test_a_c_cda_with_an_external_entity_is_filed_with_findings_and_nothing_is_resolved(site, parties, opener,
                                                                                          tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    doctype = f'<!DOCTYPE ClinicalDocument [<!ENTITY leak SYSTEM "file://{secret}">]>\n'
    hostile = ccda("Betterhalf", "Eve", "19750501", title="&leak;", doctype=doctype)
    outcome = receive_message(sealed(parties, report_with(Part("note.xml", "text/xml", hostile))), opener=opener)
    assert outcome.outcome == "accepted" and outcome.matched_referral == site.referrals[EVE_MRN], outcome.reason
    row = inbound(MID)
    detail = inbox_detail(row.id)
    assert any(f.severity == "error" and "DOCTYPE" in f.message for f in detail.findings), detail.findings
    assert [d.kind for d in detail.documents] == ["message", "ccda"]
    assert not any(b"TOP-SECRET" in bytes(d.content) for d in Document.select())
    assert [m.disposition for m in mdns(row.id)] == ["processed", "dispatched"]


def test_billion_laughs_is_filed_with_findings(site, parties, opener):
    laughs = ('<!DOCTYPE lolz [<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
              + "]>\n")
    hostile = ccda("Betterhalf", "Eve", "19750501", title="&lol9;", doctype=laughs)
    outcome = receive_message(sealed(parties, report_with(Part("note.xml", "text/xml", hostile))), opener=opener)
    assert outcome.outcome == "accepted", outcome.reason
    assert any("DOCTYPE" in f.message for f in inbox_detail(inbound(MID).id).findings)


def test_a_c_cda_that_is_not_well_formed_is_filed_with_findings(site, parties, opener):
    broken = ccda("Betterhalf", "Eve", "19750501").replace(b"</ClinicalDocument>", b"")
    outcome = receive_message(sealed(parties, report_with(Part("note.xml", "text/xml", broken))), opener=opener)
    # no readable demographics, but it replies to Eve's referral: filed there, with what is wrong
    assert outcome.outcome == "accepted" and outcome.matched_referral == site.referrals[EVE_MRN]
    assert any("well-formed" in f.message for f in inbox_detail(inbound(MID).id).findings)


# --- failures of referdesk's own making ---------------------------------------------------------------------------

def test_an_internal_error_while_filing_is_stored_and_the_sender_told(site, parties, opener, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("transports.filing.store", broken)
    outcome = receive_message(sealed(parties, report_with(Part("r.xml", "text/xml", ccda("Betterhalf", "Eve",
                                                                                          "19750501")))),
                              opener=opener)
    row = assert_failed(outcome, "could not be filed (RuntimeError: disk full)")
    assert get_referral(site.referrals[EVE_MRN]).status == "delivered"  # the whole filing was rolled back
    assert row.patient_id is None


def test_an_opener_that_crashes_leaves_a_stored_failure_and_no_mdn(site, parties):
    def opener(raw, message):
        raise KeyError("boom")

    outcome = receive_message(sealed(parties, report_with()), opener=opener)
    assert outcome.outcome == "rejected" and "internal error" in outcome.reason
    row = inbound(MID)
    assert (row.state, row.processed_at) == ("failed", None) and "KeyError" in row.error
    assert OutboxJob.select().count() == 0
    # a failure before acceptance is not "handled": the message may come again and be filed
    assert receive_message(sealed(parties, report_with()), opener=opener).outcome == "rejected"
    assert InboundMessage.select().count() == 2
