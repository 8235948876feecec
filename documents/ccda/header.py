"""The US Realm Header (C-CDA R2.1, 2015-08-01) and the Referral Note / CCD / Consultation Note document-level
parts."""

from __future__ import annotations

import re

from lxml import etree

from documents.ccda.context import Context, document_kind
from documents.ccda.xml import (
    CDC_RACE, CPT, LOINC, NPI_ROOT, NSMAP, NUCC, V3, address, code, el, identifier, ivl, person_name,
    telecom, template, time_el,
)
from models.clinical import CareTeamMember
from models.practice import Provider
from models.referring import ReferralDraft

DOCUMENTS = {
    # document kind (the direction, or "consultation"): (templateId, LOINC, display, title)
    "transferring": ("2.16.840.1.113883.10.20.22.1.14", "57133-1", "Referral note", "Referral Note"),
    "receiving": ("2.16.840.1.113883.10.20.22.1.2", "34133-9", "Summarization of episode note",
                  "Continuity of Care Document"),
    "consultation": ("2.16.840.1.113883.10.20.22.1.4", "11488-4", "Consult note", "Consultation Note"),
}
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SEX = {"F": "Female", "M": "Male", "U": "Unknown", "UN": "Undifferentiated"}
LANGUAGES = {"en": "en-US", "es": "es-US"}


def document_title(draft: ReferralDraft | str) -> str:
    """The document's title, for a draft (which may ask for a Consultation Note) or a bare direction / kind."""
    return DOCUMENTS[document_kind(draft)][3]


def document_code(draft: ReferralDraft | str) -> tuple[str, str]:
    """The document's LOINC type code and display name, e.g. ("11488-4", "Consult note")."""
    _, loinc, display, _ = DOCUMENTS[document_kind(draft)]
    return loinc, display


def _doc_id(parent, ctx: Context, tag: str = "id"):
    if UUID_RE.match(ctx.document_id):
        return identifier(parent, ctx.document_id.upper(), tag=tag)
    return identifier(parent, ctx.root + ".1", ctx.document_id, tag=tag)


def _provider_entity(parent, provider: Provider, *, with_code: bool = True):
    """assignedAuthor / assignedEntity content: NPI, specialty, address, phone, name."""
    identifier(parent, NPI_ROOT, provider.npi)
    if with_code and provider.specialty_code:
        code(parent, "code", provider.specialty_code, NUCC, provider.specialty or None)
    address(parent, provider.address_line, provider.city, provider.state, provider.postal_code)
    telecom(parent, provider.phone, use="WP", required=True)


def _person(parent, tag: str, provider: Provider):
    person_name(el(parent, tag), provider.first_name, provider.last_name, provider.credentials)


def _organization(parent, tag: str, ctx: Context):
    org = el(parent, tag)
    identifier(org, NPI_ROOT, ctx.practice.npi)
    el(org, "name", text=ctx.practice.name)
    telecom(org, ctx.practice.phone, use="WP", required=True)
    p = ctx.practice
    address(org, p.address_line, p.city, p.state, p.postal_code)
    return org


def build_header(ctx: Context) -> etree._Element:
    doc_template, loinc, display, title = DOCUMENTS[ctx.kind]
    root = etree.Element(f"{{{V3}}}ClinicalDocument", nsmap=NSMAP)
    el(root, "realmCode", code="US")
    el(root, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    template(root, "2.16.840.1.113883.10.20.22.1.1", "2015-08-01")
    template(root, doc_template, "2015-08-01")
    _doc_id(root, ctx)
    code(root, "code", loinc, LOINC, display)
    el(root, "title", text=title)
    time_el(root, "effectiveTime", ctx.now)
    el(root, "confidentialityCode", code="N", codeSystem="2.16.840.1.113883.5.25", displayName="normal")
    el(root, "languageCode", code="en-US")
    _doc_id(root, ctx, tag="setId")
    el(root, "versionNumber", value="1")
    _record_target(root, ctx)
    _author(root, ctx)
    _custodian(root, ctx)
    _information_recipient(root, ctx)
    _legal_authenticator(root, ctx)
    _callback(root, ctx)
    if ctx.consultation:
        _in_fulfillment_of(root, ctx)
    _documentation_of(root, ctx)
    if ctx.consultation:
        _consultation_encounter(root, ctx)
    else:
        _component_of(root, ctx)
    return root


def _record_target(root, ctx: Context):
    p = ctx.patient
    role = el(el(root, "recordTarget"), "patientRole")
    identifier(role, ctx.root + ".2", p.mrn)
    address(role, p.address_line, p.city, p.state, p.postal_code, use="HP")
    telecom(role, p.phone, p.email, use="HP", required=True)
    patient = el(role, "patient")
    given = " ".join(part for part in (p.first_name, p.middle_name) if part)
    person_name(patient, given, p.last_name, use="L")
    sex = p.sex if p.sex in SEX else "UN"
    el(patient, "administrativeGenderCode", code=sex, codeSystem="2.16.840.1.113883.5.1",
       codeSystemName="AdministrativeGender", displayName=SEX[sex])
    time_el(patient, "birthTime", p.birth_date)
    for tag, value, display in (("raceCode", p.race_code, p.race), ("ethnicGroupCode", p.ethnicity_code, p.ethnicity)):
        if value:
            code(patient, tag, value, CDC_RACE, display or None)
        else:
            el(patient, tag, nullFlavor="UNK")
    lang = el(patient, "languageCommunication")
    el(lang, "languageCode", code=LANGUAGES.get(p.language, p.language or "en-US"))
    el(lang, "preferenceInd", value="true")


def _author(root, ctx: Context):
    author = el(root, "author")
    time_el(author, "time", ctx.now)
    assigned = el(author, "assignedAuthor")
    if ctx.author is not None:
        _provider_entity(assigned, ctx.author)
        _person(assigned, "assignedPerson", ctx.author)
        _organization(assigned, "representedOrganization", ctx)
    else:
        identifier(assigned, NPI_ROOT, ctx.practice.npi)
        p = ctx.practice
        address(assigned, p.address_line, p.city, p.state, p.postal_code)
        telecom(assigned, p.phone, use="WP", required=True)
        device = el(assigned, "assignedAuthoringDevice")
        el(device, "manufacturerModelName", text="referdesk")
        el(device, "softwareName", text="referdesk")


def _custodian(root, ctx: Context):
    assigned = el(el(root, "custodian"), "assignedCustodian")
    _organization(assigned, "representedCustodianOrganization", ctx)


def _information_recipient(root, ctx: Context):
    """Exactly one recipient, by name (a Referral Note SHALL; a CCD names who it answers too)."""
    intended = el(el(root, "informationRecipient"), "intendedRecipient")
    address_to = ctx.draft.recipient.strip()
    if address_to and ctx.draft.channel == "direct":
        el(intended, "telecom", use="WP", value=f"mailto:{address_to}")
    elif address_to and ctx.draft.channel == "efax":
        el(intended, "telecom", use="WP", value="fax:" + "".join(c for c in address_to if c.isdigit() or c == "+"))
    name = el(el(intended, "informationRecipient"), "name")
    name.text = ctx.recipient_name


def _legal_authenticator(root, ctx: Context):
    auth = el(root, "legalAuthenticator")
    signed = ctx.note.signed_at if ctx.note is not None and ctx.note.signed_at else ctx.now
    time_el(auth, "time", signed)
    el(auth, "signatureCode", code="S")
    entity = el(auth, "assignedEntity")
    if ctx.author is not None:
        _provider_entity(entity, ctx.author)
        _person(entity, "assignedPerson", ctx.author)
    else:
        identifier(entity, NPI_ROOT, ctx.practice.npi)
        p = ctx.practice
        address(entity, p.address_line, p.city, p.state, p.postal_code)
        telecom(entity, p.phone, use="WP", required=True)
        _organization(entity, "representedOrganization", ctx)


def _callback(root, ctx: Context):
    """Who the recipient calls back: the author at the practice's number."""
    if ctx.author is None:
        return
    part = el(root, "participant", typeCode="CALLBCK")
    entity = el(part, "associatedEntity", classCode="ASSIGNED")
    identifier(entity, NPI_ROOT, ctx.author.npi)
    p = ctx.practice
    address(entity, p.address_line, p.city, p.state, p.postal_code)
    telecom(entity, p.phone or ctx.author.phone, use="WP", required=True)
    _person(entity, "associatedPerson", ctx.author)
    org = el(entity, "scopingOrganization")
    identifier(org, NPI_ROOT, p.npi)
    el(org, "name", text=p.name)


def _service_period(ctx: Context):
    starts = [e.start for e in ctx.patient.encounters]
    if not starts:
        return ctx.now, ctx.now
    return min(starts), max(starts)


def _documentation_of(root, ctx: Context):
    """The care provision being summarised (CCD SHALL, PCPR low/high) and the care team as performers. Only
    the CCD requires it: the Referral Note and Consultation Note carry it for the care team they send (the
    Consultation Note only when there is one)."""
    include_team = ctx.included("care_team")
    if ctx.kind != "receiving" and not include_team:
        return
    members = []
    if include_team:
        members = list(CareTeamMember.select(CareTeamMember, Provider).join(Provider)
                       .where(CareTeamMember.patient == ctx.patient.id).order_by(CareTeamMember.id))
    if ctx.consultation and not members:
        return
    event = el(el(root, "documentationOf"), "serviceEvent", classCode="PCPR")
    low, high = _service_period(ctx)
    ivl(event, "effectiveTime", low, high)
    for member in members:
        performer = el(event, "performer", typeCode="PRF")
        if member.role_code:
            el(performer, "functionCode", code=member.role_code, codeSystem="2.16.840.1.113883.6.96",
               codeSystemName="SNOMED CT", displayName=member.role or None)
        entity = el(performer, "assignedEntity")
        _provider_entity(entity, member.provider)
        _person(entity, "assignedPerson", member.provider)


def _component_of(root, ctx: Context):
    enc = ctx.encounter
    if enc is None:
        return
    encounter = el(el(root, "componentOf"), "encompassingEncounter")
    identifier(encounter, ctx.root + ".3", f"encounter-{enc.id}")
    if enc.type_code:
        code(encounter, "code", enc.type_code, CPT, enc.type_display or None)
    ivl(encounter, "effectiveTime", enc.start)
    responsible = el(el(encounter, "responsibleParty"), "assignedEntity")
    _provider_entity(responsible, enc.provider, with_code=False)
    _person(responsible, "assignedPerson", enc.provider)
    location = el(el(encounter, "location"), "healthCareFacility")
    identifier(location, NPI_ROOT, ctx.practice.npi)
    place = el(location, "location")
    el(place, "name", text=ctx.practice.name)
    p = ctx.practice
    address(place, p.address_line, p.city, p.state, p.postal_code)


# --- Consultation Note ------------------------------------------------------------------------------------

OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


def order_identifier(parent, ctx: Context):
    """The id of the referral (order) the consultation answers, from `draft.extra["order_id"]`: "root^extension",
    a bare OID or UUID (a root alone), or any other string, kept as an extension under our own root (".4": the
    referral as we recorded it). None known: a nullFlavor id, which still says an order was fulfilled."""
    given = str((ctx.draft.extra or {}).get("order_id") or "").strip()
    if not given:
        return el(parent, "id", nullFlavor="NI")
    root, _, extension = given.partition("^")
    root, extension = root.strip(), extension.strip()
    if UUID_RE.match(root):
        root = root.upper()
    elif not OID_RE.match(root):
        root, extension = ctx.root + ".4", given
    return identifier(parent, root, extension or None)


def _in_fulfillment_of(root, ctx: Context):
    """The referral this report fulfils (a Consultation Note SHALL carry one, with an order id)."""
    order = el(el(root, "inFulfillmentOf", typeCode="FLFS"), "order", classCode="ACT", moodCode="RQO")
    order_identifier(order, ctx)


def _consultation_encounter(root, ctx: Context):
    """The consultation visit (a Consultation Note SHALL have one, with an id and an effectiveTime): the
    encounter of the consultant's note, the consultant responsible for it, the practice as its location. With
    no encounter on record, the visit is the note's own time and its id is unknown (nullFlavor)."""
    enc = ctx.encounter
    encounter = el(el(root, "componentOf"), "encompassingEncounter")
    if enc is not None:
        identifier(encounter, ctx.root + ".3", f"encounter-{enc.id}")
        if enc.type_code:
            code(encounter, "code", enc.type_code, CPT, enc.type_display or None)
        ivl(encounter, "effectiveTime", enc.start)
    else:
        el(encounter, "id", nullFlavor="NI")
        ivl(encounter, "effectiveTime", ctx.note.written_at if ctx.note is not None else ctx.now)
    provider = enc.provider if enc is not None else ctx.author
    responsible = el(el(encounter, "responsibleParty"), "assignedEntity")
    if provider is not None:
        _provider_entity(responsible, provider, with_code=False)
        _person(responsible, "assignedPerson", provider)
    else:
        identifier(responsible, NPI_ROOT, ctx.practice.npi)
        p = ctx.practice
        address(responsible, p.address_line, p.city, p.state, p.postal_code)
        telecom(responsible, p.phone, use="WP", required=True)
        _organization(responsible, "representedOrganization", ctx)
    location = el(el(encounter, "location"), "healthCareFacility")
    identifier(location, NPI_ROOT, ctx.practice.npi)
    place = el(location, "location")
    el(place, "name", text=ctx.practice.name)
    p = ctx.practice
    address(place, p.address_line, p.city, p.state, p.postal_code)
