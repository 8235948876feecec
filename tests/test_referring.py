"""Making a referral below the screens: validation, the one-transaction store, address checks, verdicts."""

from __future__ import annotations

import io
import json
import re

import pytest
from pypdf import PdfReader

from documents.packet import build_attachments
from models.address_book import contact_by_address, suggest_contacts
from models.addresses import AddressError, check_direct_address, check_fax_number, fax_e164, format_fax
from models.contacts import Contact
from models.documents import Attachment, DocumentError
from models.patients import Note
from models.referrals import AuditEvent, Document, OutboxJob, Referral, ReferralEvent
from models.referring import ReferralDraft, ReferralError, create_referral, referral_outcome, sendable_note
from transports.verify import verify_direct_address, verify_fax_number, verify_print_folder


def counts():
    return tuple(m.select().count() for m in (Referral, ReferralEvent, Document, OutboxJob, AuditEvent))


@pytest.fixture
def note(seeded):
    return Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).first()


def draft(note, **changes) -> ReferralDraft:
    values = dict(patient_id=note.patient_id, note_id=note.id, channel="direct",
                  recipient="Cardio@Direct.Valley-Cardio.Example", reason="Chest pain on exertion")
    values.update(changes)
    return ReferralDraft(**values)


def test_create_referral_stores_everything_in_one_go(note):
    attachments = build_attachments(draft(note))
    referral = create_referral(draft(note, excluded_sections=("goals",), username="frontdesk"), attachments)
    assert referral.status == "queued"
    assert referral.recipient == "Cardio@direct.valley-cardio.example"  # domain lower-cased, local part kept
    assert json.loads(referral.excluded_sections) == ["goals"]
    assert referral.subject.startswith("Referral: ")
    assert referral.created_by.username == "frontdesk"
    copies = {(d.owner, d.kind): d for d in referral.documents}
    assert set(copies) == {(owner, kind) for owner in ("patient", "practice")
                           for kind in [a.kind for a in attachments] + ["message"]}
    message = bytes(copies["patient", "message"].content).decode()
    assert f"Subject: {referral.subject}\n" in message and f"Message-ID: {referral.message_id}" in message
    assert message.endswith(referral.message + "\n")
    for attachment in attachments:
        patient_copy, practice_copy = copies["patient", attachment.kind], copies["practice", attachment.kind]
        assert patient_copy.sha256 == practice_copy.sha256
        assert bytes(patient_copy.content) == attachment.content and patient_copy.size == attachment.size
    assert [j.state for j in referral.jobs] == ["pending"]
    assert [e.kind for e in referral.events] == ["queued"]
    audit = AuditEvent.get(AuditEvent.object_id == str(referral.id))
    assert note.patient.last_name not in audit.detail  # ids only, no PHI


@pytest.mark.parametrize("changes, message", [
    ({"channel": "pigeon"}, "unknown channel"),
    ({"direction": "sideways"}, "unknown direction"),
    ({"urgency": "whenever"}, "unknown urgency"),
    ({"excluded_sections": ("problems", "horoscope")}, "unknown Summary of Care sections: horoscope"),
    ({"recipient": "not an address"}, "malformed"),
    ({"channel": "efax", "recipient": "555-0100"}, "needs 10 digits"),
    ({"patient_id": 999_999}, "no patient"),
    ({"note_id": 999_999}, "no note"),
])
def test_bad_drafts_are_refused_and_change_nothing(note, changes, message):
    before = counts()
    with pytest.raises(ReferralError, match=message):
        create_referral(draft(note, **changes), [])
    assert counts() == before


def test_an_unsigned_note_cannot_be_sent(seeded):
    unsigned = Note.select().where(Note.signed_at.is_null()).first()
    with pytest.raises(ReferralError, match="not signed: only signed notes can be sent. Ask .* to sign it"):
        sendable_note(unsigned.id)
    with pytest.raises(ReferralError, match="not signed"):
        create_referral(draft(unsigned), [])


def test_a_note_of_another_patient_is_refused(note):
    other = Note.select().where(Note.patient != note.patient_id, Note.signed_at.is_null(False)).first()
    with pytest.raises(ReferralError, match="another patient"):
        create_referral(draft(note, note_id=other.id), [])


def test_an_oversized_attachment_rolls_back_the_whole_referral(note):
    before = counts()
    big = Attachment("scan.pdf", "application/pdf", b"%PDF" + b"0" * (25 * 1024 * 1024), kind="report")
    with pytest.raises(DocumentError, match="the limit is 25 MB"):
        create_referral(draft(note), [Attachment("a.txt", "text/plain", b"ok"), big])
    assert counts() == before


def test_outcome_never_says_sent_for_a_queued_referral(note):
    referral = create_referral(draft(note), build_attachments(draft(note)))
    text, state = referral_outcome(referral.id)
    sent = len(build_attachments(draft(note)))
    assert state == "queued" and text.startswith(f"Queued — referral #{referral.id} and {sent} document(s)")
    referral.status = "sent"
    referral.save()
    assert referral_outcome(referral.id)[1] == "sent"


def test_attachments_follow_the_encounter_note_choice(note):
    assert [a.kind for a in build_attachments(draft(note))] == ["note", "ccda", "xdm"]
    assert [a.kind for a in build_attachments(draft(note, include_note=False))] == ["ccda", "xdm"]
    note_pdf = build_attachments(draft(note))[0]
    assert note_pdf.media_type == "application/pdf" and note_pdf.filename.endswith(".pdf")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(note_pdf.content)).pages)
    assert f"MRN {note.patient.mrn}" in text and "Assessment" in text and "Page 1 of" in text


def test_fax_and_print_carry_the_packet_pdf_and_print_adds_the_ccda_and_xdm_on_request(note):
    fax = build_attachments(draft(note, channel="efax", recipient="2175550142"))
    assert [(a.kind, a.media_type) for a in fax] == [("pdf", "application/pdf")]
    assert "CONFIDENTIALITY NOTICE" in PdfReader(io.BytesIO(fax[0].content)).pages[0].extract_text()
    printed = build_attachments(draft(note, channel="print", recipient="/tmp"))
    assert [a.kind for a in printed] == ["pdf"]
    assert "CONFIDENTIALITY NOTICE" not in PdfReader(io.BytesIO(printed[0].content)).pages[0].extract_text()
    both = build_attachments(draft(note, channel="print", recipient="/tmp", extra={"ccda": True, "xdm": True}))
    assert [a.kind for a in both] == ["pdf", "ccda", "xdm"]
    assert [a.kind for a in build_attachments(draft(note, channel="print", recipient="/tmp",
                                                    extra={"xdm": True}))] == ["pdf", "xdm"]


@pytest.mark.parametrize("text, reason", [
    ("", "empty"), ("a b@c.example", "spaces"), ("no-at-sign", "exactly one @"), ("a@@b.example", "exactly one @"),
    ("a@localhost", "not a valid domain"), (".a@b.example", "before the @"), ("a@-b.example", "not a valid domain"),
    ("josé@b.example", "ASCII"), ("a" * 65 + "@b.example", "before the @"),
])
def test_malformed_direct_addresses_say_what_is_wrong(text, reason):
    with pytest.raises(AddressError, match=re.escape(reason)):
        check_direct_address(text)


def test_direct_address_forms_accepted():
    assert check_direct_address(" mailto:Dr.Who+ref@Direct.Example.ORG ") == "Dr.Who+ref@direct.example.org"


@pytest.mark.parametrize("text, result", [
    ("(217) 555-0142", "2175550142"), ("1-217-555-0142", "2175550142"), ("217.555.0142", "2175550142"),
    ("+1 217 555 0142", "2175550142"), ("+44 20 7946 0958", "+442079460958"), ("+33 1 23 45 67 89", "+33123456789"),
])
def test_fax_numbers(text, result):
    assert check_fax_number(text) == result


@pytest.mark.parametrize("text, reason", [
    ("555-0142", "needs 10 digits"), ("017-555-0142", "no such area code"), ("217-155-0142", "no such area code"),
    ("217-555-014x", "only digits"), ("(555) 123-0001", "no such area code"), ("", "empty"),
    ("+44 20 7946", "not a valid number for country code +44"), ("+999 1234 5678", "not a phone number"),
])
def test_bad_fax_numbers(text, reason):
    with pytest.raises(AddressError, match=re.escape(reason)):
        check_fax_number(text)


def test_fax_numbers_for_people_and_for_providers():
    assert format_fax("2175550142") == "(217) 555-0142" and fax_e164("2175550142") == "+12175550142"
    assert format_fax("+442079460958") == "+44 20 7946 0958" and fax_e164("+442079460958") == "+442079460958"


def test_suggestions_match_any_part_of_the_name_and_the_address(seeded):
    contact = Contact.select().where(Contact.direct_address != "").order_by(Contact.id).first()
    last = contact.name.split(",")[0].split()[-1]
    by_last = suggest_contacts(last[:4])
    assert contact.id in [s.contact_id for s in by_last]
    by_address = suggest_contacts(contact.direct_address[:6].upper())
    assert contact.id in [s.contact_id for s in by_address]
    assert all(s.address for s in suggest_contacts("a", "direct"))
    assert suggest_contacts("😀'\"*") == [] and suggest_contacts("") == []
    fax_only = Contact.select().where(Contact.direct_address == "").first()
    assert fax_only.id not in [s.contact_id for s in suggest_contacts(fax_only.name[:5], "direct")]
    assert fax_only.id in [s.contact_id for s in suggest_contacts(fax_only.name[:5], "efax")]


def test_verdicts_come_from_form_then_the_address_book_and_say_so(seeded):
    assert verify_direct_address("nope").state == "invalid"
    assert verify_direct_address("nope").source == "form"
    good = Contact.get(Contact.verification == "verified")
    verdict = verify_direct_address(good.direct_address)
    assert (verdict.ok, verdict.source, verdict.checked_at) == (True, "address-book", good.verified_at)
    revoked = Contact.get(Contact.verification_reason == "certificate revoked")
    verdict = verify_direct_address(revoked.direct_address)
    assert (verdict.state, verdict.reason) == ("invalid", "certificate revoked")
    unknown = verify_direct_address("someone@direct.nowhere.example")
    assert (unknown.state, unknown.source) == ("unverified", "none") and not unknown.ok
    local, domain = good.direct_address.split("@")
    assert contact_by_address(f"{local}@{domain.upper()}").id == good.id


def test_fax_and_folder_verdicts(tmp_path):
    assert verify_fax_number("(217) 555-0142").recipient == "2175550142"
    assert verify_fax_number("12").state == "invalid"
    assert verify_print_folder(str(tmp_path)).ok
    assert verify_print_folder(str(tmp_path / "new")).reason == "folder will be created"
    (tmp_path / "file").write_text("x")
    assert "is a file" in verify_print_folder(str(tmp_path / "file")).reason
    assert verify_print_folder(str(tmp_path / "a" / "b")).reason == "folder will be created"
    assert verify_print_folder(str(tmp_path / "file" / "b")).reason == f"{tmp_path / 'file'} is a file, not a folder"
    assert verify_print_folder("printer:Front_Desk-2").recipient == "printer:Front_Desk-2"
    assert verify_print_folder("printer:bad queue;rm").state == "invalid"
