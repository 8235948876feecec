"""IHE XDM packaging: the zip a Direct message carries so a receiving EHR can file the C-CDA with its metadata.

Layout, as the ONC test tool's samples have it: README.TXT, INDEX.HTM (XHTML), and IHE_XDM/SUBSET01/ holding
METADATA.XML (an ebRIM SubmitObjectsRequest with *full* XDS metadata) and DOC0001.XML (the document). The
document entry's hash is SHA-1 and its size in bytes, as XDS defines them. Built with lxml (never by string
concatenation), with fixed zip timestamps, so the same inputs give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from dataclasses import dataclass

from lxml import etree

LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
XHTML = "http://www.w3.org/1999/xhtml"

SUBSET = "IHE_XDM/SUBSET01"
DOCUMENT_NAME = "DOC0001.XML"

# XDS identifiers (IHE ITI TF-3 4.2.5).
DOCUMENT_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_FACILITY_TYPE = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE_SETTING = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
CLASSIFICATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
EXTERNAL_IDENTIFIER = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"

LOINC = "2.16.840.1.113883.6.1"
SNOMED = "2.16.840.1.113883.6.96"
NPI_OID = "2.16.840.1.113883.4.6"
C_CDA_21_FORMAT = ("urn:hl7-org:sdwg:ccda-structuredBody:2.1", "1.3.6.1.4.1.19376.1.2.3",
                   "C-CDA R2.1 structured body")


@dataclass(frozen=True)
class Person:
    last_name: str
    first_name: str
    npi: str = ""


@dataclass(frozen=True)
class XdmDocument:
    """What XDS metadata says about one C-CDA. Codes are (code, coding scheme OID, display name)."""

    content: bytes
    unique_id: str  # the document's id as OID[.extension] — the C-CDA's ClinicalDocument/id
    submission_id: str  # the submission set's unique id (an OID)
    source_id: str  # the sending practice's OID
    created: dt.datetime  # UTC
    patient_id: str  # MRN
    patient_id_root: str  # the assigning authority's OID
    patient_last: str
    patient_first: str
    birth_date: dt.date
    sex: str
    patient_address: tuple[str, str, str, str] = ("", "", "", "")  # street, city, state, ZIP
    author: Person | None = None
    institution: str = ""
    institution_npi: str = ""
    type_code: tuple[str, str, str] = ("57133-1", LOINC, "Referral note")
    class_code: tuple[str, str, str] = ("57133-1", LOINC, "Referral note")
    facility_type: tuple[str, str, str] = ("35971002", SNOMED, "Ambulatory care site")
    practice_setting: tuple[str, str, str] = ("408443003", SNOMED, "General medical practice")
    confidentiality: tuple[str, str, str] = ("N", "2.16.840.1.113883.5.25", "normal")
    intended_recipient: str = ""  # the Direct address the package goes to
    title: str = "Referral Note"
    language: str = "en-US"


def _ts(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


def _cx(doc: XdmDocument) -> str:
    """An HL7 v2 CX patient identifier: id^^^&root&ISO."""
    return f"{doc.patient_id}^^^&{doc.patient_id_root}&ISO"


def _escape_v2(text: str) -> str:
    """HL7 v2 component text: the delimiters ^ & | ~ \\ cannot appear raw."""
    return "".join(" " if ch in "^&|~\\" else ch for ch in text)


class _Rim:
    """Small builders for the ebRIM elements the metadata repeats."""

    def __init__(self) -> None:
        self.ids = 0

    def next_id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}{self.ids}"

    @staticmethod
    def slot(parent: etree._Element, name: str, *values: str) -> None:
        slot = etree.SubElement(parent, f"{{{RIM}}}Slot", name=name)
        value_list = etree.SubElement(slot, f"{{{RIM}}}ValueList")
        for value in values:
            etree.SubElement(value_list, f"{{{RIM}}}Value").text = value

    @staticmethod
    def name(parent: etree._Element, text: str) -> None:
        etree.SubElement(etree.SubElement(parent, f"{{{RIM}}}Name"), f"{{{RIM}}}LocalizedString", value=text)

    def coded(self, parent: etree._Element, scheme: str, target: str, code: tuple[str, str, str]) -> None:
        value, coding_scheme, display = code
        element = etree.SubElement(parent, f"{{{RIM}}}Classification", id=self.next_id("cl"),
                                   objectType=CLASSIFICATION, classificationScheme=scheme,
                                   classifiedObject=target, nodeRepresentation=value)
        self.slot(element, "codingScheme", coding_scheme)
        self.name(element, display)

    def author(self, parent: etree._Element, scheme: str, target: str, doc: XdmDocument) -> None:
        element = etree.SubElement(parent, f"{{{RIM}}}Classification", id=self.next_id("cl"),
                                   objectType=CLASSIFICATION, classificationScheme=scheme,
                                   classifiedObject=target, nodeRepresentation="")
        if doc.author is not None:
            a = doc.author
            self.slot(element, "authorPerson",
                      f"{a.npi}^{_escape_v2(a.last_name)}^{_escape_v2(a.first_name)}^^^^^^&{NPI_OID}&ISO")
        if doc.institution:
            xon = _escape_v2(doc.institution)
            if doc.institution_npi:
                xon += f"^^^^^&{NPI_OID}&ISO^^^^{doc.institution_npi}"
            self.slot(element, "authorInstitution", xon)

    def identifier(self, parent: etree._Element, scheme: str, target: str, value: str, label: str) -> None:
        element = etree.SubElement(parent, f"{{{RIM}}}ExternalIdentifier", id=self.next_id("ei"),
                                   objectType=EXTERNAL_IDENTIFIER, identificationScheme=scheme,
                                   registryObject=target, value=value)
        self.name(element, label)


def metadata_xml(doc: XdmDocument) -> bytes:
    """The SubmitObjectsRequest describing the document (full metadata) and its submission set."""
    rim = _Rim()
    root = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap={None: LCM, "rim": RIM})
    objects = etree.SubElement(root, f"{{{RIM}}}RegistryObjectList")

    entry = etree.SubElement(objects, f"{{{RIM}}}ExtrinsicObject", id="Document01", mimeType="text/xml",
                             objectType=DOCUMENT_ENTRY, status=APPROVED)
    street, city, state, postal = doc.patient_address
    rim.slot(entry, "creationTime", _ts(doc.created))
    rim.slot(entry, "hash", hashlib.sha1(doc.content).hexdigest())
    rim.slot(entry, "languageCode", doc.language)
    rim.slot(entry, "size", str(len(doc.content)))
    rim.slot(entry, "sourcePatientId", _cx(doc))
    rim.slot(entry, "sourcePatientInfo", f"PID-3|{_cx(doc)}",
             f"PID-5|{_escape_v2(doc.patient_last)}^{_escape_v2(doc.patient_first)}^^^",
             f"PID-7|{doc.birth_date:%Y%m%d}", f"PID-8|{doc.sex}",
             f"PID-11|{_escape_v2(street)}^^{_escape_v2(city)}^{state}^{postal}")
    rim.slot(entry, "URI", DOCUMENT_NAME)
    rim.name(entry, doc.title)
    rim.author(entry, DE_AUTHOR, "Document01", doc)
    rim.coded(entry, DE_CLASS_CODE, "Document01", doc.class_code)
    rim.coded(entry, DE_CONFIDENTIALITY, "Document01", doc.confidentiality)
    rim.coded(entry, DE_FORMAT_CODE, "Document01", C_CDA_21_FORMAT)
    rim.coded(entry, DE_FACILITY_TYPE, "Document01", doc.facility_type)
    rim.coded(entry, DE_PRACTICE_SETTING, "Document01", doc.practice_setting)
    rim.coded(entry, DE_TYPE_CODE, "Document01", doc.type_code)
    rim.identifier(entry, DE_PATIENT_ID, "Document01", _cx(doc), "XDSDocumentEntry.patientId")
    rim.identifier(entry, DE_UNIQUE_ID, "Document01", doc.unique_id, "XDSDocumentEntry.uniqueId")

    package = etree.SubElement(objects, f"{{{RIM}}}RegistryPackage", id="SubmissionSet01")
    rim.slot(package, "submissionTime", _ts(doc.created))
    if doc.intended_recipient:
        rim.slot(package, "intendedRecipient", f"||^^Internet^{doc.intended_recipient}")
    rim.name(package, doc.title)
    rim.author(package, SS_AUTHOR, "SubmissionSet01", doc)
    rim.coded(package, SS_CONTENT_TYPE, "SubmissionSet01", doc.class_code)
    rim.identifier(package, SS_PATIENT_ID, "SubmissionSet01", _cx(doc), "XDSSubmissionSet.patientId")
    rim.identifier(package, SS_SOURCE_ID, "SubmissionSet01", doc.source_id, "XDSSubmissionSet.sourceId")
    rim.identifier(package, SS_UNIQUE_ID, "SubmissionSet01", doc.submission_id, "XDSSubmissionSet.uniqueId")
    etree.SubElement(objects, f"{{{RIM}}}Classification", id=rim.next_id("cl"), objectType=CLASSIFICATION,
                     classifiedObject="SubmissionSet01", classificationNode=SS_NODE)
    association = etree.SubElement(objects, f"{{{RIM}}}Association", id="Association01",
                                   associationType=HAS_MEMBER, sourceObject="SubmissionSet01",
                                   targetObject="Document01")
    rim.slot(association, "SubmissionSetStatus", "Original")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def index_htm(doc: XdmDocument) -> bytes:
    html = etree.Element(f"{{{XHTML}}}html", nsmap={None: XHTML})
    head = etree.SubElement(html, f"{{{XHTML}}}head")
    etree.SubElement(head, f"{{{XHTML}}}title").text = doc.title
    body = etree.SubElement(html, f"{{{XHTML}}}body")
    etree.SubElement(body, f"{{{XHTML}}}h1").text = doc.title
    p = etree.SubElement(body, f"{{{XHTML}}}p")
    p.text = f"This XDM package holds one document for {doc.patient_first} {doc.patient_last}: "
    link = etree.SubElement(p, f"{{{XHTML}}}a", href=f"{SUBSET}/{DOCUMENT_NAME}")
    link.text = doc.title
    link.tail = "."
    meta = etree.SubElement(body, f"{{{XHTML}}}p")
    meta.text = "Its metadata: "
    etree.SubElement(meta, f"{{{XHTML}}}a", href=f"{SUBSET}/METADATA.XML").text = "METADATA.XML"
    return etree.tostring(html, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def readme_txt(doc: XdmDocument) -> bytes:
    sender = doc.institution or "the sending practice"
    return (
        f"This IHE XDM package was made by referdesk for {sender}.\r\n\r\n"
        "README.TXT            this file\r\n"
        "INDEX.HTM             a page linking to the content\r\n"
        f"{SUBSET}/\r\n"
        f"   {DOCUMENT_NAME}        the C-CDA document ({doc.title})\r\n"
        "   METADATA.XML       its XDS metadata\r\n"
    ).encode("ascii", "replace")


def build_xdm(doc: XdmDocument) -> bytes:
    """The zip, with folder entries and a fixed timestamp (the creation time) on every member."""
    stamp = doc.created.timetuple()[:6]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        def add(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED if data else zipfile.ZIP_STORED
            info.external_attr = (0o40755 << 16) | 0x10 if name.endswith("/") else 0o644 << 16
            package.writestr(info, data)

        add("README.TXT", readme_txt(doc))
        add("INDEX.HTM", index_htm(doc))
        add("IHE_XDM/", b"")
        add(f"{SUBSET}/", b"")
        add(f"{SUBSET}/METADATA.XML", metadata_xml(doc))
        add(f"{SUBSET}/{DOCUMENT_NAME}", doc.content)
    return out.getvalue()
