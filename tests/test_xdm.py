"""IHE XDM packages: the layout the ONC test tool's samples have, full metadata that matches the document."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from documents.xdm import (DE_AUTHOR, DE_CLASS_CODE, DE_CONFIDENTIALITY, DE_FACILITY_TYPE, DE_FORMAT_CODE,
                           DE_PATIENT_ID, DE_PRACTICE_SETTING, DE_TYPE_CODE, DE_UNIQUE_ID, RIM, Person,
                           XdmDocument, build_xdm)

ETT_XDM = Path(__file__).resolve().parents[2] / "shared" / "standards" / "direct" / "ett" / "xdm"
NS = {"rim": RIM}
CDA = b'<?xml version="1.0"?><ClinicalDocument xmlns="urn:hl7-org:v3"><title>Referral</title></ClinicalDocument>'


def document(**changes) -> XdmDocument:
    values = dict(
        content=CDA, unique_id="2.16.840.1.113883.3.9999.1.42", submission_id="2.16.840.1.113883.3.9999.2.42",
        source_id="2.16.840.1.113883.3.9999", created=dt.datetime(2026, 11, 2, 10, 0, 0), patient_id="1000042",
        patient_id_root="2.16.840.1.113883.3.9999.3", patient_last="O'Brien", patient_first="Zoë",
        birth_date=dt.date(1983, 11, 30), sex="F", patient_address=("12 Oak St", "Boise", "ID", "83702"),
        author=Person("Park", "Helen", "1000000004"), institution="Riverbend Family Medicine",
        institution_npi="1928374655", intended_recipient="cardio@direct.valley-cardio.example",
    )
    values.update(changes)
    return XdmDocument(**values)


def unpack(data: bytes) -> zipfile.ZipFile:
    package = zipfile.ZipFile(io.BytesIO(data))
    assert package.testzip() is None
    return package


def slots(element) -> dict[str, list[str]]:
    return {s.get("name"): [v.text for v in s.findall("rim:ValueList/rim:Value", NS)]
            for s in element.findall("rim:Slot", NS)}


def test_layout_matches_the_test_tool_samples():
    package = unpack(build_xdm(document()))
    assert package.namelist() == ["README.TXT", "INDEX.HTM", "IHE_XDM/", "IHE_XDM/SUBSET01/",
                                  "IHE_XDM/SUBSET01/METADATA.XML", "IHE_XDM/SUBSET01/DOC0001.XML"]
    assert package.read("IHE_XDM/SUBSET01/DOC0001.XML") == CDA
    index = etree.fromstring(package.read("INDEX.HTM"))
    assert index.tag == "{http://www.w3.org/1999/xhtml}html"
    assert {a.get("href") for a in index.iter("{http://www.w3.org/1999/xhtml}a")} == {
        "IHE_XDM/SUBSET01/DOC0001.XML", "IHE_XDM/SUBSET01/METADATA.XML"}
    assert b"DOC0001.XML" in package.read("README.TXT")


def test_full_metadata_describes_the_document_it_carries():
    doc = document()
    metadata = etree.fromstring(unpack(build_xdm(doc)).read("IHE_XDM/SUBSET01/METADATA.XML"))
    (entry,) = metadata.findall(".//rim:ExtrinsicObject", NS)
    values = slots(entry)
    assert values["hash"] == [hashlib.sha1(CDA).hexdigest()]
    assert values["size"] == [str(len(CDA))]
    assert values["creationTime"] == ["20261102100000"]
    assert values["URI"] == ["DOC0001.XML"]
    assert values["sourcePatientId"] == ["1000042^^^&2.16.840.1.113883.3.9999.3&ISO"]
    assert "PID-5|O'Brien^Zoë^^^" in values["sourcePatientInfo"]
    assert "PID-7|19831130" in values["sourcePatientInfo"] and "PID-8|F" in values["sourcePatientInfo"]
    schemes = {c.get("classificationScheme"): c for c in entry.findall("rim:Classification", NS)}
    assert set(schemes) == {DE_AUTHOR, DE_CLASS_CODE, DE_CONFIDENTIALITY, DE_FORMAT_CODE, DE_FACILITY_TYPE,
                            DE_PRACTICE_SETTING, DE_TYPE_CODE}
    assert schemes[DE_TYPE_CODE].get("nodeRepresentation") == "57133-1"
    assert schemes[DE_FORMAT_CODE].get("nodeRepresentation") == "urn:hl7-org:sdwg:ccda-structuredBody:2.1"
    author = slots(schemes[DE_AUTHOR])
    assert author["authorPerson"] == ["1000000004^Park^Helen^^^^^^&2.16.840.1.113883.4.6&ISO"]
    assert author["authorInstitution"][0].startswith("Riverbend Family Medicine^")
    identifiers = {i.get("identificationScheme"): i.get("value") for i in entry.findall("rim:ExternalIdentifier", NS)}
    assert identifiers == {DE_PATIENT_ID: "1000042^^^&2.16.840.1.113883.3.9999.3&ISO",
                           DE_UNIQUE_ID: "2.16.840.1.113883.3.9999.1.42"}
    (package,) = metadata.findall(".//rim:RegistryPackage", NS)
    assert slots(package)["intendedRecipient"] == ["||^^Internet^cardio@direct.valley-cardio.example"]
    (association,) = metadata.findall(".//rim:Association", NS)
    assert (association.get("sourceObject"), association.get("targetObject")) == ("SubmissionSet01", "Document01")


def test_v2_delimiters_in_names_cannot_break_the_fields():
    metadata = etree.fromstring(unpack(build_xdm(document(patient_last="Smith^Jones&Co|<x>"))).read(
        "IHE_XDM/SUBSET01/METADATA.XML"))
    info = slots(metadata.find(".//rim:ExtrinsicObject", NS))["sourcePatientInfo"]
    assert "PID-5|Smith Jones Co <x>^Zoë^^^" in info


def test_same_inputs_same_bytes_and_a_new_document_changes_hash_and_size():
    assert build_xdm(document()) == build_xdm(document())
    longer = CDA.replace(b"Referral", b"Referral note, revised")
    values = slots(etree.fromstring(unpack(build_xdm(document(content=longer))).read(
        "IHE_XDM/SUBSET01/METADATA.XML")).find(".//rim:ExtrinsicObject", NS))
    assert values["size"] == [str(len(longer))] and values["hash"] == [hashlib.sha1(longer).hexdigest()]


@pytest.mark.parametrize("sample", ["TOC_XDM_FULL_METADATA.ZIP", "XDM_FULL.ZIP"])
def test_our_document_entry_has_every_slot_and_classification_the_full_samples_have(sample):
    theirs = zipfile.ZipFile(ETT_XDM / sample)
    name = next(n for n in theirs.namelist() if n.upper().endswith("METADATA.XML"))
    their_entry = etree.fromstring(theirs.read(name)).find(".//rim:ExtrinsicObject", NS)
    our_entry = etree.fromstring(unpack(build_xdm(document())).read("IHE_XDM/SUBSET01/METADATA.XML")).find(
        ".//rim:ExtrinsicObject", NS)
    assert len(slots(their_entry)) >= 6
    # repositoryUniqueId belongs to XDS repositories, not to XDM media.
    assert set(slots(their_entry)) - {"repositoryUniqueId"} <= set(slots(our_entry))
    their_schemes = {c.get("classificationScheme") for c in their_entry.findall("rim:Classification", NS)}
    assert their_schemes <= {c.get("classificationScheme") for c in our_entry.findall("rim:Classification", NS)}


def test_a_referral_package_is_read_back_by_our_own_inspector(seeded):
    """The XDM built for a Direct referral opens in `referdesk inspect`: the C-CDA inside is summarised and the
    metadata agrees with it."""
    from documents.ccda_validate import inspect_zip
    from documents.packet import build_attachments
    from models.patients import Note
    from models.referring import ReferralDraft

    note = Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).first()
    draft = ReferralDraft(patient_id=note.patient_id, note_id=note.id, channel="direct",
                          recipient="cardio@direct.valley-cardio.example", reason="Chest pain")
    attachments = {a.kind: a for a in build_attachments(draft)}
    assert set(attachments) == {"note", "ccda", "xdm"}
    package = unpack(attachments["xdm"].content)
    assert package.read("IHE_XDM/SUBSET01/DOC0001.XML") == attachments["ccda"].content
    report = inspect_zip(attachments["xdm"].content)
    assert report["patient"]["last_name"] == note.patient.last_name
    assert report["document_type"]["code"] == "57133-1"
    assert not [f for f in report["findings"] if f["severity"] == "error"]
    entry = etree.fromstring(package.read("IHE_XDM/SUBSET01/METADATA.XML")).find(".//rim:ExtrinsicObject", NS)
    ccda_id = etree.fromstring(attachments["ccda"].content).find("{urn:hl7-org:v3}id")
    unique = {i.get("identificationScheme"): i.get("value") for i in entry.findall("rim:ExternalIdentifier", NS)}
    assert unique[DE_UNIQUE_ID].endswith(ccda_id.get("extension") or "") and unique[DE_UNIQUE_ID].startswith("2.")
    efax = ReferralDraft(patient_id=note.patient_id, note_id=note.id, channel="efax", recipient="2175550142")
    assert "xdm" not in {a.kind for a in build_attachments(efax)}
