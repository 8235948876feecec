"""Coded clinical statements (C-CDA R2.1 entry templates), one function per template. Each takes the
parent element, the Env (id root and who asserts the entries), the row and the narrative id its text
references. Every entry carries an Author Participation so the recipient sees where it came from."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from documents.ccda.xml import (
    ACT_CLASS, ACT_CODE, NUCC, CPT, CVX, ICD10, INTERPRETATION, LOINC, NCI, RXNORM, SNOMED, SOP, SYSTEMS, XSI_TYPE,
    NPI_ROOT, address, code, el, identifier, ivl, person_name, reference, sdtc, template, telecom, text_ref,
    time_el,
)



@dataclass(frozen=True)
class Env:
    """What every entry needs besides its row: the id root and the author (NPI, time) it is attributed to."""

    root: str
    author_npi: str
    author_time: dt.datetime
    author_taxonomy: tuple[str, str] | None = None  # NUCC (code, display)


def author(parent, env: Env):
    """Author Participation (2.16.840.1.113883.10.20.22.4.119): provenance of the entry."""
    node = el(parent, "author")
    template(node, "2.16.840.1.113883.10.20.22.4.119")
    time_el(node, "time", env.author_time)
    assigned = el(node, "assignedAuthor")
    identifier(assigned, NPI_ROOT, env.author_npi)
    if env.author_taxonomy:
        code(assigned, "code", env.author_taxonomy[0], NUCC, env.author_taxonomy[1] or None)


# Medication frequency (as written) -> hours between doses, for a PIVL_TS
FREQUENCY_HOURS = {"once daily": 24, "once daily at bedtime": 24, "once daily before breakfast": 24,
                   "twice daily": 12, "every 4 hours as needed": None, "every 6 hours as needed": None}


X12_1336 = ("2.16.840.1.113883.6.255.1336", "X12 Insurance Type")
# Source of Payment Typology code -> X12 1336 insurance type (the Health Insurance Type value set)
X12_INSURANCE_TYPE = {"1": ("MB", "Medicare Part B"), "2": ("MC", "Medicaid"),
                      "511": ("HM", "Health Maintenance Organization"),
                      "512": ("PR", "Preferred Provider Organization (PPO)")}
PROBLEM_TYPE = ("55607006", "Problem")
# Allergy types from the Allergy and Intolerance Type value set that both the 2.1 and the 3.0 schematrons accept.
DRUG_ALLERGY = ("416098002", "Drug allergy (disorder)")
FOOD_ALLERGY = ("414285001", "Food allergy (disorder)")
ALLERGIC_DISPOSITION = ("609328004", "Allergic disposition (finding)")
FOOD_ALLERGENS = {"256349002", "102263004", "3718001", "44027008"}  # peanut, eggs, cow's milk, seafood
QRDA_ALLERGY = "2.16.840.1.113883.10.20.24.3.90"  # the 3.0 schematron asks 2014-06-09 allergies to carry it


def allergy_type(row) -> tuple[str, str]:
    if row.substance_system == "RxNorm":
        return DRUG_ALLERGY
    return FOOD_ALLERGY if row.substance_code in FOOD_ALLERGENS else ALLERGIC_DISPOSITION


def _entry_id(parent, env: Env, kind: str, row_id) -> None:
    identifier(parent, env.root + ".4", f"{kind}-{row_id}")


def _pq(parent, tag: str, value: float, unit: str, xsi: str | None = "PQ"):
    node = el(parent, tag, value=_number(value), unit=unit or "1")
    if xsi:
        node.set(XSI_TYPE, xsi)
    return node


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# R2.1 and C-CDA 3.0 (whose schematron wants the 2024-05-01 act in any Problem Section): one act, both templates.
PROBLEM_CONCERN_VERSIONS = ("2015-08-01", "2024-05-01")


def concern_act(parent, env: Env, kind: str, row_id, ref: str, template_root: str, template_ext: str | tuple,
                status: str, low, high=None):
    """Problem / Allergy concern act wrapper (CONC), with its effectiveTime."""
    act = el(parent, "act", classCode="ACT", moodCode="EVN")
    for ext in (template_ext,) if isinstance(template_ext, str) else template_ext:
        template(act, template_root, ext)
    _entry_id(act, env, f"{kind}-concern", row_id)
    code(act, "code", "CONC", ACT_CLASS, "Concern")
    text_ref(act, ref)
    el(act, "statusCode", code=status)
    ivl(act, "effectiveTime", low, high)
    author(act, env)
    return act


def problem_observation(parent, env: Env, kind: str, row_id, ref: str, snomed: str, display: str,
                        icd10: str = "", low=None, high=None):
    """Problem Observation (2015-08-01 and 3.0's 2024-05-01): SNOMED CT value with an ICD-10-CM translation."""
    obs = el(parent, "observation", classCode="OBS", moodCode="EVN")
    template(obs, "2.16.840.1.113883.10.20.22.4.4", "2015-08-01")
    template(obs, "2.16.840.1.113883.10.20.22.4.4", "2024-05-01")
    _entry_id(obs, env, kind, row_id)
    c = code(obs, "code", PROBLEM_TYPE[0], SNOMED, PROBLEM_TYPE[1])
    code(c, "translation", "75326-9", LOINC, "Problem")
    text_ref(obs, ref)
    el(obs, "statusCode", code="completed")
    ivl(obs, "effectiveTime", low, high)
    if snomed:
        value = code(obs, "value", snomed, SNOMED, display, xsi_type="CD", ref=ref)
    else:
        value = el(obs, "value", nullFlavor="OTH")
        value.set(XSI_TYPE, "CD")
        text_node = el(value, "originalText")
        el(text_node, "reference", value=f"#{ref}")
    if icd10:
        code(value, "translation", icd10, ICD10, display)
    author(obs, env)
    return obs


def problem(parent, env: Env, row, ref: str):
    status = "completed" if row.status == "resolved" else "active"
    act = concern_act(parent, env, "problem", row.id, ref, "2.16.840.1.113883.10.20.22.4.3", PROBLEM_CONCERN_VERSIONS,
                      status, row.onset_date, row.resolved_date if status == "completed" else None)
    rel = el(act, "entryRelationship", typeCode="SUBJ")
    problem_observation(rel, env, "problem", row.id, ref, row.snomed_code, row.display, row.icd10_code,
                        row.onset_date, row.resolved_date)


def allergy(parent, env: Env, row, ref: str, reaction_ref: str | None):
    act = concern_act(parent, env, "allergy", row.id, ref, "2.16.840.1.113883.10.20.22.4.30", "2015-08-01",
                      "active" if row.status == "active" else "completed", row.onset_date)
    obs = el(el(act, "entryRelationship", typeCode="SUBJ"), "observation", classCode="OBS", moodCode="EVN")
    template(obs, "2.16.840.1.113883.10.20.22.4.7", "2014-06-09")
    template(obs, QRDA_ALLERGY, "2014-06-09")
    _entry_id(obs, env, "allergy", row.id)
    code(obs, "code", "ASSERTION", ACT_CODE, "Assertion")
    text_ref(obs, ref)
    el(obs, "statusCode", code="completed")
    ivl(obs, "effectiveTime", row.onset_date)
    kind = allergy_type(row)
    code(obs, "value", kind[0], SNOMED, kind[1], xsi_type="CD")
    author(obs, env)
    _consumable_allergen(obs, SYSTEMS.get(row.substance_system, RXNORM), row.substance_code, row.substance, ref)
    if row.reaction_code:
        rel = el(obs, "entryRelationship", typeCode="MFST", inversionInd="true")
        reaction = el(rel, "observation", classCode="OBS", moodCode="EVN")
        template(reaction, "2.16.840.1.113883.10.20.22.4.9", "2014-06-09")
        _entry_id(reaction, env, "reaction", row.id)
        code(reaction, "code", "ASSERTION", ACT_CODE, "Assertion")
        if reaction_ref:
            text_ref(reaction, reaction_ref)
        el(reaction, "statusCode", code="completed")
        code(reaction, "value", row.reaction_code, SNOMED, row.reaction, xsi_type="CD")
        if row.severity_code:
            sev_rel = el(reaction, "entryRelationship", typeCode="SUBJ", inversionInd="true")
            sev = el(sev_rel, "observation", classCode="OBS", moodCode="EVN")
            template(sev, "2.16.840.1.113883.10.20.22.4.8", "2014-06-09")
            code(sev, "code", "SEV", ACT_CODE, "Severity Observation")
            el(sev, "statusCode", code="completed")
            code(sev, "value", row.severity_code, SNOMED, row.severity, xsi_type="CD")


def _consumable_allergen(obs, system, value: str | None, display: str | None, ref: str | None):
    role = el(el(obs, "participant", typeCode="CSM"), "participantRole", classCode="MANU")
    entity = el(role, "playingEntity", classCode="MMAT")
    if value:
        code(entity, "code", value, system, display, ref=ref)
    else:
        el(entity, "code", nullFlavor="NA")


def no_known_allergies(parent, env: Env, ref: str, when):
    """The IG's negation pattern: an Allergy - Intolerance Observation with negationInd="true"."""
    act = concern_act(parent, env, "allergy", "none", ref, "2.16.840.1.113883.10.20.22.4.30", "2015-08-01",
                      "active", when)
    obs = el(el(act, "entryRelationship", typeCode="SUBJ"), "observation", classCode="OBS", moodCode="EVN",
             negationInd="true")
    template(obs, "2.16.840.1.113883.10.20.22.4.7", "2014-06-09")
    template(obs, QRDA_ALLERGY, "2014-06-09")
    _entry_id(obs, env, "allergy", "none")
    code(obs, "code", "ASSERTION", ACT_CODE, "Assertion")
    text_ref(obs, ref)
    el(obs, "statusCode", code="completed")
    ivl(obs, "effectiveTime", None)
    code(obs, "value", ALLERGIC_DISPOSITION[0], SNOMED, ALLERGIC_DISPOSITION[1], xsi_type="CD")
    author(obs, env)
    _consumable_allergen(obs, RXNORM, None, None, None)


def medication(parent, env: Env, row, ref: str):
    active = row.status == "active"
    sa = el(parent, "substanceAdministration", classCode="SBADM", moodCode="INT" if active else "EVN")
    template(sa, "2.16.840.1.113883.10.20.22.4.16", "2014-06-09")
    _entry_id(sa, env, "medication", row.id)
    text_ref(sa, ref)
    el(sa, "statusCode", code="active" if active else "completed")
    period = el(sa, "effectiveTime")
    period.set(XSI_TYPE, "IVL_TS")
    time_el(period, "low", row.start_date)
    hours = FREQUENCY_HOURS.get(row.frequency)
    if hours:
        pivl = el(sa, "effectiveTime", operator="A", institutionSpecified="true")
        pivl.set(XSI_TYPE, "PIVL_TS")
        el(pivl, "period", value=str(hours), unit="h")
    if row.route_code:
        code(sa, "routeCode", row.route_code, NCI, row.route or None)
    match = re.match(r"\s*(\d+(?:\.\d+)?)", row.dose or "")
    if match:
        el(sa, "doseQuantity", value=match.group(1), unit="1")
    product = el(el(sa, "consumable"), "manufacturedProduct", classCode="MANU")
    template(product, "2.16.840.1.113883.10.20.22.4.23", "2014-06-09")
    material = el(product, "manufacturedMaterial")
    code(material, "code", row.rxnorm_code, RXNORM, row.display, ref=ref)
    author(sa, env)


def immunization(parent, env: Env, row, ref: str):
    sa = el(parent, "substanceAdministration", classCode="SBADM", moodCode="EVN", negationInd="false")
    template(sa, "2.16.840.1.113883.10.20.22.4.52", "2015-08-01")
    _entry_id(sa, env, "immunization", row.id)
    text_ref(sa, ref)
    el(sa, "statusCode", code="completed")
    time_el(sa, "effectiveTime", row.given_on)
    product = el(el(sa, "consumable"), "manufacturedProduct", classCode="MANU")
    template(product, "2.16.840.1.113883.10.20.22.4.54", "2014-06-09")
    material = el(product, "manufacturedMaterial")
    code(material, "code", row.cvx_code, CVX, row.display, ref=ref)
    author(sa, env)


def vital_signs_organizer(parent, env: Env, when, rows: list, refs: list[str]):
    org = el(parent, "organizer", classCode="CLUSTER", moodCode="EVN")
    template(org, "2.16.840.1.113883.10.20.22.4.26", "2015-08-01")
    identifier(org, env.root + ".4", f"vitals-{when:%Y%m%d%H%M%S}")
    c = code(org, "code", "74728-7", LOINC,
             "Vital signs, weight, height, head circumference, oximetry, BMI, and BSA panel - HL7.FHIR")
    code(c, "translation", "46680005", SNOMED, "Vital signs")
    el(org, "statusCode", code="completed")
    time_el(org, "effectiveTime", when)
    author(org, env)
    for row, ref in zip(rows, refs):
        obs = el(el(org, "component"), "observation", classCode="OBS", moodCode="EVN")
        template(obs, "2.16.840.1.113883.10.20.22.4.27", "2014-06-09")
        _entry_id(obs, env, "vital", row.id)
        code(obs, "code", row.loinc_code, LOINC, row.display)
        text_ref(obs, ref)
        el(obs, "statusCode", code="completed")
        time_el(obs, "effectiveTime", row.measured_at)
        _pq(obs, "value", row.value, row.unit)
        author(obs, env)


def result_organizer(parent, env: Env, key: str, panel_code: str, panel: str, rows: list, refs: list[str]):
    org = el(parent, "organizer", classCode="BATTERY", moodCode="EVN")
    template(org, "2.16.840.1.113883.10.20.22.4.1", "2015-08-01")
    template(org, "2.16.840.1.113883.10.20.22.4.1", "2023-05-01")
    identifier(org, env.root + ".4", f"panel-{key}")
    if panel_code:
        code(org, "code", panel_code, LOINC, panel or None)
    else:
        code(org, "code", rows[0].loinc_code, LOINC, rows[0].display)
    el(org, "statusCode", code="completed")
    times = [r.resulted_at for r in rows]
    ivl(org, "effectiveTime", min(times), max(times))
    author(org, env)
    for row, ref in zip(rows, refs):
        obs = el(el(org, "component"), "observation", classCode="OBS", moodCode="EVN")
        template(obs, "2.16.840.1.113883.10.20.22.4.2", "2015-08-01")
        template(obs, "2.16.840.1.113883.10.20.22.4.2", "2023-05-01")
        _entry_id(obs, env, "result", row.id)
        code(obs, "code", row.loinc_code, LOINC, row.display)
        text_ref(obs, ref)
        el(obs, "statusCode", code="completed")
        time_el(obs, "effectiveTime", row.resulted_at)
        _pq(obs, "value", row.value, row.unit)
        if row.interpretation:
            names = {"N": "Normal", "H": "High", "L": "Low"}
            code(obs, "interpretationCode", row.interpretation, INTERPRETATION, names.get(row.interpretation))
        author(obs, env)
        if row.reference_low is not None or row.reference_high is not None:
            rng = el(el(el(obs, "referenceRange"), "observationRange"), "value")
            rng.set(XSI_TYPE, "IVL_PQ")
            if row.reference_low is not None:
                _pq(rng, "low", row.reference_low, row.unit, xsi=None)
            if row.reference_high is not None:
                _pq(rng, "high", row.reference_high, row.unit, xsi=None)


def procedure(parent, env: Env, row, ref: str):
    proc = el(parent, "procedure", classCode="PROC", moodCode="EVN")
    template(proc, "2.16.840.1.113883.10.20.22.4.14", "2014-06-09")
    _entry_id(proc, env, "procedure", row.id)
    system = CPT if row.code_system == "CPT" else SNOMED
    code(proc, "code", row.code, system, row.display, ref=ref)
    text_ref(proc, ref)
    el(proc, "statusCode", code="completed")
    time_el(proc, "effectiveTime", row.performed_on)
    author(proc, env)


def smoking_status(parent, env: Env, row, ref: str):
    obs = el(parent, "observation", classCode="OBS", moodCode="EVN")
    template(obs, "2.16.840.1.113883.10.20.22.4.78", "2014-06-09")
    _entry_id(obs, env, "smoking", row.id)
    code(obs, "code", "72166-2", LOINC, "Tobacco smoking status")
    text_ref(obs, ref)
    el(obs, "statusCode", code="completed")
    time_el(obs, "effectiveTime", row.observed_on)
    code(obs, "value", row.snomed_code, SNOMED, row.display, xsi_type="CD")
    author(obs, env)


def goal(parent, env: Env, row, ref: str):
    obs = el(parent, "observation", classCode="OBS", moodCode="GOL")
    template(obs, "2.16.840.1.113883.10.20.22.4.121")
    template(obs, "2.16.840.1.113883.10.20.22.4.121", "2022-06-01")
    _entry_id(obs, env, "goal", row.id)
    if row.loinc_code:
        code(obs, "code", row.loinc_code, LOINC, None, ref=ref)
    else:
        reference(el(el(obs, "code", nullFlavor="OTH"), "originalText"), ref)
    text_ref(obs, ref)
    el(obs, "statusCode", code="active")
    if row.target_date:
        time_el(obs, "effectiveTime", row.target_date)
    author(obs, env)


def health_concern(parent, env: Env, row, ref: str):
    act = el(parent, "act", classCode="ACT", moodCode="EVN")
    template(act, "2.16.840.1.113883.10.20.22.4.132")
    template(act, "2.16.840.1.113883.10.20.22.4.132", "2015-08-01")
    template(act, "2.16.840.1.113883.10.20.22.4.132", "2022-06-01")
    _entry_id(act, env, "concern", row.id)
    code(act, "code", "75310-3", LOINC, "Health concerns Document")
    text_ref(act, ref)
    el(act, "statusCode", code="active")
    ivl(act, "effectiveTime", row.noted_on)
    author(act, env)
    rel = el(act, "entryRelationship", typeCode="REFR")
    problem_observation(rel, env, "concern-obs", row.id, ref, row.snomed_code, row.display, "", row.noted_on)


def planned_act(parent, env: Env, row, ref: str):
    """A planned item (follow-up visit, referral to a specialist) as a Planned Encounter (4.40): each of ours
    is a visit to come, and the 3.0 schematron reads any plain act in a plan section as nutrition advice."""
    enc = el(parent, "encounter", classCode="ENC", moodCode="INT")
    template(enc, "2.16.840.1.113883.10.20.22.4.40", "2014-06-09")
    _entry_id(enc, env, "plan", row.id)
    if row.code:
        code(enc, "code", row.code, SYSTEMS.get(row.code_system, SNOMED), row.description, ref=ref)
    else:
        reference(el(el(enc, "code", nullFlavor="OTH"), "originalText"), ref)
    text_ref(enc, ref)
    el(enc, "statusCode", code="active")
    if row.planned_on:
        time_el(enc, "effectiveTime", row.planned_on)
    author(enc, env)


def encounter(parent, env: Env, row, ref: str, snomed_for_icd: dict[str, tuple[str, str]]):
    enc = el(parent, "encounter", classCode="ENC", moodCode="EVN")
    template(enc, "2.16.840.1.113883.10.20.22.4.49", "2015-08-01")
    _entry_id(enc, env, "encounter", row.id)
    if row.type_code:
        code(enc, "code", row.type_code, CPT, row.type_display or None, ref=ref)
    else:
        reference(el(el(enc, "code", nullFlavor="OTH"), "originalText"), ref)
    text_ref(enc, ref)
    time_el(enc, "effectiveTime", row.start)
    performer = el(enc, "performer")
    identifier(el(performer, "assignedEntity"), NPI_ROOT, row.provider.npi)
    author(enc, env)
    if row.diagnosis_code:
        dx = el(el(enc, "entryRelationship", typeCode="COMP"), "act", classCode="ACT", moodCode="EVN")
        template(dx, "2.16.840.1.113883.10.20.22.4.80", "2015-08-01")
        code(dx, "code", "29308-4", LOINC, "Diagnosis")
        el(dx, "statusCode", code="completed")
        ivl(dx, "effectiveTime", row.start)
        author(dx, env)
        snomed, display = snomed_for_icd.get(row.diagnosis_code, ("", row.diagnosis))
        rel = el(dx, "entryRelationship", typeCode="SUBJ")
        problem_observation(rel, env, "encounter-dx", row.id, ref, snomed, display or row.diagnosis,
                            row.diagnosis_code, row.start)


def note_activity(parent, env: Env, note, ref: str):
    act = el(parent, "act", classCode="ACT", moodCode="EVN")
    template(act, "2.16.840.1.113883.10.20.22.4.202", "2016-11-01")
    _entry_id(act, env, "note", note.id)
    c = code(act, "code", "34109-9", LOINC, "Note")
    code(c, "translation", note.type_code, LOINC, note.type_display)
    text_ref(act, ref)
    el(act, "statusCode", code="completed")
    time_el(act, "effectiveTime", note.written_at)
    writer = note.signed_by or note.author
    taxonomy = (writer.specialty_code, writer.specialty) if writer.specialty_code else None
    author(act, Env(env.root, writer.npi, note.signed_at or note.written_at, taxonomy))


def payer(parent, env: Env, row, ref: str):
    """Coverage Activity → Policy Activity (2015-08-01) with payer performer and covered-party participant."""
    cov = el(parent, "act", classCode="ACT", moodCode="EVN")
    template(cov, "2.16.840.1.113883.10.20.22.4.60", "2015-08-01")
    _entry_id(cov, env, "coverage", row.id)
    code(cov, "code", "48768-6", LOINC, "Payment sources")
    text_ref(cov, ref)
    el(cov, "statusCode", code="completed")
    author(cov, env)
    policy = el(el(cov, "entryRelationship", typeCode="COMP"), "act", classCode="ACT", moodCode="EVN")
    template(policy, "2.16.840.1.113883.10.20.22.4.61", "2015-08-01")
    identifier(policy, env.root + ".5", row.member_id or f"policy-{row.id}")
    insurance = X12_INSURANCE_TYPE.get(row.payer_type_code)
    if insurance:
        c = code(policy, "code", insurance[0], X12_1336, insurance[1])
    else:
        c = el(policy, "code", nullFlavor="OTH")
    code(c, "translation", row.payer_type_code, SOP, row.payer_type)
    text_ref(policy, ref)
    el(policy, "statusCode", code="completed")
    performer = el(policy, "performer", typeCode="PRF")
    template(performer, "2.16.840.1.113883.10.20.22.4.87")
    entity = el(performer, "assignedEntity")
    identifier(entity, env.root + ".6", f"payer-{row.payer_type_code}")
    code(entity, "code", "PAYOR", ("2.16.840.1.113883.5.110", "RoleClass"), "invoice payor")
    el(el(entity, "representedOrganization"), "name", text=row.payer_name)
    part = el(policy, "participant", typeCode="COV")
    template(part, "2.16.840.1.113883.10.20.22.4.89")
    role = el(part, "participantRole", classCode="PAT")
    identifier(role, env.root + ".7", row.member_id or f"member-{row.id}")
    code(role, "code", "SELF", ("2.16.840.1.113883.5.111", "RoleCode"), "self")
    plan = el(el(policy, "entryRelationship", typeCode="REFR"), "act", classCode="ACT", moodCode="DEF")
    identifier(plan, env.root + ".8", f"plan-{row.payer_type_code}")
    el(plan, "code", nullFlavor="NA")
    text_ref(plan, ref)


CARE_TEAM_VERSIONS = ("2019-07-01", "2022-06-01")  # Companion Guide 2019-07-01; the 2.1 schematron checks V2
PRIMARY_CARE = "446050000"


def care_team_organizer(parent, env: Env, team_id, team_ref: str, members: list, refs: list[str]):
    """Care Team Organizer (2.16.840.1.113883.10.20.22.4.500): one team, a Care Team Member Act per member
    (performer: NPI, specialty, address, phone, name). The lead (PPRF) is the primary care physician, else the
    first member; its id is the lead member act's id."""
    org = el(parent, "organizer", classCode="CLUSTER", moodCode="EVN")
    for ext in CARE_TEAM_VERSIONS:
        template(org, "2.16.840.1.113883.10.20.22.4.500", ext)
    _entry_id(org, env, "care-team", team_id)
    code(org, "code", "86744-0", LOINC, "Care Team", ref=team_ref)
    el(org, "statusCode", code="active")
    ivl(org, "effectiveTime", None)
    author(org, env)
    lead = next((m for m in members if m.role_code == PRIMARY_CARE), members[0])
    role = el(el(org, "participant", typeCode="PPRF"), "participantRole")
    _entry_id(role, env, "care-team-member", lead.id)
    for member, ref in zip(members, refs):
        care_team_member(el(org, "component"), env, member, ref)
    return org


def care_team_member(parent, env: Env, member, ref: str):
    """Care Team Member Act (2.16.840.1.113883.10.20.22.4.500.1): the member as performer of the care provision."""
    provider = member.provider
    act = el(parent, "act", classCode="PCPR", moodCode="EVN")
    for ext in (*CARE_TEAM_VERSIONS, "2024-05-01"):
        template(act, "2.16.840.1.113883.10.20.22.4.500.1", ext)
    _entry_id(act, env, "care-team-member", member.id)
    code(act, "code", "92707-9", LOINC, "Care team member")
    text_ref(act, ref)
    el(act, "statusCode", code="active")
    ivl(act, "effectiveTime", None)
    performer = el(act, "performer", typeCode="PRF")
    if member.role_code:
        sdtc(performer, "functionCode", code=member.role_code, codeSystem=SNOMED[0], codeSystemName=SNOMED[1],
             displayName=member.role or None)
    entity = el(performer, "assignedEntity")
    identifier(entity, NPI_ROOT, provider.npi)
    if provider.specialty_code:
        code(entity, "code", provider.specialty_code, NUCC, provider.specialty or None)
    address(entity, provider.address_line, provider.city, provider.state, provider.postal_code)
    telecom(entity, provider.phone, provider.direct_address, use="WP", required=True)
    person_name(el(entity, "assignedPerson"), provider.first_name, provider.last_name, provider.credentials)
    if provider.organization:
        org = el(entity, "representedOrganization")
        el(org, "name", text=provider.organization)
        telecom(org, provider.phone, None, use="WP", required=True)
        address(org, provider.address_line, provider.city, provider.state, provider.postal_code)
    return act
