"""Receiving a consultant's report by Direct, on loopback only: messages sealed by referdesk's own S/MIME (as a
partner running referdesk would send them) and by the real `openssl cms`, plus the Direct Project's Java
reference implementation's and ONC's ETT published messages. Each is trust-checked (CRLs from a loopback HTTP
server), acknowledged with MDNs exactly when Direct says so, filed, matched to the referral it answers, and the
referral closed; what is refused is quarantined with its reason and no MDN."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.serialization import load_der_private_key

from direct_ca import http_server, pki  # noqa: F401 (fixtures)
from models import clock
from models.inbox import InboxError, attach_to_patient, inbox_detail, list_inbox
from models.referral_history import get_referral, referral_detail
from models.referrals import AuditEvent, Document, InboundMessage, OutboxJob
from receiving_kit import (ALICE_MRN, ALICE_TWIN_MRN, CONSULT_NOTE, DIRECT, EVE_MRN, MYRA_MRN, PARTNER, PRACTICE,
                           TODAY, ZOE_MRN, QueuedMdn, ccda, documents_of, inbound, inner_message, make_parties,
                           make_site, mdns, openssl_seal, opener_for, seal)
from transports.direct.identity import Identity, load_identity
from transports.direct.mime import Part
from transports.direct.receiving import make_opener
from transports.direct.recipient import DirectSettings
from transports.inbound import receive_message

REPORT = Part("consult-note.xml", "text/xml", CONSULT_NOTE.read_bytes())


@pytest.fixture(scope="module")
def parties(pki, tmp_path_factory):  # noqa: F811
    return make_parties(pki, tmp_path_factory.mktemp("receiving"))


@pytest.fixture
def site(db):
    return make_site()


@pytest.fixture
def opener(parties, pki):  # noqa: F811
    return opener_for(parties, pki)


def report(n: int, *, reply_to_mrn: str | None = None, attachments=(REPORT,), **options) -> bytes:
    return inner_message(message_id=f"<report-{n}@cardio.example.org>", attachments=list(attachments),
                         in_reply_to=f"<ref-{reply_to_mrn}@direct.riverbend-family.example>" if reply_to_mrn else None,
                         **options)


def fingerprint(cert) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


# --- a good report closes the loop ----------------------------------------------------------------------------

def test_a_trusted_reply_is_acknowledged_filed_and_closes_its_referral(site, parties, opener):
    raw = seal(report(1, reply_to_mrn=EVE_MRN), parties, signer=parties.partner)
    referral_id = site.referrals[EVE_MRN]

    outcome = receive_message(raw, opener=opener, channel="smtp")

    assert (outcome.outcome, outcome.matched_referral, outcome.message_id) == (
        "accepted", referral_id, "<report-1@cardio.example.org>")
    assert f"referral {referral_id} is report-received" in outcome.reason
    row = inbound("<report-1@cardio.example.org>")
    assert (row.state, row.kind, row.channel, row.error) == ("filed", "report", "smtp", "")
    assert (row.referral_id, row.patient.mrn) == (referral_id, EVE_MRN)
    assert row.signer_fingerprint == fingerprint(parties.partner.cert)
    assert (row.mdn_requested, row.final_delivery_requested, row.processed_at) == (True, True, clock.now())

    referral = get_referral(referral_id)
    assert (referral.status, referral.report_received_on) == ("report-received", TODAY)
    detail = referral_detail(referral_id)
    assert [e.kind for e in detail.events][-2:] == ["report-received", "note"]
    assert "matched by a reply to the referral message" in detail.events[-1].detail

    patient_docs = documents_of(row.id, "patient")
    practice_docs = documents_of(row.id, "practice")
    assert [(d.kind, d.filename) for d in patient_docs] == [("message", "message.txt"), ("ccda", "consult-note.xml")]
    assert [(d.kind, d.filename) for d in practice_docs] == [(d.kind, d.filename) for d in patient_docs]
    ccda_doc = patient_docs[1]
    assert bytes(ccda_doc.content) == REPORT.data and ccda_doc.size == len(REPORT.data)
    assert ccda_doc.sha256 == hashlib.sha256(REPORT.data).hexdigest()
    assert ccda_doc.title == "Community Health Consult Note" and ccda_doc.referral_id == referral_id
    assert [a.filename for a in detail.attachments] == ["consult-note.xml"]  # the text is filed, not attached
    assert all(d.patient_id is None and d.referral_id is None for d in practice_docs)

    assert mdns(row.id) == [
        QueuedMdn("processed", "<report-1@cardio.example.org>", False, PARTNER, "pending", False, ""),
        QueuedMdn("dispatched", "<report-1@cardio.example.org>", True, PARTNER, "pending", False, "")]
    assert AuditEvent.select().where(AuditEvent.action == "inbound.received").get().detail == (
        f"state=filed; patient_id={row.patient_id}; referral_id={referral_id}; closed=True")


def test_the_findings_of_the_c_cda_are_kept_and_shown(site, parties, opener):
    receive_message(seal(report(2, reply_to_mrn=EVE_MRN), parties, signer=parties.partner), opener=opener)
    row = inbound("<report-2@cardio.example.org>")
    detail = inbox_detail(row.id)
    assert detail.ccda_patient == "Betterhalf, Eve · DOB 05/01/1975 · F"
    assert detail.findings and all(f.document == "consult-note.xml" for f in detail.findings)
    assert [d.kind for d in detail.documents] == ["message", "ccda"]
    assert detail.mdns == ("processed: pending", "dispatched: pending")
    assert detail.row.document_count == 2 and detail.row.mrn == EVE_MRN
    assert detail.signer_fingerprint == fingerprint(parties.partner.cert)


@pytest.mark.parametrize("maker", ["referdesk", "openssl"])
@pytest.mark.parametrize("wrap", [True, False], ids=["wrapped", "unwrapped"])
def test_wrapped_and_unwrapped_messages_from_referdesk_and_openssl_are_accepted(site, parties, opener, maker,
                                                                                 wrap):
    inner = report(3, reply_to_mrn=EVE_MRN)
    raw = (seal(inner, parties, signer=parties.partner, wrap=wrap) if maker == "referdesk"
           else openssl_seal(inner, parties, wrap=wrap))
    outcome = receive_message(raw, opener=opener)
    assert (outcome.outcome, outcome.matched_referral) == ("accepted", site.referrals[EVE_MRN]), outcome.reason
    assert [m.disposition for m in mdns()] == ["processed", "dispatched"]
    assert [m.final_destination for m in mdns()] == [False, True]  # the request travels wrapped or in the envelope


def test_two_signers_one_expired_one_valid_is_accepted(site, parties, opener):
    raw = openssl_seal(report(4, reply_to_mrn=EVE_MRN), parties, signers=("expired", "partner"))
    outcome = receive_message(raw, opener=opener)
    assert outcome.outcome == "accepted", outcome.reason
    assert inbound("<report-4@cardio.example.org>").signer_fingerprint == fingerprint(parties.partner.cert)
    assert [m.disposition for m in mdns()] == ["processed", "dispatched"]


# --- what is refused: quarantined with its reason, no MDN ---------------------------------------------------------

def _tampered(parties) -> bytes:
    from transports.direct.mime import wrap_rfc822
    from transports.direct.smime import encrypt, sign

    inner = report(10, reply_to_mrn=EVE_MRN)
    signed = sign(wrap_rfc822(inner), parties.identity(parties.partner))
    assert b"my report is" in signed
    altered = signed.replace(b"my report is", b"my r3port is")  # quoted-printable text: visible, so alterable
    from receiving_kit import envelope
    return envelope(inner) + encrypt(altered, [parties.practice.cert])


REFUSALS = {
    "expired signer": (lambda p: seal(report(10), p, signer=p.expired),
                       ["no trusted signature", "expired on", "“Dr Ruiz (old)”"]),
    "untrusted signer": (lambda p: seal(report(10), p, signer=p.stranger),
                         ["no trusted signature", "is not trusted", "“Somebody Else's Root” is not in your trust"]),
    "revoked signer": (lambda p: seal(report(10), p, signer=p.revoked), ["no trusted signature", "was revoked"]),
    "tampered content": (_tampered, ["no trusted signature", "tampered"]),
    "unsigned but encrypted": (lambda p: seal(report(10), p, signer=None), ["not signed"]),
    "signed but unencrypted": (lambda p: seal(report(10), p, signer=p.partner, encrypt_to=False), ["not encrypted"]),
    "plain, unencrypted": (lambda p: report(10), ["not encrypted"]),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_messages_are_quarantined_with_their_reason_and_get_no_mdn(site, parties, opener, case):
    make, words = REFUSALS[case]
    raw = make(parties)
    outcome = receive_message(raw, opener=opener)
    assert outcome.outcome == "rejected"
    for word in words:
        assert word in outcome.reason
    row = inbound("<report-10@cardio.example.org>")
    assert (row.state, row.error, row.processed_at) == ("rejected", outcome.reason, None)
    assert bytes(row.raw) == raw  # kept as it came
    assert OutboxJob.select().count() == 0 and mdns() == []
    assert Document.select().count() == 0
    assert get_referral(site.referrals[EVE_MRN]).status == "delivered"
    assert [r.id for r in list_inbox("rejected")] == [row.id]
    assert list_inbox("rejected")[0].error == outcome.reason


def test_a_rejected_message_may_be_tried_again_once_trust_is_fixed(site, parties, pki):  # noqa: F811
    raw = seal(report(11, reply_to_mrn=EVE_MRN), parties, signer=parties.partner)
    nobody_trusted = make_opener(parties.identity(parties.practice),
                                 DirectSettings(anchors=(pki.other_root.cert,), fetch_timeout=2.0), address=PRACTICE)
    assert receive_message(raw, opener=nobody_trusted).outcome == "rejected"
    assert receive_message(raw, opener=opener_for(parties, pki)).outcome == "accepted"
    assert [m.disposition for m in mdns()] == ["processed", "dispatched"]


def test_a_signed_from_that_differs_from_the_envelope_is_refused(site, parties, opener):
    inner = report(12, sender="mallory@cardio.example.org")
    from receiving_kit import envelope
    raw = seal(inner, parties, signer=parties.partner, headers=envelope(inner, sender=PARTNER))
    outcome = receive_message(raw, opener=opener)
    assert outcome.outcome == "rejected" and "arrived as from ruiz@cardio.example.org" in outcome.reason
    assert mdns() == []


def test_without_direct_set_up_an_smime_message_is_kept_and_refused(site, parties):
    outcome = receive_message(seal(report(13), parties, signer=parties.partner), opener=None)
    assert outcome.outcome == "rejected" and "Direct is not set up" in outcome.reason
    assert inbound("<report-13@cardio.example.org>").state == "rejected"


# --- idempotent ---------------------------------------------------------------------------------------------------

def test_the_same_message_twice_is_a_duplicate_and_nothing_is_queued_twice(site, parties, opener):
    raw = seal(report(20, reply_to_mrn=EVE_MRN), parties, signer=parties.partner)
    first = receive_message(raw, opener=opener)
    documents, jobs = Document.select().count(), OutboxJob.select().count()
    again = receive_message(raw, opener=opener, channel="imap")
    resealed = receive_message(seal(report(20, reply_to_mrn=EVE_MRN), parties, signer=parties.partner),
                               opener=opener)
    assert first.outcome == "accepted"
    assert (again.outcome, again.matched_referral) == ("duplicate", site.referrals[EVE_MRN])
    assert resealed.outcome == "duplicate"
    # 2 documents × 2 copies, and the C-CDA's findings; processed and dispatched
    assert (Document.select().count(), OutboxJob.select().count()) == (documents, jobs) == (5, 2)
    assert InboundMessage.select().count() == 1


# --- matching --------------------------------------------------------------------------------------------------------

def test_demographics_and_sender_match_an_open_referral_and_xdm_packages_are_unpacked(site, parties, opener):
    package = Part("ToC_Ambulatory.zip", "application/zip",
                   (DIRECT / "ett" / "xdm" / "ToC_Ambulatory.zip").read_bytes())
    raw = seal(report(30, attachments=[package]), parties, signer=parties.partner)  # Alice Newman, 1970-05-01
    outcome = receive_message(raw, opener=opener)
    referral_id = site.referrals[ALICE_MRN]  # sent to "Ruiz@Cardio.Example.org": the case does not matter
    assert (outcome.outcome, outcome.matched_referral) == ("accepted", referral_id), outcome.reason
    row = inbound("<report-30@cardio.example.org>")
    assert row.patient.mrn == ALICE_MRN  # not her namesake born in 1971
    assert [(d.kind, d.filename, d.media_type) for d in documents_of(row.id, "patient")] == [
        ("message", "message.txt", "text/plain; charset=utf-8"), ("ccda", "TOC_A.XML", "text/xml")]
    assert get_referral(referral_id).status == "report-received"
    assert "matched by the patient's name, date of birth" in referral_detail(referral_id).events[-1].detail
    assert get_referral(site.referrals[ALICE_TWIN_MRN]).status == "delivered"


def test_names_are_compared_like_patient_search(site, parties, opener):
    note = Part("note.xml", "text/xml", ccda("ANGSTROM", "Zoe", "19610409"))
    outcome = receive_message(seal(report(31, attachments=[note]), parties, signer=parties.partner), opener=opener)
    assert outcome.matched_referral == site.referrals[ZOE_MRN], outcome.reason


def test_a_known_patient_without_an_open_referral_to_the_sender_is_filed_without_closing_one(site, parties,
                                                                                             opener):
    from models.referrals import Referral

    Referral.update(status="report-received").where(Referral.id == site.referrals[MYRA_MRN]).execute()
    note = Part("CCDA_Inpatient.xml", "text/xml", (DIRECT / "ett" / "ccda" / "CCDA_Inpatient.xml").read_bytes())
    outcome = receive_message(seal(report(32, attachments=[note]), parties, signer=parties.partner), opener=opener)
    assert (outcome.outcome, outcome.matched_referral) == ("accepted", None)
    assert "no open referral to ruiz@cardio.example.org" in outcome.reason
    row = inbound("<report-32@cardio.example.org>")
    assert (row.state, row.kind, row.patient.mrn, row.referral_id) == ("filed", "report", MYRA_MRN, None)
    assert [m.disposition for m in mdns(row.id)] == ["processed", "dispatched"]
    assert all(m.state == "pending" for m in mdns(row.id))


def test_a_reply_to_a_referral_that_already_has_its_report_is_filed_and_linked_but_changes_nothing(site, parties,
                                                                                                   opener):
    first = receive_message(seal(report(33, reply_to_mrn=EVE_MRN), parties, signer=parties.partner), opener=opener)
    addendum = receive_message(seal(report(34, reply_to_mrn=EVE_MRN), parties, signer=parties.partner),
                               opener=opener)
    assert first.matched_referral == addendum.matched_referral == site.referrals[EVE_MRN]
    assert "already has its report" in addendum.reason
    assert inbound("<report-34@cardio.example.org>").state == "filed"


def test_a_text_only_reply_is_filed_but_does_not_close_the_referral(site, parties, opener):
    """CMS50 counts a referral as closed when the consultant's *report* came back: "Will see her on Monday" is
    filed to the chart and linked to the referral, and the referral stays open."""
    from receiving_kit import envelope

    inner = report(36, reply_to_mrn=EVE_MRN, attachments=(), text="Will see her on Monday.")
    outcome = receive_message(seal(inner, parties, signer=parties.partner,
                                   headers=envelope(inner, subject="Direct message")), opener=opener)
    assert (outcome.outcome, outcome.matched_referral) == ("accepted", site.referrals[EVE_MRN])
    assert "no report document" in outcome.reason
    row = inbound("<report-36@cardio.example.org>")
    assert (row.state, row.kind, row.patient.mrn, row.referral_id) == ("filed", "other", EVE_MRN,
                                                                       site.referrals[EVE_MRN])
    assert row.subject == "Consultation report"  # the signed subject, not the envelope's
    assert get_referral(site.referrals[EVE_MRN]).status == "delivered"
    assert [bytes(d.content) for d in documents_of(row.id, "patient")] == [b"Will see her on Monday."]
    assert [m.disposition for m in mdns(row.id)] == ["processed", "dispatched"]


def test_a_reply_whose_c_cda_names_someone_else_is_left_for_staff(site, parties, opener):
    wrong = Part("note.xml", "text/xml", ccda("Newman", "Alice", "19700501"))
    outcome = receive_message(seal(report(35, reply_to_mrn=EVE_MRN, attachments=[wrong]), parties,
                                   signer=parties.partner), opener=opener)
    assert outcome.outcome == "accepted" and outcome.matched_referral is None
    row = inbound("<report-35@cardio.example.org>")
    assert row.state == "unfiled" and "names a different patient" in row.error
    assert get_referral(site.referrals[EVE_MRN]).status == "delivered"
    assert get_referral(site.referrals[ALICE_MRN]).status == "delivered"


def test_an_unknown_patient_waits_unfiled_then_staff_attach_it(site, parties, opener):
    note = Part("CCDA_Ambulatory.xml", "text/xml", (DIRECT / "ett" / "ccda" / "CCDA_Ambulatory.xml").read_bytes())
    outcome = receive_message(seal(report(40, attachments=[note]), parties, signer=parties.partner), opener=opener)
    assert outcome.outcome == "accepted" and outcome.matched_referral is None
    assert "to-be-filed list" in outcome.reason and "no patient here has the name" in outcome.reason
    row = inbound("<report-40@cardio.example.org>")
    assert (row.state, row.patient_id, row.referral_id) == ("unfiled", None, None)
    assert documents_of(row.id, "patient") == [] and len(documents_of(row.id, "practice")) == 2
    assert [(m.disposition, m.state) for m in mdns(row.id)] == [("processed", "pending"), ("dispatched", "held")]

    [waiting] = list_inbox("unfiled")
    assert (waiting.id, waiting.mrn, waiting.patient_name, waiting.document_count) == (row.id, None, None, 2)
    detail = inbox_detail(row.id)
    assert detail.ccda_patient == "Jones, Isabella · DOB 05/01/1947 · F"
    assert [d.filename for d in detail.documents] == ["message.txt", "CCDA_Ambulatory.xml"]

    # the patient was registered under another name; staff know it is Myra Jones and which referral it answers
    clock.freeze(clock.now() + dt.timedelta(hours=3))
    filed = attach_to_patient(row.id, MYRA_MRN, referral_id=site.referrals[MYRA_MRN], username="frontdesk")
    assert (filed.state, filed.mrn, filed.patient_name, filed.referral_id, filed.error) == (
        "filed", MYRA_MRN, "Jones, Myra", site.referrals[MYRA_MRN], "")
    referral = get_referral(site.referrals[MYRA_MRN])
    assert (referral.status, referral.report_received_on) == ("report-received", TODAY)
    copies = documents_of(row.id, "patient")
    assert [(d.filename, d.referral_id) for d in copies] == [
        ("message.txt", site.referrals[MYRA_MRN]), ("CCDA_Ambulatory.xml", site.referrals[MYRA_MRN])]
    assert [(m.disposition, m.state) for m in mdns(row.id)] == [("processed", "pending"), ("dispatched", "pending")]
    dispatched = OutboxJob.select().where(OutboxJob.inbound == row.id).order_by(OutboxJob.id.desc()).get()
    assert b"Date: Mon, 02 Nov 2026 13:00:00 +0000" in bytes(dispatched.payload)  # released now, dated now
    assert dispatched.due_at == clock.now()
    audit = AuditEvent.select().where(AuditEvent.action == "inbound.attach").get()
    assert (audit.username, audit.object_id) == ("frontdesk", str(row.id))
    assert audit.detail == f"patient_id={copies[0].patient_id}; referral_id={site.referrals[MYRA_MRN]}; closed=True"
    with pytest.raises(InboxError, match="already filed"):
        attach_to_patient(row.id, MYRA_MRN)


def test_attaching_without_a_referral_closes_the_patients_open_one_to_that_sender(site, parties, opener):
    note = Part("CCDA_Ambulatory.xml", "text/xml", (DIRECT / "ett" / "ccda" / "CCDA_Ambulatory.xml").read_bytes())
    receive_message(seal(report(41, attachments=[note]), parties, signer=parties.partner), opener=opener)
    row = inbound("<report-41@cardio.example.org>")
    assert attach_to_patient(row.id, ZOE_MRN).referral_id == site.referrals[ZOE_MRN]
    assert get_referral(site.referrals[ZOE_MRN]).status == "report-received"


def test_attach_refusals_say_why(site, parties, opener):
    from models.referrals import Referral

    note = Part("CCDA_Ambulatory.xml", "text/xml", (DIRECT / "ett" / "ccda" / "CCDA_Ambulatory.xml").read_bytes())
    receive_message(seal(report(42, attachments=[note]), parties, signer=parties.partner), opener=opener)
    receive_message(seal(report(43), parties, signer=parties.expired), opener=opener)
    unfiled, rejected = inbound("<report-42@cardio.example.org>"), inbound("<report-43@cardio.example.org>")
    Referral.update(status="cancelled").where(Referral.id == site.referrals[ALICE_MRN]).execute()
    with pytest.raises(InboxError, match="was rejected .* only a message waiting in the to-be-filed list"):
        attach_to_patient(rejected.id, MYRA_MRN)
    with pytest.raises(InboxError, match="no patient with MRN '9999999'"):
        attach_to_patient(unfiled.id, "9999999")
    with pytest.raises(InboxError, match=f"referral {site.referrals[EVE_MRN]} is for another patient"):
        attach_to_patient(unfiled.id, MYRA_MRN, referral_id=site.referrals[EVE_MRN])
    with pytest.raises(InboxError, match="was cancelled, so no report is expected"):
        attach_to_patient(unfiled.id, ALICE_MRN, referral_id=site.referrals[ALICE_MRN])
    with pytest.raises(InboxError, match="no received message with id 999"):
        attach_to_patient(999, MYRA_MRN)
    with pytest.raises(InboxError, match="unknown state"):
        list_inbox("lost")
    assert inbound("<report-42@cardio.example.org>").state == "unfiled"
    assert Document.select().where(Document.owner == "patient").count() == 0
    assert [(m.disposition, m.state) for m in mdns(unfiled.id)] == [("processed", "pending"), ("dispatched", "held")]


# --- what the MDNs say -----------------------------------------------------------------------------------------------

def test_mdns_go_to_disposition_notification_to_and_carry_final_destination_only_when_asked(site, parties, opener):
    receive_message(seal(report(50, reply_to_mrn=EVE_MRN, notify_to="mdn@hisp.cardio.example.org"), parties,
                         signer=parties.partner), opener=opener)
    receive_message(seal(report(51, final_delivery=False), parties, signer=parties.partner), opener=opener)
    receive_message(seal(report(52, request_mdn=False), parties, signer=parties.partner), opener=opener)
    asked, plain, unasked = (mdns(inbound(f"<report-{n}@cardio.example.org>").id) for n in (50, 51, 52))
    assert [(m.disposition, m.recipient, m.final_destination) for m in asked] == [
        ("processed", "mdn@hisp.cardio.example.org", False), ("dispatched", "mdn@hisp.cardio.example.org", True)]
    assert [(m.disposition, m.recipient, m.final_destination) for m in plain] == [
        ("processed", PARTNER, False), ("dispatched", PARTNER, False)]
    assert [(m.disposition, m.recipient) for m in unasked] == [("processed", PARTNER), ("dispatched", PARTNER)]
    assert not any(m.asks_for_mdn for m in asked + plain + unasked)
    assert inbound("<report-51@cardio.example.org>").final_delivery_requested is False
    assert inbound("<report-52@cardio.example.org>").mdn_requested is False


def test_an_mdn_or_dsn_is_never_acknowledged(site, parties, opener):
    from transports.direct.mdn import compose_mdn
    from transports.direct.smime import seal_inner

    about = "<ref-2000001@direct.riverbend-family.example>"
    mdn = compose_mdn(disposition="processed", practice_address=PARTNER, to=PRACTICE, original_message_id=about,
                      original_subject="Referral", message_id="<mdn-1@cardio.example.org>",
                      date=clock.now())
    raw = seal_inner(mdn, sender=PARTNER, recipients=[PRACTICE], subject="Processed",
                     message_id="<mdn-1@cardio.example.org>", date=clock.now(),
                     identity=parties.identity(parties.partner), recipient_certs=[parties.practice.cert])
    outcome = receive_message(raw, opener=opener)
    assert (outcome.outcome, outcome.matched_referral) == ("accepted", site.referrals[EVE_MRN])
    assert inbound("<mdn-1@cardio.example.org>").kind == "notification"
    dsn = (f"From: mailer-daemon@cardio.example.org\r\nTo: {PRACTICE}\r\nMessage-ID: <dsn-1@cardio.example.org>\r\n"
           "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n"
           "Content-Type: text/plain\r\n\r\nfailed\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
           "Reporting-MTA: dns; cardio.example.org\r\n\r\nFinal-Recipient: rfc822; ruiz@cardio.example.org\r\n"
           f"Action: failed\r\nStatus: 5.5.0\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
           f"Message-ID: {about}\r\n\r\n--b--\r\n").encode()
    assert receive_message(dsn, opener=opener).outcome == "accepted"
    assert OutboxJob.select().count() == 0


# --- the published samples -------------------------------------------------------------------------------------------

JAVA = DIRECT / "javari-agent"


def test_java_reference_implementation_message_opens_and_is_judged_honestly(db):
    """EncryptedMessage2.txt (AES-128-CBC, BER, wrapped, SHA-256), signer gm2552 under secureHealthEmailCACert.

    It decrypts with ryan's key, its signature is intact, and gm2552's certificate chains to the anchor and is in
    its validity period (2021-06-09 to 2048). Its certificates carry no CRL distribution point, so there is
    nothing to check revocation against. The CA signed them with SHA-1, which referdesk never accepts for a
    certificate it encrypts to but accepts on receipt (STANDARDS.md): so it is accepted and acknowledged."""
    clock.freeze(dt.datetime(2030, 6, 1, 12, 0))  # any day in 2021-2048 will do; conftest restores the clock
    ryan = Identity(x509.load_der_x509_certificate((JAVA / "certs" / "ryan.der").read_bytes()),
                    load_der_private_key((JAVA / "certs" / "ryanKey.der").read_bytes(), None))
    anchor = x509.load_der_x509_certificate((JAVA / "certs" / "secureHealthEmailCACert.der").read_bytes())
    gm2552 = x509.load_der_x509_certificate((JAVA / "certs" / "gm2552.der").read_bytes())
    raw = (JAVA / "messages" / "EncryptedMessage2.txt").read_bytes()

    from transports.direct.cms_open import open_message
    from transports.direct.trust import crl_urls

    opened = open_message(raw, [ryan])
    assert (opened.encrypted, opened.signed, opened.wrapped, opened.content_encryption) == (
        True, True, True, "aes128_cbc")
    [signer] = opened.signers
    assert signer.ok and signer.certificate == gm2552 and signer.digest_algorithm == "sha256"
    assert gm2552.issuer == anchor.subject  # chains to the anchor (cryptography will not verify SHA-1 itself):
    anchor.public_key().verify(gm2552.signature, gm2552.tbs_certificate_bytes, PKCS1v15(), hashes.SHA1())
    assert crl_urls(gm2552) == [] and crl_urls(anchor) == []  # no revocation information published at all
    assert gm2552.signature_hash_algorithm.name == "sha1"

    opener = make_opener(ryan, DirectSettings(anchors=(anchor,)), address="ryan@securehealthemail.com")
    outcome = receive_message(raw, opener=opener)
    assert outcome.outcome == "accepted", outcome.reason
    assert outcome.message_id == "<4C07A6B7.6020205@securehealthemail.com>"
    row = InboundMessage.get()
    assert row.signer_fingerprint == gm2552.fingerprint(hashes.SHA256()).hex()
    [processed, *_] = OutboxJob.select().where(OutboxJob.kind == "mdn").order_by(OutboxJob.id)
    assert processed.recipient.lower() == "gm2552@securehealthemail.com"
    assert b";processed" in bytes(processed.payload)
    # The same certificate is never good enough to encrypt to: SHA-1 is accepted on receipt only.
    from transports.direct.recipient import Caches
    from transports.direct.trust import ENCRYPT, TrustChecker

    checker = TrustChecker((anchor,), crl_cache=Caches().crls)
    verdict = checker.assess(gm2552, "gm2552@securehealthemail.com", purpose=ENCRYPT)
    assert not verdict.valid and "SHA-1" in verdict.reason


@pytest.mark.filterwarnings("ignore:Parsed a serial number")  # ETT's certificate has serial number 0
def test_ett_generated_message_has_an_expired_self_signed_signer_and_is_rejected(db, pki):  # noqa: F811
    """TestGeneratedMessage.eml (BER, wrapped, SHA-1 signature, a C-CDA inside): it opens with testCert.p12, but
    its signer is ETT's own self-signed RSA-1024 certificate that expired in 2015."""
    identity = load_identity(DIRECT / "ett" / "certs" / "testCert.p12", None)
    opener = make_opener(identity, DirectSettings(anchors=(pki.root.cert,)), address="to@test.com")
    raw = (DIRECT / "ett" / "messages" / "TestGeneratedMessage.eml").read_bytes()
    outcome = receive_message(raw, opener=opener)
    assert outcome.outcome == "rejected"
    assert "no trusted signature: “Nist” (self-signed, expired on 2015-06-18)" in outcome.reason
    row = InboundMessage.get()
    assert (row.state, row.error, row.from_address) == ("rejected", outcome.reason, "from@test.com")
    assert OutboxJob.select().count() == 0
    # with itself as the trust anchor it is still refused: not bound to the address, and expired
    selfish = make_opener(identity, DirectSettings(anchors=(identity.certificate,)), address="to@test.com")
    assert receive_message(raw, opener=selfish).outcome == "rejected"
    assert OutboxJob.select().count() == 0


def test_the_cli_keeps_its_output(site, parties, opener, monkeypatch, capsys):
    """`referdesk receive` prints the same four fields; an accepted report exits 0, a refused one 3."""
    import io
    import json

    from tui import cli

    class Args:
        file = None
        json = True

    monkeypatch.setattr(cli, "_open", lambda args: None)
    monkeypatch.setattr("transports.direct.receiving.opener_from_config", lambda config: opener)
    for raw, code in ((seal(report(60, reply_to_mrn=EVE_MRN), parties, signer=parties.partner), 0),
                      (seal(report(61), parties, signer=parties.stranger), 3)):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw)))
        assert cli.cmd_receive(Args()) == code
        printed = json.loads(capsys.readouterr().out)
        assert set(printed) == {"outcome", "reason", "message_id", "matched_referral"}


def test_the_outbox_sends_processed_before_dispatched(site, parties, opener):
    """A worker sends a batch concurrently, so the dispatched MDN is not claimed while the processed one about
    the same message is still to go."""
    from models.outbox import claim_due_jobs, job_retry, job_sent

    receive_message(seal(report(70, reply_to_mrn=EVE_MRN), parties, signer=parties.partner), opener=opener)
    [processed] = claim_due_jobs("w1", ["direct"])
    assert claim_due_jobs("w2", ["direct"]) == []
    job_retry(processed, "HISP down", 0)  # a retry keeps the order too
    [again] = claim_due_jobs("w1", ["direct"])
    assert again.id == processed.id
    job_sent(again, "sent")
    [dispatched] = claim_due_jobs("w1", ["direct"])
    assert dispatched.id != processed.id and dispatched.kind == "mdn"
    assert [(m.disposition, m.state) for m in mdns()] == [("processed", "done"), ("dispatched", "claimed")]


def test_pdfs_images_and_odd_names_are_filed_with_their_kinds(site, parties, opener):
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    attachments = (REPORT, Part("Befund Müller.pdf", "application/pdf", b"%PDF-1.7\n%%EOF\n"),
                   Part("../../etc/ecg.png", "image/png", png),
                   Part("letter.bin", "application/octet-stream", b"%PDF-1.4\n%%EOF\n"))
    outcome = receive_message(seal(report(80, reply_to_mrn=EVE_MRN, attachments=attachments), parties,
                                   signer=parties.partner), opener=opener)
    assert outcome.outcome == "accepted", outcome.reason
    row = inbound("<report-80@cardio.example.org>")
    assert [(d.filename, d.kind, d.media_type) for d in documents_of(row.id, "patient")] == [
        ("message.txt", "message", "text/plain; charset=utf-8"), ("consult-note.xml", "ccda", "text/xml"),
        ("Befund Müller.pdf", "pdf", "application/pdf"), ("ecg.png", "image", "image/png"),
        ("letter.bin", "pdf", "application/pdf")]
    # the report-received event names the C-CDA, the report proper; every document is linked to the referral
    ccda_copy = documents_of(row.id, "patient")[1]
    events = referral_detail(site.referrals[EVE_MRN]).events
    assert f"filed as document {ccda_copy.id}" in next(e.detail for e in events if e.kind == "report-received")
    assert len(referral_detail(site.referrals[EVE_MRN]).attachments) == 4  # the message text is not an attachment
    assert inbox_detail(row.id).row.document_count == 5
