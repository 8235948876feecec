"""The referral packet PDF, read back with an independent PDF reader (pypdf): every page names the patient and
counts its pages, the sections follow the Summary of Care ticks and match the C-CDA, Unicode names come out
exactly, fonts are embedded, nothing is escaped wrongly and long notes paginate."""

from __future__ import annotations

import io
import unicodedata

import pytest
from lxml import etree
from pypdf import PdfReader

from documents.ccda import build_ccda
from documents.ccda.sections import SPECS, WITHHELD
from documents.pdf import build_referral_pdf
from models.clinical import Payer, Problem
from models.patients import Note, Patient
from models.practice import Practice
from models.referring import SUMMARY_OF_CARE, ReferralDraft

ITEMS = [key for key, _ in SUMMARY_OF_CARE]
FIRST, LAST = "Zoë", "Nuñez-O'Brien"
NAME = f"{FIRST} {LAST}"
RECIPIENT = "Dr. Nguyễn Thị Lan"
REASON = "Chest pain on exertion & dyspnea <2 weeks> — \"worse\" on stairs"
V3 = {"v3": "urn:hl7-org:v3"}


def signed_note(patient_id: int) -> Note | None:
    return (Note.select().where(Note.patient == patient_id, Note.signed_at.is_null(False))
            .order_by(Note.written_at.desc()).first())


@pytest.fixture
def patient(seeded) -> Patient:
    """A seeded patient with a signed note, problems, medications and allergies, renamed to a Unicode name."""
    chosen = next(p for p in Patient.select().order_by(Patient.id)
                  if signed_note(p.id) and p.problems.count() >= 2 and p.medications.count() >= 1
                  and p.allergies.count() >= 1 and p.payers.count() >= 1)
    chosen.first_name, chosen.middle_name, chosen.last_name = FIRST, "", LAST
    chosen.save()
    return chosen


def draft_for(patient: Patient, **changes) -> ReferralDraft:
    note = signed_note(patient.id)
    values = dict(patient_id=patient.id, note_id=note.id, channel="direct",
                  recipient="cardio@direct.valley-cardio.example", recipient_name=RECIPIENT, reason=REASON,
                  urgency="urgent", extra={"specialty": "Cardiology"})
    values.update(changes)
    return ReferralDraft(**values)


def read(pdf: bytes) -> tuple[PdfReader, list[str]]:
    assert pdf.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(pdf))
    return reader, [page.extract_text() for page in reader.pages]


def outline_titles(reader: PdfReader) -> list[str]:
    titles = []

    def walk(items):
        for item in items:
            if isinstance(item, list):
                walk(item)
            else:
                titles.append(item.title)
    walk(reader.outline)
    return titles


def ccda_section_titles(draft: ReferralDraft) -> list[str]:
    """The titles of the sections the C-CDA carries with content (withheld and note sections left out)."""
    root = etree.fromstring(build_ccda(draft))
    titles = []
    for section in root.iterfind(".//v3:structuredBody/v3:component/v3:section", V3):
        words = "".join(section.find("v3:text", V3).itertext())
        if WITHHELD in words or section.find("v3:templateId[@root='2.16.840.1.113883.10.20.22.2.65']", V3) \
                is not None:
            continue
        titles.append(section.findtext("v3:title", namespaces=V3))
    return titles


def test_every_page_names_the_patient_and_counts_pages(patient):
    reader, pages = read(build_referral_pdf(draft_for(patient), cover_sheet=True))
    total = len(pages)
    assert total >= 4  # cover, letter, summary, note
    dob = f"DOB {patient.birth_date:%m/%d/%Y}"
    for number, text in enumerate(pages, start=1):
        assert NAME in text, f"page {number} lacks the patient's name"
        assert dob in text, f"page {number} lacks the date of birth"
        assert f"Page {number} of {total}" in text
        assert "{nb}" not in text


def test_unicode_names_extract_exactly(patient):
    # Decomposed input (as some keyboards and imports produce) is shown with the font's precomposed glyphs.
    decomposed = unicodedata.normalize("NFD", RECIPIENT)
    assert decomposed != RECIPIENT
    _, pages = read(build_referral_pdf(draft_for(patient, recipient_name=decomposed), cover_sheet=True))
    text = "\n".join(pages)
    assert NAME in text
    assert "Nguyễn Thị" in text
    assert RECIPIENT in pages[0] and RECIPIENT in pages[1]  # cover sheet "To", letter "Referred to"
    assert f"Referral: {LAST}, {FIRST}" in pages[0]  # the default subject


def test_fonts_are_embedded_truetype_subsets(patient):
    pdf = build_referral_pdf(draft_for(patient), cover_sheet=True)
    reader = PdfReader(io.BytesIO(pdf))
    seen = set()
    for page in reader.pages:
        fonts = page["/Resources"]["/Font"]
        for ref in fonts.values():
            font = ref.get_object()
            assert font["/Subtype"] == "/Type0", f"non-Unicode font {font}"
            assert "/ToUnicode" in font  # text extracts as the characters written
            descendant = font["/DescendantFonts"][0].get_object()
            descriptor = descendant["/FontDescriptor"].get_object()
            assert "/FontFile2" in descriptor, "TrueType font program not embedded"
            assert len(descriptor["/FontFile2"].get_object().get_data()) > 1000
            seen.add(str(font["/BaseFont"]).split("+")[-1])
    assert seen == {"DejaVuSansBook", "DejaVuSansBold"}


def test_cover_sheet_counts_all_pages_and_carries_the_notice(patient):
    draft = draft_for(patient, channel="efax", recipient="(555) 123-4567")
    _, with_cover = read(build_referral_pdf(draft, cover_sheet=True))
    _, without = read(build_referral_pdf(draft))
    assert len(with_cover) == len(without) + 1
    cover = with_cover[0]
    assert f"Pages {len(with_cover)} (including this cover sheet)" in cover
    assert "CONFIDENTIALITY NOTICE" in cover and "protected health information" in cover
    for words in ("FAX", RECIPIENT, "(555) 123-4567", "Riverbend", "11/02/2026", "Subject"):
        assert words in cover, words
    assert "CONFIDENTIALITY NOTICE" not in without[0]
    assert "Referral Note" in without[0]
    assert f"Page 1 of {len(without)}" in without[0]


def test_letter_carries_who_what_and_why(patient):
    draft = draft_for(patient)
    ctx_note = signed_note(patient.id)
    author = ctx_note.signed_by or ctx_note.author
    _, pages = read(build_referral_pdf(draft))
    letter = pages[0]
    practice = Practice.select().first()
    payer = Payer.select().where(Payer.patient == patient.id).first()
    for words in (author.display_name, f"NPI {author.npi}", practice.direct_address, practice.phone, RECIPIENT,
                  "Cardiology", "cardio@direct.valley-cardio.example", patient.mrn, patient.phone,
                  payer.payer_name, "Urgent", "consultation report back", "Sincerely",
                  f"Electronically signed by {ctx_note.signed_by.display_name}"):
        assert words in letter, words
    assert "Chest pain on exertion & dyspnea <2 weeks> — \"worse\" on stairs" in letter.replace("\n", " ")
    assert {"F": "Female", "M": "Male"}.get(patient.sex, "Unknown") in letter
    active = [p.icd10_code for p in Problem.select().where(Problem.patient == patient.id)
              if p.icd10_code and p.status == "active"]
    for code in active:
        assert code in letter


@pytest.mark.parametrize("unticked", [(), ("medications",), ("problems", "allergies"), ("results", "care_team"),
                                      tuple(ITEMS)])
def test_sections_follow_the_ticks_and_match_the_ccda(patient, unticked):
    draft = draft_for(patient, excluded_sections=unticked, include_note=False)
    reader, pages = read(build_referral_pdf(draft))
    text = "\n".join(pages)
    titles = outline_titles(reader)
    expected = ccda_section_titles(draft)
    summary = titles[titles.index("Clinical summary") + 1:] if "Clinical summary" in titles else []
    assert summary == expected  # the same sections, in the same order, as the C-CDA
    for key in ITEMS:
        title = SPECS[key].title
        if key in unticked:
            assert title not in titles
            if key != "reason_for_referral":  # the letter itself states the reason
                assert f"\n{title}\n" not in f"\n{text}\n", title
        elif key in ("problems", "medications", "allergies"):
            assert title in titles and title in text
    assert not any(t.startswith("Encounter note") for t in titles)
    if "problems" not in unticked:
        for p in Problem.select().where(Problem.patient == patient.id):
            assert p.snomed_code in text


def test_signed_note_when_chosen(patient):
    note = signed_note(patient.id)
    reader, pages = read(build_referral_pdf(draft_for(patient)))
    titles = outline_titles(reader)
    assert any(t.startswith("Encounter note") for t in titles)
    text = "\n".join(pages)
    for title, _ in note.sections:
        assert title in text
    assert f"Signed {note.signed_by.display_name}" in text


def test_nothing_escaped_and_long_notes_paginate(patient):
    note = signed_note(patient.id)
    line = "Line with <tags> & 'quotes' \"double\" — café ✓ Nguyễn"
    long_text = "\n".join(f"{n:04d} {line}" for n in range(1, 601))
    note.sections = [("Plan", long_text), ("Unbroken", "x" * 3000)]
    note.save()
    _, short = read(build_referral_pdf(draft_for(patient, include_note=False)))
    _, pages = read(build_referral_pdf(draft_for(patient)))
    assert len(pages) >= len(short) + 10
    text = "\n".join(pages)
    assert f"0001 {line}" in text and f"0600 {line}" in text
    assert "&amp;" not in text and "&lt;" not in text
    for number, page in enumerate(pages, start=1):
        assert NAME in page and f"Page {number} of {len(pages)}" in page
