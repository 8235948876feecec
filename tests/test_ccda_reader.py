"""documents.ccda_reader / ccda_validate against HL7's and ONC's example documents and hostile inputs.

Expected values come from direct XPath on each file, so the tests check the reader against the documents
themselves rather than against numbers copied by hand.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from documents.ccda_reader import as_json, read_summary
from documents.ccda_validate import inspect_file, validate

SHARED = Path(__file__).resolve().parents[2] / "shared"
EXAMPLES = SHARED / "standards/cda/examples"
SCHEMA_DIR = SHARED / "standards/cda/schema"
XDM_DIR = SHARED / "standards/direct/ett/xdm"
CCD = EXAMPLES / "hl7-c-cda-examples/Documents/CCD/CCD 1/CCD.XML"
REFERRAL = EXAMPLES / "hl7-c-cda-examples/Documents/Referral Note/Referral_Note.xml"
NS = {"v": "urn:hl7-org:v3"}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)



def _full_documents() -> list[Path]:
    """Every example file whose root is a CDA ClinicalDocument with a recordTarget (fragments are skipped)."""
    found = []
    for folder, _, names in os.walk(EXAMPLES):
        for name in names:
            path = Path(folder) / name
            try:
                root = etree.parse(str(path), _PARSER).getroot()
            except etree.XMLSyntaxError:
                continue
            if root.tag == "{urn:hl7-org:v3}ClinicalDocument" and root.find("v:recordTarget", NS) is not None:
                found.append(path)
    return sorted(found)


FULL_DOCUMENTS = _full_documents() if EXAMPLES.is_dir() else []
NEGATIVE = sorted(p for p in (EXAMPLES / "onc-negative").rglob("*") if p.is_file()) if EXAMPLES.is_dir() else []


def _id(path: Path) -> str:
    return str(path.relative_to(EXAMPLES))


def _xpath_string(root, expression: str) -> str:
    return " ".join(root.xpath(f"string({expression})", namespaces=NS).split())


_SECTION = ("//v:section[v:code/@code='{code}' or v:templateId/@root='2.16.840.1.113883.10.20.22.2.{t}' "
            "or v:templateId/@root='2.16.840.1.113883.10.20.22.2.{t}.1']/v:entry")


def test_discovery_finds_the_documents():
    assert len(FULL_DOCUMENTS) >= 60
    assert sum("hl7-c-cda-examples/Documents" in str(p) for p in FULL_DOCUMENTS) == 12


@pytest.mark.parametrize("path", FULL_DOCUMENTS, ids=_id)
def test_patient_and_lists_match_direct_xpath(path):
    root = etree.parse(str(path), _PARSER).getroot()
    summary = read_summary(path.read_bytes())

    legal = "v:recordTarget/v:patientRole/v:patient/v:name[not(@use) or @use='L'][1]"
    assert summary.patient.last_name == _xpath_string(root, f"{legal}/v:family[1]")
    first = _xpath_string(root, f"{legal}/v:given[not(@qualifier='CL' or @qualifier='BR')][1]") \
        if root.xpath(f"{legal}/v:given[not(@qualifier='CL' or @qualifier='BR')]", namespaces=NS) \
        else _xpath_string(root, f"{legal}/v:given[1]")
    assert summary.patient.first_name == first
    birth = _xpath_string(root, "v:recordTarget/v:patientRole/v:patient/v:birthTime/@value")
    assert summary.patient.birth_date == f"{birth[:4]}-{birth[4:6]}-{birth[6:8]}"

    for kind, code, template in (("problem", "11450-4", "5"), ("medication", "10160-0", "1"),
                                 ("allergy", "48765-2", "6")):
        expected = len(root.xpath(_SECTION.format(code=code, t=template), namespaces=NS))
        got = sum(1 for section in summary.sections for entry in section.entries if entry.kind == kind)
        assert got == expected, (kind, got, expected)


def test_known_documents_are_read_right():
    summary = read_summary(CCD.read_bytes())
    assert (summary.document_type.code, summary.document_type.template) == ("34133-9", "CCD")
    assert summary.cda_version == "R2.0"
    patient = summary.patient
    assert (patient.first_name, patient.last_name, patient.sex, patient.sex_display) == ("Eve", "Betterhalf", "F",
                                                                                         "Female")
    problems = [e for s in summary.sections for e in s.entries if e.kind == "problem"]
    assert all(e.code and e.display for e in problems)
    vitals = [e for s in summary.sections for e in s.entries if e.kind == "vital"]
    assert vitals and all(e.value for e in vitals) and any(e.unit for e in vitals)
    assert summary.author.name and summary.custodian.organization

    referral = read_summary(REFERRAL.read_bytes())
    assert referral.document_type.template == "Referral Note"
    assert not [f for f in referral.findings if "requires" in f.message]


def test_gender_identity_and_sexual_orientation_are_read_from_social_history():
    fragment = EXAMPLES / "hl7-cda-examples-ig/social-history-sexual-orientation-gender-identity.xml"
    doc = etree.fromstring(b'<ClinicalDocument xmlns="urn:hl7-org:v3"><component><structuredBody><component/>'
                           b'</structuredBody></component></ClinicalDocument>')
    doc.find("v:component/v:structuredBody/v:component", NS).append(etree.parse(str(fragment), _PARSER).getroot())
    patient = read_summary(etree.tostring(doc)).patient
    assert (patient.gender_identity, patient.sexual_orientation, patient.recorded_sex) == (
        "Female-to-male transsexual", "Bisexual", "")


def test_versions_are_guessed_from_template_ids():
    r21 = read_summary((EXAMPLES / "hl7-c-cda-examples/Unstructured/CDA with Embedded PDF 1/"
                        "Unstructured_Document_embed.xml").read_bytes())
    v30 = read_summary((EXAMPLES / "hl7-cda-examples-ig/unstructured-cda-with-embedded-pdf-1.xml").read_bytes())
    r11 = read_summary((EXAMPLES / "hl7-cda-examples-ig/general-parent-document-replace-relationship.xml")
                       .read_bytes())
    assert (r21.cda_version, v30.cda_version, r11.cda_version) == ("R2.1", "3.0", "R1.1")
    assert r21.document_type.template == "Unstructured Document"
    assert r21.embedded_pdf == {"media_type": "application/pdf", "size": 173792}


def test_missing_required_sections_are_findings():
    root = etree.parse(str(REFERRAL), _PARSER).getroot()
    for section in root.xpath("//v:section[v:code/@code='42349-1']", namespaces=NS):
        component = section.getparent()
        component.getparent().remove(component)
    summary = read_summary(etree.tostring(root))
    assert any(f.severity == "error" and "Reason for Referral" in f.message for f in summary.findings)


@pytest.mark.parametrize("path", NEGATIVE, ids=_id)
def test_onc_negative_documents_do_not_crash(path):
    summary = read_summary(path.read_bytes())
    json.dumps(as_json(summary))
    if path.name == "NT_BadXml_r11_v2.xml":
        assert any(f.severity == "error" and "not well-formed" in f.message and f.line for f in summary.findings)
    if "Missing_PatientName" in path.name:
        assert any("no name" in f.message for f in summary.findings)


def test_onc_defects_are_reported():
    folder = EXAMPLES / "onc-negative/NegativeTesting_CCDS"

    def messages(name: str) -> str:
        return " | ".join(f.message for f in read_summary((folder / name).read_bytes()).findings)

    assert "last name" in messages("NT_Missing_PatientLastName_r11_v2.xml")
    assert "first name" in messages("NT_Bad_PatientFirstName_r11_v2.xml")
    assert "not a known" in messages("NT_Bad_DocCode_r11_v2.xml")
    assert "templateId says Problems" in messages("NT_Bad_ProblemSectionCode_r11_v2.xml")


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><recordTarget><patientRole><patient><name><family>&xxe;</family>
</name></patient></patientRole></recordTarget></ClinicalDocument>"""
LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + b"".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
                     for i in range(1, 10))
          + b']><ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol9;</title></ClinicalDocument>')
DOCTYPE_ONLY = (b'<!DOCTYPE ClinicalDocument SYSTEM "http://example.invalid/cda.dtd">'
                b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>')


@pytest.mark.parametrize("data", [XXE, LAUGHS, DOCTYPE_ONLY, b"\xef\xbb\xbf" + XXE],
                         ids=["xxe", "laughs", "doctype", "bom"])
def test_doctype_and_entities_are_refused(data):
    summary = read_summary(data)
    text = json.dumps(as_json(summary))
    assert any(f.severity == "error" and "DOCTYPE" in f.message for f in summary.findings)
    assert "root:" not in text and "lollol" not in text
    assert not summary.sections and not summary.patient.last_name


def test_over_limit_and_garbage_are_findings():
    big = read_summary(CCD.read_bytes(), max_bytes=10_000)
    assert big.findings[0].severity == "error" and "limit" in big.findings[0].message
    for junk in (b"", b"   ", b"%PDF-1.4\n\x00\x01binary", b"\xff\xfe\x00garbage", b"<a><b></a>"):
        summary = read_summary(junk)
        assert summary.findings and summary.findings[0].severity == "error"
    other = read_summary(b'<ContinuityOfCareRecord xmlns="urn:astm-org:CCR"/>')
    assert "not an HL7 CDA" in other.findings[0].message
    wrong_ns = read_summary(b"<ClinicalDocument/>")
    assert "not an HL7 CDA" in wrong_ns.findings[0].message


def test_as_json_shape():
    data = as_json(read_summary(CCD.read_bytes()))
    json.dumps(data)
    assert set(data["document_type"]) >= {"code", "name"}
    assert set(data["patient"]) >= {"last_name", "first_name", "birth_date", "sex"}
    assert data["patient"]["birth_date"] == "1975-05-01"
    assert all(set(s) >= {"title", "code", "entries"} for s in data["sections"])
    assert all(set(f) >= {"severity", "message", "location"} for f in data["findings"])


# --- XSD ---------------------------------------------------------------------------------------------------


def test_xsd_valid_document_has_no_errors():
    assert validate(CCD, schema_dir=SCHEMA_DIR, schematron=None) == []
    assert validate(CCD.read_bytes(), schema_dir=None, schematron=None) == []


def test_xsd_broken_document_has_errors_with_lines():
    root = etree.parse(str(CCD), _PARSER).getroot()
    root.remove(root.find("v:recordTarget", NS))  # [1..*] in the CDA schema
    root.find("v:code", NS).attrib.pop("code")  # still valid: code is optional in the XSD
    broken = etree.tostring(root)
    findings = validate(broken, schema_dir=SCHEMA_DIR, schematron=None)
    assert findings and all(f.severity == "error" and f.source == "xsd" for f in findings)
    assert all(f.line and f.line > 0 for f in findings)
    assert any("recordTarget" in f.message for f in findings)


def test_xsd_reports_hl7s_own_referral_note_defect():
    findings = validate(REFERRAL, schema_dir=SCHEMA_DIR, schematron=None)
    assert [f.line for f in findings] == [1976]
    assert "participantRole" in findings[0].location


# --- inspect_file and XDM ---------------------------------------------------------------------------------


def test_inspect_file_of_a_document_merges_xsd_findings():
    data = inspect_file(REFERRAL, schema_dir=SCHEMA_DIR)
    assert data["document_type"]["code"] == "57113-1" and data["patient"]["last_name"] == "Betterhalf"
    assert any(f["source"] == "xsd" for f in data["findings"])


def test_inspect_file_non_xml_and_missing(tmp_path):
    junk = tmp_path / "photo.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0 not xml at all")
    data = inspect_file(junk)
    assert data["findings"][0]["severity"] == "error"
    with pytest.raises(FileNotFoundError):
        inspect_file(tmp_path / "nope.xml")
    with pytest.raises(IsADirectoryError):
        inspect_file(tmp_path)


@pytest.mark.parametrize("path", sorted(XDM_DIR.glob("*")) if XDM_DIR.is_dir() else [], ids=lambda p: p.name)
def test_ett_xdm_packages(path):
    data = inspect_file(path)
    json.dumps(data)
    assert data["package"]["format"] == "IHE XDM"
    if path.name.startswith("CCR_"):  # an ASTM CCR, not a CDA
        assert not data["package"]["documents"]
        assert any("no HL7 CDA" in f["message"] for f in data["findings"])
        return
    assert len(data["package"]["documents"]) == 1
    assert data["patient"]["last_name"] and data["patient"]["birth_date"]
    assert data["document_type"]["code"] == "34133-9"
    if path.name == "BadXHTML.zip":
        assert any("INDEX.HTM" in f["message"] and f["source"] == "package" for f in data["findings"])


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


def test_zip_bomb_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(_zip({"IHE_XDM/SUBSET01/DOC0001.XML": b"<" + b" " * (30 * 1024 * 1024)}))
    assert bomb.stat().st_size < 100_000
    data = inspect_file(bomb)
    assert any("zip bomb" in f["message"] for f in data["findings"])
    assert not data["package"]["documents"]
    assert [p.name for p in tmp_path.iterdir()] == ["bomb.zip"]


def test_many_members_are_refused(tmp_path):
    many = tmp_path / "many.zip"
    many.write_bytes(_zip({f"f{i}.xml": b"" for i in range(1001)}))
    assert any("members" in f["message"] for f in inspect_file(many)["findings"])


def test_path_traversal_zip_is_reported_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    evil = work / "evil.zip"
    cda = CCD.read_bytes()
    evil.write_bytes(_zip({"../../escape.xml": cda, "/etc/absolute.xml": cda, "C:/win.xml": cda,
                           "IHE_XDM/SUBSET01/METADATA.XML": b"<r/>"}))
    data = inspect_file(evil)
    unsafe = [f for f in data["findings"] if "unsafe member name" in f["message"]]
    assert len(unsafe) == 3
    assert not data["package"]["documents"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.zip", "work"]


def test_zip_without_metadata_uses_the_first_clinical_document(tmp_path):
    plain = tmp_path / "plain.zip"
    plain.write_bytes(_zip({"notes.xml": b"<notes/>", "ccd.xml": CCD.read_bytes()}))
    data = inspect_file(plain)
    assert [d["path"] for d in data["package"]["documents"]] == ["ccd.xml"]
    assert data["patient"]["first_name"] == "Eve"


def test_broken_zip_is_a_finding(tmp_path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    data = inspect_file(broken)
    assert data["findings"][0]["severity"] == "error"


def test_schematron_findings_when_asked():
    """HL7's 2.1 schematron (slow to compile: run only here) gives the counts ../shared/tools/ccda_check.py gives."""
    sch = SHARED / "standards/cda/schematron/ccda-2.1.sch"
    errors_doc = EXAMPLES / "hl7-fhir-cda-validation/CCDA/CCD-full-errors.xml"
    findings = validate(errors_doc, schema_dir=None, schematron=sch)
    errors = [f for f in findings if f.severity == "error"]
    assert len(errors) == 16 and all(f.source == "schematron" for f in findings)
    assert all(f.location.startswith("/ClinicalDocument") and f.line for f in errors)


def test_inspect_file_over_the_limit(tmp_path):
    big = tmp_path / "big.xml"
    big.write_bytes(CCD.read_bytes())
    data = inspect_file(big, max_bytes=10_000)
    assert data["findings"][0]["severity"] == "error" and "limit" in data["findings"][0]["message"]
    assert f"{big.stat().st_size / 1_048_576:.1f} MB" in data["findings"][0]["message"]
    assert validate(big, schema_dir=SCHEMA_DIR, schematron=None, max_bytes=10_000)[0].severity == "error"
