"""The C-CDA reader on HL7's and ONC's own documents, on narrative corner cases, and on hostile input."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from lxml import etree

from documents.ccda_view import (CcdaViewError, ItemList, Paragraph, Table, parse_ts, read_ccda)
from models.documents import MAX_DOCUMENT_BYTES

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "standards" / "cda" / "examples"
HL7_DOCS = EXAMPLES / "hl7-c-cda-examples" / "Documents"
REFERRAL_NOTE = HL7_DOCS / "Referral Note" / "Referral_Note.xml"
CCD_1 = HL7_DOCS / "CCD" / "CCD 1" / "CCD.XML"
CCD_2 = HL7_DOCS / "CCD" / "CCD 2" / "CCD.xml"
IMAGING = HL7_DOCS / "Diagnostic Imaging Report" / "Diagnostic_Imaging_Report.xml"
ONC_CCDS = EXAMPLES / "onc-negative" / "NegativeTesting_CCDS"
BAD_XML = ONC_CCDS / "NT_BadXml_r11_v2.xml"


def section(view, title):
    return next(s for _, s in view.all_sections() if s.title == title)


def cda(body: str, header: str = "") -> bytes:
    """A minimal ClinicalDocument around `body` (the structuredBody's components)."""
    return (f'<?xml version="1.0"?>\n<ClinicalDocument xmlns="urn:hl7-org:v3"><title>T</title>{header}'
            f'<component><structuredBody>{body}</structuredBody></component></ClinicalDocument>').encode()


def narrative(text: str, title: str = "S") -> bytes:
    return cda(f"<component><section><title>{title}</title><text>{text}</text></section></component>")


# --- real documents -----------------------------------------------------------------------------------------


def test_referral_note_header():
    view = read_ccda(REFERRAL_NOTE.read_bytes())
    assert view.title == "Referral Note"
    assert (view.type_code, view.type_display) == ("57113-1", "Referral Note")
    assert view.effective_time == dt.datetime(2013, 9, 21, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=-8)))
    assert view.patient.name == "Eve Betterhalf"
    assert view.patient.birth_date == dt.date(1975, 5, 1)
    assert view.patient.sex == "Female"
    assert view.patient.mrn == ""  # its only identifier is an SSN, never shown as the patient's ID
    assert view.author.name == "Patricia Primary, M.D."
    assert view.custodian.organization == "Good Health HIE"
    assert [str(r) for r in view.recipients] == ["Nancy Nightingale, RN — Community Health and Hospitals"]


def test_referral_note_sections_and_narrative():
    view = read_ccda(REFERRAL_NOTE.read_bytes())
    titles = [s.title for s in view.sections]
    assert titles[:3] == ["ADVANCE DIRECTIVES", "ALLERGIES AND ADVERSE REACTIONS", "ASSESSMENT"]
    assert "REASON FOR REFERRAL" in titles and len(titles) == 18
    allergies = section(view, "ALLERGIES AND ADVERSE REACTIONS")
    assert allergies.code == "48765-2"
    assert allergies.blocks == (Table(headers=("Substance", "Reaction"),
                                      rows=(("Penicillin", "Nausea"), ("Codeine", "Wheezing"))),)
    # <content> and <linkHtml> are read as their text.
    directives = section(view, "ADVANCE DIRECTIVES").blocks[0]
    assert directives.rows[0] == ("Resuscitation status", "Do not resuscitate",
                                  "Dr. Patricia Primary, Feb 19, 2011", "Advance directive")
    assessment = section(view, "ASSESSMENT").blocks[0]
    assert isinstance(assessment, ItemList) and assessment.ordered
    assert assessment.items[:2] == ("Uncontrolled brittle Type II diabetic.", "Obesity.")
    # A list nested in a list item stays under its item.
    problems = section(view, "PROBLEMS")
    assert problems.blocks[0] == Paragraph("Active Concerns")
    assert problems.blocks[1].items[1].splitlines() == [
        "Problem #2", "• Mixed Asthma (onset Apr 14, 2007) [authored Apr 14, 2007]",
        "• Acute Asthma (onset Apr 17, 2007) [authored Apr 17, 2007]"]
    referral = section(view, "REASON FOR REFERRAL")
    assert referral.blocks[0].text.startswith("Patient referral for consultation for full care.")


def test_nested_sections_are_kept_under_their_parent():
    view = read_ccda(REFERRAL_NOTE.read_bytes())
    exam = section(view, "Physical Examination")
    assert [s.title for s in exam.subsections] == ["SKIN, PHYSICAL FINDING"]
    assert (1, exam.subsections[0]) in view.all_sections()
    assert exam.blocks[0].text.startswith("Key Findings:")


def test_ccd_tables_and_identifiers():
    view = read_ccda(CCD_1.read_bytes())
    assert view.title == "Patient Chart Summary" and view.type_code == "34133-9"
    assert [s.title for s in view.sections][-3:] == ["RESULTS", "SOCIAL HISTORY", "VITAL SIGNS"]
    vitals = section(view, "VITAL SIGNS").blocks[0]
    assert vitals.headers == ("Date / Time:", "Sept 10, 2012", "Sept 1, 2011")
    assert vitals.rows[:2] == (("Height", "177 cm", "177 cm"), ("Weight", "86 kg", "88 kg"))
    other = read_ccda(CCD_2.read_bytes())
    assert other.patient.name == "Isabella Jones" and other.patient.mrn == "98765432"
    assert section(other, "ALLERGIES AND ADVERSE REACTIONS").blocks == (Paragraph("No known allergies"),)


def test_a_section_without_text_says_no_information():
    view = read_ccda(IMAGING.read_bytes())
    assert view.title == "Chest X-Ray, PA and LAT View"
    assert section(view, "DICOM Object Catalog").blocks == (Paragraph("No information"),)


@pytest.mark.parametrize("path", sorted(HL7_DOCS.glob("*/*.xml")) + sorted(HL7_DOCS.glob("CCD/*/*"))
                         + sorted(p for p in EXAMPLES.glob("onc-negative/*/*.xml") if p != BAD_XML),
                         ids=lambda p: p.name)
def test_every_example_document_reads(path):
    view = read_ccda(path.read_bytes())
    assert view.sections and all(s.title and s.blocks or s.subsections for _, s in view.all_sections())


def test_onc_documents_with_broken_headers_still_read():
    missing_name = read_ccda((ONC_CCDS / "NT_Missing_PatientName_r11_v2.xml").read_bytes())
    assert missing_name.patient.name == "" and missing_name.patient.birth_date == dt.date(1947, 5, 1)
    bad_time = read_ccda((ONC_CCDS / "NT_Bad_DocEffectiveTime_r11_v2.xml").read_bytes())
    assert bad_time.effective_time is None
    assert bad_time.sections[0].title == "ALLERGIES, ADVERSE REACTIONS, ALERTS"


def test_not_well_formed_onc_document():
    with pytest.raises(CcdaViewError) as caught:
        read_ccda(BAD_XML.read_bytes())
    assert str(caught.value) == "not well-formed XML at line 59: error parsing attribute name"


# --- narrative corner cases -----------------------------------------------------------------------------------


def test_colspan_caption_and_header_row_in_tbody():
    fragment = (EXAMPLES / "hl7-cda-examples-ig" / "results-radiology-with-image-narrative.xml").read_text()
    text = fragment[fragment.index("<text>"):fragment.index("</text>") + 7]
    view = read_ccda(cda(f"<component><section><title>Results</title>{text}</section></component>"))
    table = view.sections[0].blocks[0]
    assert table.headers == ("Description", "Value / Unit", "Interpretation", "Reference Range")
    assert table.rows[0] == ("Chest X-RAY 2 views", "", "", "")
    assert table.rows[2][1].startswith("The lungs are clear. The heart is enlarged")
    assert "\n" not in table.rows[2][1]  # the source's line breaks are whitespace, not <br/>

    captioned = read_ccda(narrative("<table><caption>Labs</caption><tbody><tr><th>Test</th><th>Value</th></tr>"
                                    "<tr><td>Na</td><td>140</td></tr></tbody></table>"))
    assert captioned.sections[0].blocks == (Table(headers=("Test", "Value"), rows=(("Na", "140"),),
                                                  caption="Labs"),)


def test_inline_markup_breaks_images_footnotes_and_deletions():
    view = read_ccda(narrative(
        "Seen <content styleCode='Bold'>today</content>.<br/>Plan:   rest  "
        "<paragraph>X-ray <renderMultiMedia referencedObject='i1'/> attached"
        "<footnote>source: PACS</footnote><content revised='delete'>old text</content>.</paragraph>"
        "<list><caption>To do</caption><item>Fluids</item><item>Review in <linkHtml href='#x'>2 weeks</linkHtml>"
        "</item></list>"))
    assert view.sections[0].blocks == (
        Paragraph("Seen today.\nPlan: rest"),
        Paragraph("X-ray [image] attached."),
        ItemList(items=("Fluids", "Review in 2 weeks"), caption="To do"),
    )


def test_null_flavored_empty_and_nested_sections():
    view = read_ccda(cda(
        "<component><section nullFlavor='NI'><title>Results</title><text>Ignored</text></section></component>"
        "<component><section><code code='29545-1' displayName='Physical findings'/><text/>"
        "<component><section><title>Skin</title><text>Warm, dry.</text></section></component>"
        "</section></component>"
        "<component><section><title>Goals</title><text>   </text></section></component>"))
    results, exam, goals = view.sections
    assert results.blocks == (Paragraph("No information"),)
    assert exam.title == "Physical findings" and exam.code == "29545-1" and exam.blocks == ()
    assert exam.subsections[0].blocks == (Paragraph("Warm, dry."),)
    assert goals.blocks == (Paragraph("No information"),)


def test_markup_like_text_is_kept_as_written():
    view = read_ccda(narrative("[bold]not markup[/bold] &amp; &lt;tags&gt;"))
    assert view.sections[0].blocks == (Paragraph("[bold]not markup[/bold] & <tags>"),)


def test_non_xml_body_plain_text():
    data = (b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>Scan</title><component><nonXMLBody>'
            b'<text mediaType="text/plain">Report   text</text></nonXMLBody></component></ClinicalDocument>')
    assert read_ccda(data).sections[0].blocks == (Paragraph("Report text"),)


@pytest.mark.parametrize("value, expected", [
    ("2013", dt.date(2013, 1, 1)),
    ("201309", dt.date(2013, 9, 1)),
    ("20130921", dt.date(2013, 9, 21)),
    ("2013092105", dt.datetime(2013, 9, 21, 5, 0)),
    ("201309210500-0800", dt.datetime(2013, 9, 21, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=-8)))),
    ("20130921050012.123+0530",
     dt.datetime(2013, 9, 21, 5, 0, 12, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))),
    ("20131341", None),
    ("not a date", None),
    ("", None),
])
def test_parse_ts(value, expected):
    assert parse_ts(value) == expected


# --- hostile and wrong input ---------------------------------------------------------------------------------

DTD_REFUSAL = "this document contains a DOCTYPE/entity declarations, which referdesk never processes"


def test_xxe_to_a_local_file_is_refused_without_reading_it(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-PHI")
    doc = (f'<?xml version="1.0"?>\n<!DOCTYPE ClinicalDocument [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
           f'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&xxe;</title></ClinicalDocument>')
    for data in (doc.encode(), doc.replace('"1.0"?>', '"1.0" encoding="UTF-16"?>').encode("utf-16")):
        with pytest.raises(CcdaViewError) as caught:
            read_ccda(data)
        assert str(caught.value) == DTD_REFUSAL
        assert "TOP-SECRET" not in str(caught.value)


def test_a_doctype_the_prolog_scan_misses_is_refused_after_parsing_without_resolving(tmp_path, monkeypatch):
    import documents.ccda_view as ccda_view

    monkeypatch.setattr(ccda_view, "_prolog_has_doctype", lambda text: False)  # as if the scan were fooled
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-PHI")
    doc = (f'<!-- <x> --><!DOCTYPE ClinicalDocument [<!ENTITY xxe SYSTEM "file://{secret}">]>'
           f'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&xxe;</title></ClinicalDocument>')
    with pytest.raises(CcdaViewError) as caught:
        read_ccda(doc.encode())
    assert str(caught.value) == DTD_REFUSAL
    root = etree.fromstring(doc.encode(), ccda_view._parser())
    assert "TOP-SECRET" not in etree.tostring(root, encoding=str)  # the parser itself never read the file


def test_billion_laughs_is_refused_before_any_expansion():
    levels = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    doc = (f'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">{levels}]>'
           f'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol9;</title></ClinicalDocument>')
    for data in (doc.encode(), doc.encode("utf-16")):
        with pytest.raises(CcdaViewError, match="DOCTYPE/entity declarations"):
            read_ccda(data)


def test_a_plain_doctype_is_refused_but_the_word_in_a_comment_is_not():
    for prolog in (b"", b'\xef\xbb\xbf<?xml version="1.0"?>\n<!-- a <b> comment -->\n'):
        with pytest.raises(CcdaViewError, match="DOCTYPE"):
            read_ccda(prolog + b'<!DOCTYPE html>\n<ClinicalDocument xmlns="urn:hl7-org:v3"/>')
    view = read_ccda(b'<ClinicalDocument xmlns="urn:hl7-org:v3"><!-- <!DOCTYPE x> --><title>Ok</title>'
                     b'</ClinicalDocument>')
    assert view.title == "Ok" and view.sections == ()


@pytest.mark.parametrize("data, message", [
    (b"<html><body>hi</body></html>", "this XML is a <html>, not an HL7 CDA document"),
    (b'<Bundle xmlns="http://hl7.org/fhir"/>', "this XML is a <Bundle>, not an HL7 CDA document"),
    (b"<ClinicalDocument><title>x</title></ClinicalDocument>",
     "this XML is a <ClinicalDocument> in no namespace, not an HL7 CDA document (expected urn:hl7-org:v3)"),
    (b"", "this document is empty"),
    (b"  \n ", "this document is empty"),
    (b"%PDF-1.4\n%\xe2\xe3", "not well-formed XML at line 1: Start tag expected, '<' not found"),
])
def test_what_is_not_a_cda_document(data, message):
    with pytest.raises(CcdaViewError) as caught:
        read_ccda(data)
    assert str(caught.value) == message


def test_oversized_input_is_refused_before_parsing():
    data = b"<" + b" " * MAX_DOCUMENT_BYTES
    with pytest.raises(CcdaViewError) as caught:
        read_ccda(data)
    assert str(caught.value) == "this document is 25.0 MB; referdesk reads documents up to 25 MB"


def test_a_one_megabyte_ccd_reads_whole():
    """(How fast: bench/bench_ccda.py.)"""
    source = CCD_1.read_bytes()
    start, end = source.index(b"<structuredBody>") + 16, source.index(b"</structuredBody>")
    body = source[start:end]
    data = source[:start] + body * (1_048_576 // len(body) + 1) + source[end:]
    assert len(data) > 1_048_576
    view = read_ccda(data)
    once = len(read_ccda(source).sections)
    assert len(view.sections) == once * (1_048_576 // len(body) + 1)


def test_reading_is_safe_in_threads():
    from concurrent.futures import ThreadPoolExecutor

    data = REFERRAL_NOTE.read_bytes()
    with ThreadPoolExecutor(4) as pool:
        titles = set(pool.map(lambda _: read_ccda(data).sections[-1].title, range(16)))
    assert titles == {"VITAL SIGNS"}


def test_examples_are_where_the_tests_expect_them():
    # A guard with a clear message should the shared folder move.
    assert REFERRAL_NOTE.is_file(), f"missing {REFERRAL_NOTE}"
    assert os.access(BAD_XML, os.R_OK)


# --- the documents layer around the reader (documents.viewing) ---------------------------------------------


def test_display_modes_media_types_and_sizes():
    from documents.viewing import display_mode, human_size, short_media_type

    assert display_mode("text/xml", b"<x/>") == "ccda"
    assert display_mode("application/octet-stream", b'<?xml version="1.0"?><ClinicalDocument/>') == "ccda"
    assert display_mode("text/plain; charset=utf-8", b"hello") == "text"
    assert display_mode("application/pdf", b"%PDF-1.4") == "binary"
    assert display_mode("application/zip", b"PK\x03\x04") == "binary"
    assert [short_media_type(t) for t in ("text/xml", "application/pdf", "text/plain; charset=utf-8",
                                          "application/hl7-v3+xml", "image/png")] == ["XML", "PDF", "Text", "XML",
                                                                                      "PNG"]
    assert [human_size(n) for n in (0, 1023, 1024, 138_545, 25 * 1_048_576)] == ["0 B", "1023 B", "1.0 KB",
                                                                                  "135 KB", "25.0 MB"]


def test_safe_filename_keeps_only_a_plain_name():
    from documents.viewing import safe_filename

    assert safe_filename("../../etc/passwd", "x") == "passwd"
    assert safe_filename("C:\\Users\\a\\report 1.pdf", "x") == "report 1.pdf"
    assert safe_filename("..", "document-7") == "document-7"
    assert safe_filename("rm -rf $HOME;.pdf", "x") == "rm -rf _HOME_.pdf"


def test_display_document_for_each_kind(db):
    from documents.viewing import display_document
    from models.documents import Attachment, file_document

    def shown(name, media_type, content):
        return display_document(file_document(Attachment(name, media_type, content, title=name), owner="practice"))

    ccda = shown("rn.xml", "text/xml", REFERRAL_NOTE.read_bytes())
    assert ccda.mode == "ccda" and ccda.ccda.title == "Referral Note" and ccda.type_label == "XML"
    fhir = shown("b.xml", "application/xml", b'<Bundle xmlns="http://hl7.org/fhir"/>')
    assert (fhir.mode, fhir.error, fhir.text) == ("error", "this XML is a <Bundle>, not an HL7 CDA document",
                                                 '<Bundle xmlns="http://hl7.org/fhir"/>')
    latin = shown("n.txt", "text/plain; charset=iso-8859-1", "Zoë".encode("latin-1"))
    assert (latin.mode, latin.text) == ("text", "Zoë")
    pdf = shown("p.pdf", "application/pdf", b"%PDF-1.4")
    assert pdf.mode == "binary" and dict(pdf.details)["Size"] == "8 B (8 bytes)"
    assert dict(pdf.details)["Owner"] == "Practice"


def test_save_copy_is_private_never_overwrites_and_is_audited(db, tmp_path):
    from documents.viewing import DocumentCopyError, save_copy
    from models.documents import Attachment, file_document
    from models.referrals import AuditEvent

    document = file_document(Attachment("../x/packet.pdf", "application/pdf", b"%PDF-1.4 data"), owner="practice")
    old_umask = os.umask(0)  # a careless umask must not make the copy readable by others
    try:
        path = save_copy(document.id, tmp_path, username="frontdesk")
    finally:
        os.umask(old_umask)
    assert path == tmp_path / "packet.pdf" and path.read_bytes() == b"%PDF-1.4 data"
    assert path.stat().st_mode & 0o777 == 0o600
    event = AuditEvent.get(AuditEvent.action == "document.save-copy")
    assert (event.username, event.object_id, event.detail) == ("frontdesk", str(document.id), "")
    with pytest.raises(DocumentCopyError, match="already exists; referdesk never overwrites a file"):
        save_copy(document.id, tmp_path)
    with pytest.raises(DocumentCopyError, match="does not exist"):
        save_copy(document.id, tmp_path / "missing")
    with pytest.raises(DocumentCopyError, match="is a file, not a folder"):
        save_copy(document.id, path)
    with pytest.raises(DocumentCopyError, match="type the folder"):
        save_copy(document.id, "  ")
    assert AuditEvent.select().count() == 1
