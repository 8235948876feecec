"""Read a received C-CDA into a structured summary (header, sections, coded entries) plus findings.

Documents come from other systems and often break the rules, so `read_summary` never raises for bad
content: whatever cannot be read becomes a `Finding` and whatever can be read is kept. Parsing goes through
`documents.ccda_view.parse_xml` (no DTDs, no entities, no network) so the display reader and this one refuse
exactly the same inputs.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import asdict, dataclass, field

from lxml import etree

from documents.ccda_view import NS, SSN_ROOT, CcdaViewError, format_name, parse_ts, parse_xml
from documents.ccda_view import _attr, _local, _text  # the display reader's null-safe helpers, shared on purpose

_V3 = f"{{{NS}}}"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
MAX_FINDINGS_PER_KIND = 25  # a 1 MB document with one fault repeated must not bury the rest


# --- what the reader returns ----------------------------------------------------------------------------


@dataclass
class Finding:
    severity: str  # "error" | "warning" | "info"
    message: str
    location: str = ""  # XPath-ish, e.g. /ClinicalDocument/recordTarget/patientRole/patient/name
    line: int | None = None
    source: str = "structure"  # structure | xsd | schematron | package


@dataclass
class DocumentType:
    code: str = ""
    name: str = ""  # the LOINC display name from the document, else our own name for the code
    template: str = ""  # CCD, Referral Note, ... recognised from templateIds ("" when none)


@dataclass
class Patient:
    last_name: str = ""
    first_name: str = ""
    birth_date: str | None = None  # ISO date
    sex: str = ""  # F, M or U like models.patients.Patient.sex (and `referdesk search --json`), else the code
    sex_display: str = ""  # Female, Male, Undifferentiated, or the document's displayName
    mrn: str = ""
    # USCDI v3, from the Social History observations (LOINC 46098-0, 76691-5, 76690-7): the value's display
    # name (else its code), or what its nullFlavor means ("Asked but declined"); "" when the document has none.
    recorded_sex: str = ""
    gender_identity: str = ""
    sexual_orientation: str = ""


@dataclass
class Party:
    name: str = ""
    organization: str = ""


@dataclass
class Entry:
    kind: str  # problem | medication | allergy | immunization | vital | result | procedure | encounter | other
    code: str = ""
    code_system: str = ""
    display: str = ""
    status: str = ""
    date: str = ""  # ISO date or datetime, or "" when none
    value: str = ""
    unit: str = ""


@dataclass
class SectionSummary:
    title: str
    code: str
    template_ids: list[str]
    kind: str = ""  # problems, medications, ... or "" when not recognised
    depth: int = 0  # 0 = top level; nested sections follow their parent
    entries: list[Entry] = field(default_factory=list)


@dataclass
class Summary:
    document_type: DocumentType = field(default_factory=DocumentType)
    cda_version: str = ""  # R1.1 | R2.0 | R2.1 | 3.0 | "" (not a C-CDA header)
    title: str = ""
    effective_time: str = ""
    patient: Patient = field(default_factory=Patient)
    author: Party = field(default_factory=Party)
    custodian: Party = field(default_factory=Party)
    sections: list[SectionSummary] = field(default_factory=list)
    embedded_pdf: dict | None = None  # {"media_type", "size"}: the size only; the bytes are never kept
    findings: list[Finding] = field(default_factory=list)


# --- vocabularies ----------------------------------------------------------------------------------------

_DOC_ROOT = "2.16.840.1.113883.10.20.22.1."
DOCUMENT_TEMPLATES = {
    "2": "CCD", "3": "History and Physical", "4": "Consultation Note", "5": "Diagnostic Imaging Report",
    "6": "Procedure Note", "7": "Operative Note", "8": "Discharge Summary", "9": "Progress Note",
    "10": "Unstructured Document", "13": "Transfer Summary", "14": "Referral Note", "15": "Care Plan",
}
US_REALM_HEADER = _DOC_ROOT + "1"
VERSIONS = {"": "R1.1", "2014-06-09": "R2.0", "2015-08-01": "R2.1", "2024-05-01": "3.0"}

#: LOINC codes of the C-CDA document types (the ones a Transition of Care may carry).
DOCUMENT_CODES = {
    "34133-9": "Summarization of episode note", "57133-1": "Referral note", "11488-4": "Consult note",
    "18842-5": "Discharge summary", "11506-3": "Progress note", "34117-2": "History and physical note",
    "18761-7": "Transfer summary note", "52521-2": "Overall plan of care/advance care directives",
    "18776-5": "Plan of care note", "81957-3": "Care plan", "11504-8": "Surgical operation note",
    "28570-0": "Procedure note", "18748-4": "Diagnostic imaging study", "34109-9": "Note",
    "11490-0": "Physician discharge summary", "81334-5": "Patient summary document",
    "34847-4": "Surgery consult note", "34111-5": "Emergency department note",
}

_SEC = "2.16.840.1.113883.10.20.22.2."
#: section kind -> (LOINC codes, templateId roots, entry kind)
SECTIONS = {
    "problems": (("11450-4",), (_SEC + "5", _SEC + "5.1"), "problem"),
    "medications": (("10160-0",), (_SEC + "1", _SEC + "1.1"), "medication"),
    "allergies": (("48765-2",), (_SEC + "6", _SEC + "6.1"), "allergy"),
    "results": (("30954-2",), (_SEC + "3", _SEC + "3.1"), "result"),
    "vital_signs": (("8716-3",), (_SEC + "4", _SEC + "4.1"), "vital"),
    "immunizations": (("11369-6",), (_SEC + "2", _SEC + "2.1"), "immunization"),
    "procedures": (("47519-4",), (_SEC + "7", _SEC + "7.1"), "procedure"),
    "encounters": (("46240-8",), (_SEC + "22", _SEC + "22.1"), "encounter"),
    "social_history": (("29762-2",), (_SEC + "17",), "other"),
    "reason_for_referral": (("42349-1",), ("1.3.6.1.4.1.19376.1.5.3.1.3.1",), "other"),
    "assessment_and_plan": (("51847-2",), (_SEC + "9",), "other"),
    "assessment": (("51848-0",), (_SEC + "8",), "other"),
    "plan_of_treatment": (("18776-5",), (_SEC + "10",), "other"),
}
_KIND_BY_CODE = {code: kind for kind, (codes, _, _) in SECTIONS.items() for code in codes}
_KIND_BY_TEMPLATE = {root: kind for kind, (_, roots, _) in SECTIONS.items() for root in roots}
_LABEL = {"problems": "Problems", "medications": "Medications", "allergies": "Allergies", "results": "Results",
          "vital_signs": "Vital Signs", "immunizations": "Immunizations", "procedures": "Procedures",
          "encounters": "Encounters", "social_history": "Social History",
          "reason_for_referral": "Reason for Referral", "assessment_and_plan": "Assessment and Plan",
          "assessment": "Assessment", "plan_of_treatment": "Plan of Treatment"}

REQUIRED_SECTIONS = {
    "Referral Note": ("problems", "allergies", "medications", "reason_for_referral"),
    "CCD": ("allergies", "medications", "problems", "results", "social_history", "vital_signs"),
}
_SEX = {"F": "Female", "M": "Male", "UN": "Undifferentiated"}
#: Social History observation code -> the Patient field it fills (USCDI v3 sex, gender identity, orientation)
_SOGI = {"46098-0": "recorded_sex", "76691-5": "gender_identity", "76690-7": "sexual_orientation"}
_NULL_FLAVORS = {"ASKU": "Asked but declined", "UNK": "Unknown", "OTH": "Other", "NI": "No information",
                 "NASK": "Not asked", "MSK": "Masked"}


# --- entry point -----------------------------------------------------------------------------------------


def read_summary(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Summary:
    """Summarise a C-CDA; every content problem is a finding, never an exception."""
    summary = Summary()
    root = parse_root(data, summary.findings, max_bytes=max_bytes)
    if root is not None:
        try:
            _Reader(root, summary).read()
        except Exception as error:  # noqa: BLE001 - a hostile document must not take the caller down
            summary.findings.append(Finding("error", f"the document could not be read completely: {error!r}", "/"))
    return summary


def parse_root(data: bytes, findings: list[Finding], *, max_bytes: int = DEFAULT_MAX_BYTES):
    """The CDA root element, or None with the reason appended to `findings`."""
    if len(data) > max_bytes:
        findings.append(Finding("error", f"the document is {len(data) / 1_048_576:.1f} MB; the limit is "
                                         f"{max_bytes / 1_048_576:.1f} MB, so it was not read", "/"))
        return None
    try:
        root = parse_xml(data)
    except CcdaViewError as error:
        line = re.search(r"at line (\d+)", str(error))
        findings.append(Finding("error", str(error), "/", int(line.group(1)) if line else None))
        return None
    qname = etree.QName(root)
    if qname.localname != "ClinicalDocument" or qname.namespace != NS:
        where = f"in namespace {qname.namespace}" if qname.namespace else "in no namespace"
        findings.append(Finding("error", f"the root element is <{qname.localname}> {where}, not an HL7 CDA "
                                         f"ClinicalDocument ({NS})", f"/{qname.localname}", root.sourceline))
        return None
    return root


def as_json(summary: Summary) -> dict:
    """Plain JSON-ready values (what `referdesk inspect --json` prints)."""
    return asdict(summary)


# --- small helpers ---------------------------------------------------------------------------------------

def path_of(element) -> str:
    """An XPath-ish location for findings: /ClinicalDocument/component/structuredBody/component[3]/section."""
    steps = []
    while element is not None:
        name = _local(element)
        parent = element.getparent()
        if parent is not None:
            same = [c for c in parent if c.tag == element.tag]
            if len(same) > 1:
                name += f"[{same.index(element) + 1}]"
        steps.append(name)
        element = parent
    return "/" + "/".join(reversed(steps))


def _iso(value: str) -> str:
    parsed = parse_ts(value)
    return parsed.isoformat() if parsed is not None else ""


def _template_ids(element) -> list[str]:
    return [f"{t.get('root')}:{t.get('extension')}" if t.get("extension") else (t.get("root") or "")
            for t in element.iterfind(f"{_V3}templateId")]


def _roots(element) -> set[str]:
    return {t.get("root") for t in element.iterfind(f"{_V3}templateId")}


# --- the reader ------------------------------------------------------------------------------------------


class _Reader:
    """One pass over the tree; holds the narrative id index and the per-kind finding counters."""

    def __init__(self, root, summary: Summary) -> None:
        self.root = root
        self.summary = summary
        self.narrative: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def find(self, severity: str, message: str, element=None, kind: str | None = None) -> None:
        kind = kind or message
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.counts[kind] > MAX_FINDINGS_PER_KIND:
            return
        self.summary.findings.append(Finding(severity, message, path_of(element) if element is not None else "/",
                                             element.sourceline if element is not None else None))

    def read(self) -> None:
        root, s = self.root, self.summary
        s.title = _text(root.find(f"{_V3}title"))
        s.effective_time = _iso(_attr(root.find(f"{_V3}effectiveTime"), "value"))
        self.header()
        self.patient()
        self.author()
        s.custodian = Party(organization=_text(root.find(
            f"{_V3}custodian/{_V3}assignedCustodian/{_V3}representedCustodianOrganization/{_V3}name")))
        body = root.find(f"{_V3}component/{_V3}structuredBody")
        if body is not None:
            self.index_narrative(body)
            for section in body.iterfind(f"{_V3}component/{_V3}section"):
                self.section(section, 0)
            self.required_sections()
            self.sogi(body)
        else:
            non_xml = root.find(f"{_V3}component/{_V3}nonXMLBody")
            if non_xml is not None:
                self.non_xml_body(non_xml)
            else:
                self.find("error", "the document has no body (structuredBody or nonXMLBody)", root)
        for kind, count in self.counts.items():
            if count > MAX_FINDINGS_PER_KIND:
                s.findings.append(Finding("info", f"{count - MAX_FINDINGS_PER_KIND} more like: {kind}", "/"))

    # header ---------------------------------------------------------------------------------------------

    def header(self) -> None:
        root, s = self.root, self.summary
        code = root.find(f"{_V3}code")
        s.document_type.code = _attr(code, "code")
        s.document_type.name = _attr(code, "displayName") or DOCUMENT_CODES.get(s.document_type.code, "")
        document_extension = ""
        for template in root.iterfind(f"{_V3}templateId"):
            template_root = template.get("root") or ""
            if template_root == US_REALM_HEADER:
                extension = template.get("extension") or ""
                s.cda_version = VERSIONS.get(extension, f"unknown ({extension})")
            elif template_root.startswith(_DOC_ROOT) and not s.document_type.template:
                s.document_type.template = DOCUMENT_TEMPLATES.get(template_root[len(_DOC_ROOT):], "")
                if s.document_type.template:
                    document_extension = template.get("extension") or ""
        if not s.cda_version:
            self.find("warning", "no US Realm Header templateId (2.16.840.1.113883.10.20.22.1.1)", root)
            if s.document_type.template:  # the document template's version is the next best guess
                s.cda_version = VERSIONS.get(document_extension, f"unknown ({document_extension})")
        if code is None or not s.document_type.code:
            self.find("error", "the document has no type code (ClinicalDocument/code)", code if code is not None
                      else root)
        elif s.document_type.code not in DOCUMENT_CODES:
            self.find("warning", f"document code {s.document_type.code!r} is not a known C-CDA / Transition of "
                                 f"Care document type", code)
        if root.find(f"{_V3}effectiveTime") is not None and not s.effective_time:
            self.find("warning", "the document date (effectiveTime) is missing or not an HL7 date",
                      root.find(f"{_V3}effectiveTime"))

    def patient(self) -> None:
        role = self.root.find(f"{_V3}recordTarget/{_V3}patientRole")
        if role is None:
            self.find("error", "no patient: recordTarget/patientRole is missing", self.root)
            return
        person = role.find(f"{_V3}patient")
        p = self.summary.patient
        p.mrn = next((i.get("extension").strip() for i in role.iterfind(f"{_V3}id")
                      if i.get("extension") and i.get("root") != SSN_ROOT), "")
        if person is None:
            self.find("error", "no patient: recordTarget/patientRole/patient is missing", role)
            return
        name = legal_name(person)
        if name is None:
            self.find("error", "the patient has no name", person)
        else:
            p.last_name, p.first_name = name_parts(name)
            if not p.last_name:
                self.find("error", "the patient's last name (family) is missing or empty", name)
            if not p.first_name:
                self.find("error", "the patient's first name (given) is missing or empty", name)
        birth = person.find(f"{_V3}birthTime")
        parsed = parse_ts(_attr(birth, "value"))
        if isinstance(parsed, dt.datetime):
            parsed = parsed.date()
        p.birth_date = parsed.isoformat() if parsed else None
        if p.birth_date is None:
            self.find("error", "the patient's date of birth (birthTime) is missing or not an HL7 date",
                      birth if birth is not None else person)
        gender = person.find(f"{_V3}administrativeGenderCode")
        code = _attr(gender, "code")
        p.sex = "U" if code == "UN" else code
        p.sex_display = _SEX.get(code) or _attr(gender, "displayName") or code
        if gender is not None and code and code not in _SEX:
            self.find("warning", f"administrative sex code {code!r} is not F, M or UN", gender)

    def author(self) -> None:
        assigned = self.root.find(f"{_V3}author/{_V3}assignedAuthor")
        if assigned is None:
            self.find("error", "the document has no author", self.root)
            return
        person = assigned.find(f"{_V3}assignedPerson")
        name = legal_name(person) if person is not None else None
        text = format_name(name) if name is not None else ""
        if not text:
            device = assigned.find(f"{_V3}assignedAuthoringDevice")
            if device is not None:
                text = " ".join(filter(None, (_text(device.find(f"{_V3}manufacturerModelName")),
                                              _text(device.find(f"{_V3}softwareName")))))
        self.summary.author = Party(name=text,
                                    organization=_text(assigned.find(f"{_V3}representedOrganization/{_V3}name")))

    # body -----------------------------------------------------------------------------------------------

    def index_narrative(self, body) -> None:
        for text in body.iter(f"{_V3}text"):
            for element in text.iter():
                identifier = element.get("ID")
                if identifier:
                    self.narrative[identifier] = _text(element)

    def section(self, element, depth: int) -> None:
        code = _attr(element.find(f"{_V3}code"), "code")
        roots = _roots(element)
        by_template = next((_KIND_BY_TEMPLATE[r] for r in roots if r in _KIND_BY_TEMPLATE), "")
        by_code = _KIND_BY_CODE.get(code, "")
        kind = by_template or by_code
        if by_template and code != SECTIONS[by_template][0][0]:
            self.find("warning", f"section templateId says {_LABEL[by_template]} but its code is {code!r} "
                                 f"(expected {SECTIONS[by_template][0][0]})", element)
        title = _text(element.find(f"{_V3}title"))
        if not title:
            self.find("warning", "section has no title", element, "section has no title")
        summary = SectionSummary(title=title or _attr(element.find(f"{_V3}code"), "displayName"), code=code,
                                 template_ids=_template_ids(element), kind=kind, depth=depth)
        self.summary.sections.append(summary)
        entry_kind = SECTIONS[kind][2] if kind else "other"
        for entry in element.iterfind(f"{_V3}entry"):
            summary.entries.extend(self.entries(entry, entry_kind))
        for child in element.iterfind(f"{_V3}component/{_V3}section"):
            self.section(child, depth + 1)

    def entries(self, entry, kind: str) -> list[Entry]:
        for reference in entry.iter(f"{_V3}reference"):
            value = reference.get("value") or ""
            if value.startswith("#") and value[1:] not in self.narrative:
                self.find("warning", f"entry refers to narrative {value!r}, which the section text does not have",
                          reference, "entry refers to a missing narrative id")
        statement = next((child for child in entry if isinstance(child.tag, str)), None)
        if statement is None:
            return [Entry(kind)]
        if kind in ("result", "vital") and _local(statement) == "organizer":
            observations = [c for c in statement.iterfind(f"{_V3}component/{_V3}observation")]
            if observations:
                return [self.observation(o, kind) for o in observations]
        reader = _ENTRY_READERS.get(kind)
        if reader is not None:
            return [reader(self, statement)]
        if _local(statement) == "observation":  # social history and the like: the value is the point
            return [self.observation(statement, kind)]
        return [self.generic(statement, kind)]

    # entry readers --------------------------------------------------------------------------------------

    def coded(self, code, element=None) -> tuple[str, str, str]:
        """(code, code system, display) with the display falling back to originalText and narrative."""
        display = _attr(code, "displayName")
        if not display and code is not None:
            display = self.original_text(code)
            if not display:
                translation = code.find(f"{_V3}translation")
                display = _attr(translation, "displayName")
        if not display and element is not None:
            display = self.referenced(element.find(f"{_V3}text"))
        return _attr(code, "code"), _attr(code, "codeSystem"), display

    def original_text(self, code) -> str:
        original = code.find(f"{_V3}originalText")
        if original is None:
            return ""
        return self.referenced(original) or _text(original)

    def referenced(self, holder) -> str:
        if holder is None:
            return ""
        reference = holder.find(f"{_V3}reference")
        value = _attr(reference, "value")
        if value.startswith("#"):
            return self.narrative.get(value[1:], "")
        return _text(holder) if reference is None else ""

    def dated(self, element) -> str:
        time = element.find(f"{_V3}effectiveTime")
        if time is None:
            return ""
        return _iso(_attr(time, "value") or _attr(time.find(f"{_V3}low"), "value"))

    def generic(self, statement, kind: str) -> Entry:
        code, system, display = self.coded(statement.find(f"{_V3}code"), statement)
        return Entry(kind, code, system, display, _attr(statement.find(f"{_V3}statusCode"), "code"),
                     self.dated(statement))

    def problem(self, statement) -> Entry:
        observation = statement if _local(statement) == "observation" else statement.find(
            f"{_V3}entryRelationship/{_V3}observation")
        if observation is None:
            return self.generic(statement, "problem")
        code, system, display = self.coded(observation.find(f"{_V3}value"), observation)
        return Entry("problem", code, system, display, _attr(statement.find(f"{_V3}statusCode"), "code"),
                     self.dated(observation) or self.dated(statement))

    def medication(self, statement, kind: str = "medication") -> Entry:
        material = statement.find(f"{_V3}consumable/{_V3}manufacturedProduct/{_V3}manufacturedMaterial")
        if material is None:
            return self.generic(statement, kind)
        code, system, display = self.coded(material.find(f"{_V3}code"), statement)
        display = display or _text(material.find(f"{_V3}name"))
        dose = statement.find(f"{_V3}doseQuantity")
        return Entry(kind, code, system, display, _attr(statement.find(f"{_V3}statusCode"), "code"),
                     self.dated(statement), _attr(dose, "value"), _attr(dose, "unit"))

    def immunization(self, statement) -> Entry:
        return self.medication(statement, "immunization")

    def allergy(self, statement) -> Entry:
        observation = statement if _local(statement) == "observation" else statement.find(
            f"{_V3}entryRelationship/{_V3}observation")
        if observation is None:
            return self.generic(statement, "allergy")
        entity = observation.find(f"{_V3}participant/{_V3}participantRole/{_V3}playingEntity")
        code, system, display = self.coded(entity.find(f"{_V3}code") if entity is not None else None, observation)
        if not code and not display:  # "no known allergies" and the like: the observation value says it
            code, system, display = self.coded(observation.find(f"{_V3}value"), observation)
        return Entry("allergy", code, system, display, _attr(statement.find(f"{_V3}statusCode"), "code"),
                     self.dated(observation) or self.dated(statement))

    def observation(self, observation, kind: str) -> Entry:
        code, system, display = self.coded(observation.find(f"{_V3}code"), observation)
        value, unit = "", ""
        element = observation.find(f"{_V3}value")
        if element is not None:
            if element.get("value") is not None:
                value, unit = _attr(element, "value"), _attr(element, "unit")
            elif element.get("code") or element.get("displayName"):
                value = _attr(element, "displayName") or _attr(element, "code")
            else:
                value = _text(element)
        return Entry(kind, code, system, display, _attr(observation.find(f"{_V3}statusCode"), "code"),
                     self.dated(observation), value, unit)

    def result(self, statement) -> Entry:
        return self.observation(statement, "result") if _local(statement) == "observation" \
            else self.generic(statement, "result")

    def vital(self, statement) -> Entry:
        return self.observation(statement, "vital") if _local(statement) == "observation" \
            else self.generic(statement, "vital")

    def procedure(self, statement) -> Entry:
        return self.generic(statement, "procedure")

    def encounter(self, statement) -> Entry:
        return self.generic(statement, "encounter")

    def sogi(self, body) -> None:
        """Sex, gender identity and sexual orientation onto the patient: the first of each in Social History."""
        p = self.summary.patient
        for section in body.iter(f"{_V3}section"):
            if _KIND_BY_CODE.get(_attr(section.find(f"{_V3}code"), "code")) != "social_history":
                continue
            for observation in section.iterfind(f"{_V3}entry/{_V3}observation"):
                name = _SOGI.get(_attr(observation.find(f"{_V3}code"), "code"))
                value = observation.find(f"{_V3}value")
                if name is None or value is None or getattr(p, name):
                    continue
                null = _attr(value, "nullFlavor")
                words = _NULL_FLAVORS.get(null, null) if null else ""
                setattr(p, name, _attr(value, "displayName") or self.original_text(value) or words
                        or _attr(value, "code"))

    # checks ---------------------------------------------------------------------------------------------

    def required_sections(self) -> None:
        template = self.summary.document_type.template
        present = {section.kind for section in self.summary.sections}
        for kind in REQUIRED_SECTIONS.get(template, ()):
            if kind not in present:
                self.find("error", f"a {template} requires a {_LABEL[kind]} section "
                                   f"({SECTIONS[kind][0][0]}), and it is missing", self.root)
        if template == "Referral Note":
            split = {"assessment", "plan_of_treatment"} <= present
            if "assessment_and_plan" not in present and not split:
                self.find("error", "a Referral Note requires an Assessment and Plan section (51847-2), or "
                                   "Assessment (51848-0) and Plan of Treatment (18776-5)", self.root)
            elif "assessment_and_plan" in present and split:
                self.find("warning", "a Referral Note has Assessment and Plan and also separate Assessment and "
                                     "Plan of Treatment sections: use one or the other", self.root)

    def non_xml_body(self, body) -> None:
        text = body.find(f"{_V3}text")
        if text is None:
            self.find("error", "nonXMLBody has no text", body)
            return
        media = _attr(text, "mediaType") or "text/plain"
        reference = text.find(f"{_V3}reference")
        if reference is not None:
            self.find("info", f"the body is an external file ({_attr(reference, 'value')!r}) that is not part "
                              f"of this document", reference)
            return
        if _attr(text, "representation") != "B64":
            return
        try:
            content = base64.b64decode("".join((text.text or "").split()), validate=True)
        except (binascii.Error, ValueError):
            self.find("error", f"the embedded {media} content is not valid base64", text)
            return
        if media == "application/pdf":
            self.summary.embedded_pdf = {"media_type": media, "size": len(content)}
            if not content.startswith(b"%PDF-"):
                self.find("warning", "the embedded content is labelled application/pdf but is not a PDF", text)
        del content


_ENTRY_READERS = {"problem": _Reader.problem, "medication": _Reader.medication, "allergy": _Reader.allergy,
                  "immunization": _Reader.immunization, "result": _Reader.result, "vital": _Reader.vital,
                  "procedure": _Reader.procedure, "encounter": _Reader.encounter}


# --- names -----------------------------------------------------------------------------------------------


def legal_name(person):
    """The patient's (or person's) legal name element: use L (or no use) first, else the first name."""
    names = person.findall(f"{_V3}name")
    legal = [n for n in names if "L" in (n.get("use") or "L").split() or "C" in (n.get("use") or "").split()]
    return (legal or names or [None])[0]


def name_parts(name) -> tuple[str, str]:
    """(last, first): the first family; the first given that is not a call-me/birth name, else any given."""
    family = name.find(f"{_V3}family")
    givens = name.findall(f"{_V3}given")
    plain = [g for g in givens if g.get("qualifier") not in ("CL", "BR")]
    first = (plain or givens or [None])[0]
    if family is None and not givens:  # a plain-text name: "Eve Betterhalf"
        words = _text(name).split()
        return (words[-1] if words else "", " ".join(words[:-1]))
    return _text(family), _text(first)
