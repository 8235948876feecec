"""The Consultation Note: the consultant's report back to the referring practice (C-CDA R2.1, templateId
2.16.840.1.113883.10.20.22.1.4:2015-08-01, LOINC 11488-4), asked for by a "receiving" draft with
`extra["document"] == "consultation"`. Every variant is XSD- and schematron-clean (one ccda_check.py run), the
header and required sections are there, the consultant's note is mapped into its sections, and the reader reads
it back as a consult note for the right patient."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from documents.ccda import build_ccda, document_title
from documents.ccda import header
from documents.ccda.sections import WITHHELD
from documents.ccda_reader import read_summary
from documents.packet import build_attachments
from models.clinical import CLINICAL_MODELS
from models.patients import Encounter, Note, Patient
from models.referring import SUMMARY_OF_CARE, ReferralDraft

CHECKER = Path(__file__).resolve().parents[2] / "shared" / "tools" / "ccda_check.py"
NS = {"v3": "urn:hl7-org:v3"}
ITEMS = tuple(key for key, _ in SUMMARY_OF_CARE)
US_REALM, CONSULTATION = "2.16.840.1.113883.10.20.22.1.1", "2.16.840.1.113883.10.20.22.1.4"
ORDER_ID = "2.16.840.1.113883.19.5^REF-2026-0042"
HPI, PHYSICAL_EXAM, REASON_FOR_REFERRAL, ASSESSMENT_AND_PLAN = "10164-2", "29545-1", "42349-1", "51847-2"
CUSTOM_NOTE = [
    ("Subjective", "Seen at the request of Dr. Primary for chest pain on exertion & dyspnea <2 weeks>.\n"
                   "No syncope."),
    ("Review of Systems", "Negative except as in HPI."),
    ("Objective", "BP 132/84. Regular rhythm, no murmur."),
    ("Assessment and Plan", "Stable angina, likely.\nExercise stress test; start aspirin 81 mg."),
]


def signed_note(patient_id: int) -> Note | None:
    return (Note.select().where(Note.patient == patient_id, Note.signed_at.is_null(False))
            .order_by(Note.written_at.desc()).first())


def consult_draft(patient: Patient, excluded: tuple[str, ...] = (), order_id: str | None = ORDER_ID,
                  **changes) -> ReferralDraft:
    note = signed_note(patient.id)
    extra = {"document": "consultation"}
    if order_id is not None:
        extra["order_id"] = order_id
    values = dict(patient_id=patient.id, note_id=note.id if note else None, channel="direct",
                  direction="receiving", excluded_sections=excluded, recipient="pcp@direct.riverbend.example",
                  recipient_name="Dr. Pat Primary", reason="Chest pain on exertion", extra=extra)
    values.update(changes)
    return ReferralDraft(**values)


def pick_patients() -> dict[str, Patient]:
    """Seeded patients with a signed note: one with a full chart, one whose note is rewritten in SOAP style
    (Subjective / Objective / Assessment and Plan), and one emptied (no note, no encounter, no rows)."""
    with_note = [p for p in Patient.select().order_by(Patient.id).limit(80) if signed_note(p.id)]
    full = next(p for p in with_note
                if p.allergies.count() and p.problems.count() and p.medications.count() and signed_note(p.id).encounter)
    soap = next(p for p in with_note if p.id != full.id)
    note = signed_note(soap.id)
    note.sections = CUSTOM_NOTE
    note.save()
    empty = next(p for p in with_note if p.id not in {full.id, soap.id})
    for model in CLINICAL_MODELS:
        model.delete().where(model.patient == empty.id).execute()
    Note.delete().where(Note.patient == empty.id).execute()
    Encounter.delete().where(Encounter.patient == empty.id).execute()
    return {"full": full, "soap": soap, "empty": empty}


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True))


def section(doc, loinc: str):
    found = doc.xpath(f"v3:component/v3:structuredBody/v3:component/v3:section[v3:code/@code='{loinc}']",
                      namespaces=NS)
    assert len(found) <= 1, f"{loinc} twice"
    return found[0] if found else None


def words(node) -> str:
    return " ".join("".join(node.itertext()).split())


@pytest.fixture
def patients(seeded):
    return pick_patients()


# --- validation: every variant, one checker run ----------------------------------------------------------

VARIANTS = {
    "full": ("full", {}),
    "no-order-id": ("full", {"order_id": None}),
    "all-unticked": ("full", {"excluded": ITEMS}),
    "soap-note": ("soap", {}),
    "empty-no-note": ("empty", {"note_id": None}),
}


def test_every_variant_passes_xsd_and_both_schematrons(patients, tmp_path):
    assert CHECKER.exists(), f"{CHECKER} is missing: ../shared must sit beside the checkout"
    files = {}
    for name, (who, changes) in VARIANTS.items():
        path = tmp_path / f"consultation-{name}.xml"
        path.write_bytes(build_ccda(consult_draft(patients[who], **changes)))
        files[str(path)] = name
    run = subprocess.run([sys.executable, str(CHECKER), *files, "--json"], capture_output=True, text=True,
                         timeout=600)
    results = {files[item["file"]]: item for item in map(json.loads, filter(
        lambda line: line.startswith("{"), run.stdout.splitlines()))}
    assert set(results) == set(VARIANTS), run.stderr[-2000:]
    for name, result in results.items():
        assert "not_well_formed" not in result, name
        assert result["xsd_errors"] == [], name
        assert result["sch2.1_errors"] == [], name
        assert result["sch3.0_errors"] == [], name
        assert result["sch2.1_warnings"] <= 45, name
        assert result["sch3.0_warnings"] <= 40, name


# --- the header ------------------------------------------------------------------------------------------

def test_the_header_is_a_consultation_note_for_the_patient(patients):
    patient = patients["full"]
    draft = consult_draft(patient)
    doc = parse(build_ccda(draft))
    assert [(t.get("root"), t.get("extension")) for t in doc.findall("v3:templateId", NS)] == [
        (US_REALM, "2015-08-01"), (CONSULTATION, "2015-08-01")]
    kind = doc.find("v3:code", NS)
    assert (kind.get("code"), kind.get("codeSystem"), kind.get("displayName")) == (
        "11488-4", "2.16.840.1.113883.6.1", "Consult note")
    assert doc.findtext("v3:title", namespaces=NS) == "Consultation Note"
    role = doc.find("v3:recordTarget/v3:patientRole", NS)
    assert role.find("v3:id", NS).get("extension") == patient.mrn
    assert role.findtext("v3:patient/v3:name/v3:family", namespaces=NS) == patient.last_name
    assert role.find("v3:patient/v3:birthTime", NS).get("value") == patient.birth_date.strftime("%Y%m%d")
    # the consultant (who signed the note) is the author and the call-back contact; the referrer the recipient
    note = signed_note(patient.id)
    consultant = note.signed_by or note.author
    assert doc.find("v3:author/v3:assignedAuthor/v3:id", NS).get("extension") == consultant.npi
    callback = doc.find("v3:participant[@typeCode='CALLBCK']/v3:associatedEntity", NS)
    assert callback.get("classCode") == "ASSIGNED" and callback.find("v3:associatedPerson/v3:name", NS) is not None
    (recipient,) = doc.findall("v3:informationRecipient", NS)
    assert recipient.findtext(".//v3:name", namespaces=NS) == "Dr. Pat Primary"


def test_the_encompassing_encounter_is_the_consultation_visit(patients):
    patient = patients["full"]
    note = signed_note(patient.id)
    encounter = note.encounter
    doc = parse(build_ccda(consult_draft(patient)))
    (component_of,) = doc.findall("v3:componentOf", NS)
    visit = component_of.find("v3:encompassingEncounter", NS)
    assert visit.find("v3:id", NS).get("extension") == f"encounter-{encounter.id}"
    assert visit.find("v3:effectiveTime/v3:low", NS).get("value").startswith(encounter.start.strftime("%Y%m%d"))
    responsible = visit.find("v3:responsibleParty/v3:assignedEntity", NS)
    assert responsible.find("v3:id", NS).get("extension") == encounter.provider.npi
    assert responsible.findtext("v3:assignedPerson/v3:name/v3:family", namespaces=NS) == encounter.provider.last_name
    facility = visit.find("v3:location/v3:healthCareFacility", NS)
    assert facility.find("v3:id", NS) is not None and facility.findtext("v3:location/v3:name", namespaces=NS)


def test_without_a_note_or_encounter_the_visit_is_still_there_with_an_unknown_id(patients):
    doc = parse(build_ccda(consult_draft(patients["empty"], note_id=None)))
    visit = doc.find("v3:componentOf/v3:encompassingEncounter", NS)
    assert visit.find("v3:id", NS).get("nullFlavor") == "NI"
    assert visit.find("v3:effectiveTime/v3:low", NS).get("value").startswith("20261102")
    assert visit.find("v3:responsibleParty/v3:assignedEntity", NS) is not None
    for loinc in (HPI, PHYSICAL_EXAM, ASSESSMENT_AND_PLAN, "11450-4", "10160-0", "30954-2"):
        empty = section(doc, loinc)
        assert empty.get("nullFlavor") == "NI" and empty.find("v3:entry", NS) is None
        assert empty.findtext("v3:text/v3:paragraph", namespaces=NS).startswith("No ")


@pytest.mark.parametrize("given, root, extension", [
    (ORDER_ID, "2.16.840.1.113883.19.5", "REF-2026-0042"),
    ("2.16.840.1.113883.19.5.99", "2.16.840.1.113883.19.5.99", None),
    ("3f2504e0-4f89-11d3-9a0c-0305e82c3301", "3F2504E0-4F89-11D3-9A0C-0305E82C3301", None),
    ("REF 42 from Riverbend", "local", "REF 42 from Riverbend"),
])
def test_the_referral_it_answers_is_the_order_it_fulfils(patients, given, root, extension):
    doc = parse(build_ccda(consult_draft(patients["full"], order_id=given)))
    (fulfils,) = doc.findall("v3:inFulfillmentOf", NS)
    order = fulfils.find("v3:order", NS)
    assert (order.get("classCode"), order.get("moodCode")) == ("ACT", "RQO")
    ident = order.find("v3:id", NS)
    if root == "local":  # no assigning authority given: kept under our own root
        assert ident.get("root").startswith("2.25.") and ident.get("root").endswith(".4")
    else:
        assert ident.get("root") == root
    assert ident.get("extension") == extension


def test_an_unknown_order_is_a_null_flavored_id(patients):
    doc = parse(build_ccda(consult_draft(patients["full"], order_id=None)))
    assert doc.find("v3:inFulfillmentOf/v3:order/v3:id", NS).attrib == {"nullFlavor": "NI"}


# --- the body --------------------------------------------------------------------------------------------

def test_the_required_sections_are_there_with_the_consultants_note(patients):
    patient = patients["full"]
    note = signed_note(patient.id)
    parts = dict(note.sections)
    doc = parse(build_ccda(consult_draft(patient)))
    codes = doc.xpath("v3:component/v3:structuredBody/v3:component/v3:section/v3:code/@code", namespaces=NS)
    assert ASSESSMENT_AND_PLAN in codes or {"51848-0", "18776-5"} <= set(codes)
    assert "18776-5" not in codes  # never Assessment and Plan and Plan of Treatment together
    assert HPI in codes and PHYSICAL_EXAM in codes
    assert REASON_FOR_REFERRAL in codes or "29299-5" in codes
    for loinc in ("11450-4", "48765-2", "10160-0", "30954-2"):  # problems, allergies (SHALL), meds, results
        assert loinc in codes
    assert section(doc, REASON_FOR_REFERRAL).findtext("v3:text/v3:paragraph", namespaces=NS) == \
        "Chest pain on exertion"
    assert words(section(doc, HPI).find("v3:text", NS)) == parts["History of Present Illness"]
    assert words(section(doc, PHYSICAL_EXAM).find("v3:text", NS)) == parts["Physical Exam"]
    assert words(section(doc, "10154-3").find("v3:text", NS)) == parts["Chief Complaint"]
    plan = section(doc, ASSESSMENT_AND_PLAN)
    said = words(plan.find("v3:text", NS))
    assert f"Assessment: {parts['Assessment']}" in said and f"Plan: {parts['Plan']}" in said
    # the chart's planned items, as in the Referral Note: Planned Encounters referencing their table rows
    planned = plan.xpath("v3:entry/v3:encounter[v3:templateId/@root='2.16.840.1.113883.10.20.22.4.40']",
                         namespaces=NS)
    ids = set(plan.xpath("v3:text//@ID", namespaces=NS))
    assert planned and all(e.find("v3:text/v3:reference", NS).get("value")[1:] in ids for e in planned)
    templates = {(t.get("root"), t.get("extension")) for t in doc.iterfind(".//v3:section/v3:templateId", NS)}
    assert {("1.3.6.1.4.1.19376.1.5.3.1.3.4", None), ("2.16.840.1.113883.10.20.2.10", "2015-08-01"),
            ("2.16.840.1.113883.10.20.22.2.9", "2014-06-09"),
            ("1.3.6.1.4.1.19376.1.5.3.1.3.1", "2014-06-09")} <= templates
    # the signed note itself travels as the Notes section, as in the other documents
    assert doc.xpath("//v3:section[v3:templateId/@root='2.16.840.1.113883.10.20.22.2.65']", namespaces=NS)


def test_a_soap_note_maps_into_the_sections_and_is_escaped_by_the_serializer(patients):
    doc = parse(build_ccda(consult_draft(patients["soap"])))
    hpi = section(doc, HPI)
    assert [p.text for p in hpi.findall("v3:text/v3:paragraph", NS)] == [
        "Seen at the request of Dr. Primary for chest pain on exertion & dyspnea <2 weeks>.", "No syncope."]
    assert words(section(doc, PHYSICAL_EXAM).find("v3:text", NS)) == "BP 132/84. Regular rhythm, no murmur."
    assert words(section(doc, "10187-3").find("v3:text", NS)) == "Negative except as in HPI."
    plan = words(section(doc, ASSESSMENT_AND_PLAN).find("v3:text", NS))
    assert plan.startswith("Assessment and Plan: Stable angina, likely. Exercise stress test; start aspirin 81 mg.")
    assert section(doc, "10154-3") is None  # no chief complaint in this note: optional, left out


def test_unticked_items_are_withheld_or_left_out_and_the_note_sections_stay(patients):
    doc = parse(build_ccda(consult_draft(patients["full"], excluded=ITEMS)))
    for loinc in (REASON_FOR_REFERRAL, ASSESSMENT_AND_PLAN, "11450-4", "48765-2", "10160-0", "30954-2"):
        withheld = section(doc, loinc)
        assert withheld.get("nullFlavor") == "NI" and withheld.find("v3:entry", NS) is None
        assert withheld.findtext("v3:text/v3:paragraph", namespaces=NS) == WITHHELD
    for loinc in ("11369-6", "8716-3", "29762-2", "85847-2"):  # optional: left out
        assert section(doc, loinc) is None
    for loinc in (HPI, PHYSICAL_EXAM):  # the consultant's own findings are the report
        assert section(doc, loinc).get("nullFlavor") is None


# --- reading it back -------------------------------------------------------------------------------------

def test_the_reader_reads_it_back_as_a_consult_note_for_the_patient(patients):
    patient = patients["full"]
    summary = read_summary(build_ccda(consult_draft(patient)))
    assert summary.document_type.code == "11488-4"
    assert summary.document_type.template == "Consultation Note"
    assert summary.document_type.name == "Consult note"
    assert summary.cda_version == "R2.1"
    assert summary.title == "Consultation Note"
    read = summary.patient
    assert (read.last_name, read.first_name, read.birth_date, read.mrn) == (
        patient.last_name, patient.first_name, patient.birth_date.isoformat(), patient.mrn)
    assert not [f for f in summary.findings if f.severity == "error"]
    kinds = {s.kind for s in summary.sections}
    assert {"reason_for_referral", "assessment_and_plan", "problems", "allergies", "medications"} <= kinds
    assert {s.code for s in summary.sections} >= {HPI, PHYSICAL_EXAM}


# --- choosing it, and titles -----------------------------------------------------------------------------

def test_only_a_receiving_draft_that_asks_for_it_gets_a_consultation_note(patients):
    patient = patients["full"]
    consult = consult_draft(patient)
    ccd = consult_draft(patient, extra={})
    referral = consult_draft(patient, direction="transferring")  # a referral is never a consultation report
    assert [parse(build_ccda(d)).find("v3:code", NS).get("code") for d in (consult, ccd, referral)] == [
        "11488-4", "34133-9", "57133-1"]
    assert [document_title(d) for d in (consult, ccd, referral)] == [
        "Consultation Note", "Continuity of Care Document", "Referral Note"]
    # header.document_title takes a draft or, as documents/pdf/packet.py passes it, a bare direction
    assert header.document_title(consult) == "Consultation Note"
    assert header.document_title("receiving") == "Continuity of Care Document"
    assert header.document_title("transferring") == "Referral Note"
    assert header.document_code(consult) == ("11488-4", "Consult note")
    assert header.document_code(ccd) == ("34133-9", "Summarization of episode note")
    # not the CCD's id for the same note at the same moment
    assert parse(build_ccda(consult)).find("v3:id", NS).attrib != parse(build_ccda(ccd)).find("v3:id", NS).attrib


def test_the_packet_files_it_as_a_consultation_note(patients):
    attachments = build_attachments(consult_draft(patients["full"], include_note=False))
    assert [(a.kind, a.title) for a in attachments] == [("ccda", "Consultation Note"),
                                                        ("xdm", "Consultation Note (XDM package)")]
    assert parse(attachments[0].content).findtext("v3:title", namespaces=NS) == "Consultation Note"
