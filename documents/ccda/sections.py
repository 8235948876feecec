"""The body sections: which ones a document carries, their templates, narrative and entries.

A section is built from the patient's rows; unticked Summary of Care items become a nullFlavor="NI" section
saying so when the document template requires them, and are left out when optional. A Consultation Note also
carries the consultant's signed note, its parts (history of present illness, exam, assessment, plan…) mapped
into the sections of the same name."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

from documents.ccda import entries, sogi
from documents.ccda.context import Context
from documents.ccda.narrative import paragraph, table
from documents.ccda.xml import LOINC, code, el, template
from models import codes
from models.clinical import (
    Allergy, CareTeamMember, Goal, HealthConcern, Immunization, Medication, Payer, PlanItem, Problem, Procedure,
    Result, SmokingStatus, VitalSign,
)
from models.patients import Encounter
from models.practice import Provider

WITHHELD = "This section was withheld by the sender: it is not part of this referral's Summary of Care."


@dataclass(frozen=True)
class Spec:
    key: str  # Summary of Care key (or a name of our own for sections always sent)
    root: str
    ext: str | None
    loinc: str
    display: str
    title: str
    build: Callable  # (section, ctx) -> bool: True when it wrote content, False when there was nothing


def _fmt(value) -> str:
    if value is None:
        return ""
    return value.strftime("%m/%d/%Y %H:%M UTC") if hasattr(value, "hour") else value.strftime("%m/%d/%Y")


def _num(value) -> str:
    return entries._number(value)


def _entry(section, type_code: str | None = "DRIV"):
    return el(section, "entry", typeCode=type_code)


def _text(section):
    return el(section, "text")


# --- section bodies -------------------------------------------------------------------------------------

def _problems(section, ctx: Context) -> bool:
    rows = list(Problem.select().where(Problem.patient == ctx.patient.id).order_by(Problem.id))
    if not rows:
        return False
    table(_text(section), ["Problem", "SNOMED CT", "ICD-10-CM", "Status", "Onset", "Resolved"], [
        (f"problem-{r.id}", [r.display, r.snomed_code, r.icd10_code, r.status, _fmt(r.onset_date),
                             _fmt(r.resolved_date)]) for r in rows])
    for r in rows:
        entries.problem(_entry(section), ctx.env, r, f"problem-{r.id}")
    return True


def _medications(section, ctx: Context) -> bool:
    rows = list(Medication.select().where(Medication.patient == ctx.patient.id).order_by(Medication.id))
    if not rows:
        return False
    table(_text(section), ["Medication", "RxNorm", "Dose", "Route", "Frequency", "Start", "Status"], [
        (f"medication-{r.id}", [r.display, r.rxnorm_code, r.dose, r.route, r.frequency, _fmt(r.start_date),
                                r.status]) for r in rows])
    for r in rows:
        entries.medication(_entry(section), ctx.env, r, f"medication-{r.id}")
    return True


def _allergies(section, ctx: Context) -> bool:
    rows = list(Allergy.select().where(Allergy.patient == ctx.patient.id).order_by(Allergy.id))
    text = _text(section)
    if not rows:
        paragraph(text, "No known allergies.", "allergy-none")
        entries.no_known_allergies(_entry(section), ctx.env, "allergy-none", None)
        return True
    table(text, ["Substance", "Reaction", "Severity", "Status", "Onset"], [
        (f"allergy-{r.id}", [r.substance, r.reaction, r.severity, r.status, _fmt(r.onset_date)]) for r in rows])
    for r in rows:
        entries.allergy(_entry(section), ctx.env, r, f"allergy-{r.id}", f"allergy-{r.id}")
    return True


def _immunizations(section, ctx: Context) -> bool:
    rows = list(Immunization.select().where(Immunization.patient == ctx.patient.id).order_by(Immunization.given_on))
    if not rows:
        return False
    table(_text(section), ["Vaccine", "CVX", "Date", "Status"], [
        (f"immunization-{r.id}", [r.display, r.cvx_code, _fmt(r.given_on), r.status]) for r in rows])
    for r in rows:
        entries.immunization(_entry(section), ctx.env, r, f"immunization-{r.id}")
    return True


def _vital_signs(section, ctx: Context) -> bool:
    rows = list(VitalSign.select().where(VitalSign.patient == ctx.patient.id)
                .order_by(VitalSign.measured_at.desc(), VitalSign.id))
    if not rows:
        return False
    table(_text(section), ["Vital sign", "Value", "Unit", "Measured"], [
        (f"vital-{r.id}", [r.display, _num(r.value), r.unit, _fmt(r.measured_at)]) for r in rows])
    for when, group in itertools.groupby(rows, key=lambda r: r.measured_at):
        group = list(group)
        entries.vital_signs_organizer(_entry(section), ctx.env, when, group, [f"vital-{r.id}" for r in group])
    return True


def _results(section, ctx: Context) -> bool:
    rows = list(Result.select().where(Result.patient == ctx.patient.id)
                .order_by(Result.resulted_at.desc(), Result.panel_code, Result.id))
    if not rows:
        return False

    def ref_range(r):
        if r.reference_low is None and r.reference_high is None:
            return ""
        return f"{'' if r.reference_low is None else _num(r.reference_low)}–" \
               f"{'' if r.reference_high is None else _num(r.reference_high)} {r.unit}".strip()

    table(_text(section), ["Test", "Value", "Unit", "Reference range", "Flag", "Panel", "Date"], [
        (f"result-{r.id}", [r.display, _num(r.value), r.unit, ref_range(r), r.interpretation, r.panel,
                            _fmt(r.resulted_at)]) for r in rows])
    for (when, panel_code), group in itertools.groupby(rows, key=lambda r: (r.resulted_at, r.panel_code)):
        group = list(group)
        entries.result_organizer(_entry(section), ctx.env, f"{group[0].id}", panel_code, group[0].panel, group,
                                 [f"result-{r.id}" for r in group])
    return True


def _procedures(section, ctx: Context) -> bool:
    rows = list(Procedure.select().where(Procedure.patient == ctx.patient.id).order_by(Procedure.performed_on))
    if not rows:
        return False
    table(_text(section), ["Procedure", "Code", "Date"], [
        (f"procedure-{r.id}", [r.display, f"{r.code_system} {r.code}", _fmt(r.performed_on)]) for r in rows])
    for r in rows:
        entries.procedure(_entry(section), ctx.env, r, f"procedure-{r.id}")
    return True


def _social_history(section, ctx: Context) -> bool:
    """Smoking status, then sex, gender identity and sexual orientation where the chart records them."""
    rows = list(SmokingStatus.select().where(SmokingStatus.patient == ctx.patient.id)
                .order_by(SmokingStatus.observed_on.desc()))
    recorded = sogi.recorded(ctx.patient)
    asked = ctx.patient.sogi_recorded_on
    text = _text(section)
    if not rows:
        paragraph(text, "No smoking status recorded.")
    if rows or recorded:
        table(text, ["Social history", "Finding", "Date"], [
            *((f"smoking-{r.id}", ["Tobacco smoking status", r.display, _fmt(r.observed_on)]) for r in rows),
            *((item.kind, [item.label, item.display, _fmt(asked)]) for item in recorded)])
    for r in rows:
        entries.smoking_status(_entry(section), ctx.env, r, f"smoking-{r.id}")
    for item in recorded:
        sogi.observation(_entry(section), ctx.env, item, asked, ctx.patient.id)
    return True


def _goals(section, ctx: Context) -> bool:
    rows = list(Goal.select().where(Goal.patient == ctx.patient.id).order_by(Goal.id))
    if not rows:
        return False
    table(_text(section), ["Goal", "Target date"], [
        (f"goal-{r.id}", [r.description, _fmt(r.target_date)]) for r in rows])
    for r in rows:
        entries.goal(_entry(section, None), ctx.env, r, f"goal-{r.id}")
    return True


def _health_concerns(section, ctx: Context) -> bool:
    rows = list(HealthConcern.select().where(HealthConcern.patient == ctx.patient.id).order_by(HealthConcern.id))
    if not rows:
        return False
    table(_text(section), ["Health concern", "SNOMED CT", "Noted"], [
        (f"concern-{r.id}", [r.display, r.snomed_code, _fmt(r.noted_on)]) for r in rows])
    for r in rows:
        entries.health_concern(_entry(section, None), ctx.env, r, f"concern-{r.id}")
    return True


def _plan(section, ctx: Context) -> bool:
    rows = list(PlanItem.select().where(PlanItem.patient == ctx.patient.id).order_by(PlanItem.id))
    if not rows:
        return False
    table(_text(section), ["Planned", "Code", "Date"], [
        (f"plan-{r.id}", [r.description, f"{r.code_system} {r.code}".strip(), _fmt(r.planned_on)]) for r in rows])
    for r in rows:
        entries.planned_act(_entry(section, None), ctx.env, r, f"plan-{r.id}")
    return True


def _reason(section, ctx: Context) -> bool:
    reason = ctx.draft.reason.strip()
    if not reason and ctx.encounter is not None:
        reason = ctx.encounter.reason
    paragraph(_text(section), reason or "No reason for referral was given.")
    return True


def _encounters(section, ctx: Context) -> bool:
    rows = list(Encounter.select().where(Encounter.patient == ctx.patient.id).order_by(Encounter.start.desc()))
    if not rows:
        return False
    table(_text(section), ["Encounter", "Date", "Reason", "Diagnosis"], [
        (f"encounter-{r.id}", [r.type_display or "Encounter", _fmt(r.start), r.reason,
                               f"{r.diagnosis} ({r.diagnosis_code})" if r.diagnosis_code else r.diagnosis])
        for r in rows])
    mapping = {icd: (snomed, display) for snomed, icd, display in codes.PROBLEMS}
    for p in Problem.select().where(Problem.patient == ctx.patient.id):
        if p.icd10_code:
            mapping[p.icd10_code] = (p.snomed_code, p.display)
    for r in rows:
        entries.encounter(_entry(section), ctx.env, r, f"encounter-{r.id}", mapping)
    return True


def _payers(section, ctx: Context) -> bool:
    rows = list(Payer.select().where(Payer.patient == ctx.patient.id).order_by(Payer.id))
    if not rows:
        return False
    table(_text(section), ["Payer", "Type", "Member id", "Group"], [
        (f"payer-{r.id}", [r.payer_name, r.payer_type, r.member_id, r.group_number]) for r in rows])
    for r in rows:
        entries.payer(_entry(section), ctx.env, r, f"payer-{r.id}")
    return True


def _care_team(section, ctx: Context) -> bool:
    """The patient's care team: a caption naming the team, a table of its members (each row's id is what its
    Care Team Member Act references), one Care Team Organizer."""
    rows = list(CareTeamMember.select(CareTeamMember, Provider).join(Provider)
                .where(CareTeamMember.patient == ctx.patient.id).order_by(CareTeamMember.id))
    if not rows:
        return False
    text = _text(section)
    paragraph(text, f"Care team of {ctx.patient.first_name} {ctx.patient.last_name}".strip(), "care-team")

    def name(p):
        return ", ".join(part for part in (f"{p.first_name} {p.last_name}".strip(), p.credentials) if part)

    def place(p):
        return ", ".join(part for part in (p.address_line, p.city, f"{p.state} {p.postal_code}".strip()) if part)

    table(text, ["Member", "Role", "Specialty", "Organization", "Address", "Phone", "Direct address"], [
        (f"care-team-member-{r.id}", [name(r.provider), r.role, r.provider.specialty, r.provider.organization,
                                      place(r.provider), r.provider.phone, r.provider.direct_address])
        for r in rows])
    entries.care_team_organizer(_entry(section, None), ctx.env, ctx.patient.id, "care-team", rows,
                                [f"care-team-member-{r.id}" for r in rows])
    return True


def _append(parent, words: str) -> None:
    if len(parent):
        parent[-1].tail = (parent[-1].tail or "") + words
    else:
        parent.text = (parent.text or "") + words


def _notes(section, ctx: Context) -> bool:
    """The encounter note as one paragraph (its id is what the Note Activity references)."""
    note = ctx.note
    if note is None:
        return False
    block = el(_text(section), "paragraph", ID=f"note-{note.id}")
    el(block, "content", styleCode="Bold", text=f"{note.title or note.type_display} ({_fmt(note.written_at)})")
    for title, body in note.sections:
        el(block, "br")
        el(block, "content", styleCode="Bold", text=title)
        for line in body.splitlines() or [""]:
            el(block, "br")
            _append(block, line)
    entries.note_activity(_entry(section, None), ctx.env, note, f"note-{note.id}")
    return True


# --- the consultant's note, part by part (Consultation Note) ---------------------------------------------

#: Which titles of a note's sections (lower case, trimmed of ":") feed which C-CDA section.
NOTE_PARTS = {
    "chief_complaint": ("chief complaint", "chief complaints", "cc"),
    "history_of_present_illness": ("history of present illness", "history of the present illness",
                                   "present illness", "hpi", "subjective", "interval history"),
    "review_of_systems": ("review of systems", "ros"),
    "physical_exam": ("physical exam", "physical examination", "physical findings", "exam", "examination",
                      "pe", "objective"),
    "assessment": ("assessment", "impression", "assessment and plan", "assessment & plan", "a/p", "a&p",
                   "diagnosis", "diagnoses", "impression and plan"),
    "plan": ("plan", "plan of care", "plan of treatment", "recommendation", "recommendations"),
}


def _part_key(title: str) -> str:
    return " ".join(title.strip().rstrip(":").lower().split())


def note_parts(note, part: str) -> list[tuple[str, str]]:
    """The note's (title, text) sections that belong to `part` (see NOTE_PARTS), in the note's order. A
    combined "Assessment and Plan" counts as the assessment only, so it is never written twice."""
    if note is None:
        return []
    titles = NOTE_PARTS[part]
    return [(title, body) for title, body in note.sections if _part_key(title) in titles and body.strip()]


def _lines(text, body: str, caption: str | None = None) -> None:
    """One paragraph per non-empty line of `body`; the first one starts with `caption` in bold, when given."""
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        block = el(text, "paragraph")
        if i == 0 and caption:
            el(block, "content", styleCode="Bold", text=f"{caption}:").tail = f" {line}"
        else:
            block.text = line


def _from_note(part: str) -> Callable:
    """A section body made of the consultant's note's `part` (titled when the note had several of them)."""

    def build(section, ctx: Context) -> bool:
        found = note_parts(ctx.note, part)
        if not found:
            return False
        text = _text(section)
        for title, body in found:
            _lines(text, body, title if len(found) > 1 else None)
        return True

    return build


def _consult_plan(section, ctx: Context) -> bool:
    """Assessment and Plan: the consultant's assessment and plan as written in the note, then the chart's
    planned items (each a Planned Encounter, as in the Referral Note's Assessment and Plan)."""
    found = note_parts(ctx.note, "assessment") + note_parts(ctx.note, "plan")
    rows = list(PlanItem.select().where(PlanItem.patient == ctx.patient.id).order_by(PlanItem.id))
    if not found and not rows:
        return False
    text = _text(section)
    for title, body in found:
        _lines(text, body, title.strip().rstrip(":") or "Assessment")
    if rows:
        table(text, ["Planned", "Code", "Date"], [
            (f"plan-{r.id}", [r.description, f"{r.code_system} {r.code}".strip(), _fmt(r.planned_on)])
            for r in rows])
        for r in rows:
            entries.planned_act(_entry(section, None), ctx.env, r, f"plan-{r.id}")
    return True


S = "2.16.840.1.113883.10.20.22.2"
SPECS = {
    "reason_for_referral": Spec("reason_for_referral", "1.3.6.1.4.1.19376.1.5.3.1.3.1", "2014-06-09", "42349-1",
                                "Reason for referral", "Reason for Referral", _reason),
    "problems": Spec("problems", f"{S}.5.1", "2015-08-01", "11450-4", "Problem list - Reported", "Problems",
                     _problems),
    "allergies": Spec("allergies", f"{S}.6.1", "2015-08-01", "48765-2", "Allergies and adverse reactions Document",
                      "Allergies and Intolerances", _allergies),
    "medications": Spec("medications", f"{S}.1.1", "2014-06-09", "10160-0", "History of Medication use Narrative",
                        "Medications", _medications),
    "immunizations": Spec("immunizations", f"{S}.2.1", "2015-08-01", "11369-6",
                          "History of Immunization Narrative", "Immunizations", _immunizations),
    "vital_signs": Spec("vital_signs", f"{S}.4.1", "2015-08-01", "8716-3", "Vital signs", "Vital Signs",
                        _vital_signs),
    "results": Spec("results", f"{S}.3.1", "2015-08-01", "30954-2", "Relevant diagnostic tests/laboratory data Narrative",
                    "Results", _results),
    "procedures": Spec("procedures", f"{S}.7.1", "2014-06-09", "47519-4", "History of Procedures Document",
                       "Procedures", _procedures),
    "smoking_status": Spec("smoking_status", f"{S}.17", "2015-08-01", "29762-2", "Social history Narrative",
                           "Social History", _social_history),
    "goals": Spec("goals", f"{S}.60", None, "61146-7", "Goals", "Goals", _goals),
    "health_concerns": Spec("health_concerns", f"{S}.58", "2015-08-01", "75310-3", "Health concerns Document",
                            "Health Concerns", _health_concerns),
    "assessment_plan": Spec("assessment_plan", f"{S}.9", "2014-06-09", "51847-2", "Evaluation + Plan note",
                            "Assessment and Plan", _plan),
    "plan_of_treatment": Spec("assessment_plan", f"{S}.10", "2014-06-09", "18776-5", "Plan of care note",
                              "Plan of Treatment", _plan),
    "encounters": Spec("encounters", f"{S}.22.1", "2015-08-01", "46240-8", "History of Hospitalizations+Outpatient visits Narrative",
                       "Encounters", _encounters),
    "care_team": Spec("care_team", f"{S}.500", "2019-07-01", "85847-2", "Patient Care team information",
                      "Care Teams", _care_team),
    "payers": Spec("payers", f"{S}.18", "2015-08-01", "48768-6", "Payment sources Document", "Payers", _payers),
    # The Consultation Note's own sections, from the consultant's signed note (always sent: the report itself).
    "chief_complaint": Spec("chief_complaint", "1.3.6.1.4.1.19376.1.5.3.1.1.13.2.1", None, "10154-3",
                            "Chief complaint Narrative - Reported", "Chief Complaint", _from_note("chief_complaint")),
    "history_of_present_illness": Spec("history_of_present_illness", "1.3.6.1.4.1.19376.1.5.3.1.3.4", None,
                                       "10164-2", "History of Present illness Narrative",
                                       "History of Present Illness", _from_note("history_of_present_illness")),
    "review_of_systems": Spec("review_of_systems", "1.3.6.1.4.1.19376.1.5.3.1.3.18", None, "10187-3",
                              "Review of systems Narrative - Reported", "Review of Systems",
                              _from_note("review_of_systems")),
    "physical_exam": Spec("physical_exam", "2.16.840.1.113883.10.20.2.10", "2015-08-01", "29545-1",
                          "Physical findings Narrative", "Physical Exam", _from_note("physical_exam")),
    # Unticking "Assessment and plan" withholds it here too.
    "consult_assessment_plan": Spec("assessment_plan", f"{S}.9", "2014-06-09", "51847-2", "Evaluation + Plan note",
                                    "Assessment and Plan", _consult_plan),
}
NOTES = Spec("note", f"{S}.65", "2016-11-01", "11506-3", "Progress note", "Notes", _notes)

# The order of the body, and which sections each document template requires.
ORDER = {
    "transferring": ["reason_for_referral", "problems", "allergies", "medications", "immunizations", "vital_signs",
                     "results", "procedures", "smoking_status", "goals", "health_concerns", "assessment_plan",
                     "encounters", "care_team", "payers"],
    "receiving": ["problems", "allergies", "medications", "immunizations", "vital_signs", "results",
                  "procedures", "smoking_status", "goals", "health_concerns", "plan_of_treatment",
                  "reason_for_referral", "encounters", "care_team", "payers"],
    "consultation": ["reason_for_referral", "chief_complaint", "history_of_present_illness", "review_of_systems",
                     "physical_exam", "consult_assessment_plan", "problems", "allergies", "medications",
                     "immunizations", "vital_signs", "results", "procedures", "smoking_status", "goals",
                     "health_concerns", "encounters", "care_team", "payers"],
}
REQUIRED = {
    "transferring": {"reason_for_referral", "problems", "allergies", "medications", "assessment_plan"},
    "receiving": {"problems", "allergies", "medications", "results", "smoking_status", "vital_signs"},
    # SHALL: reason for referral, HPI, assessment and plan, problems, allergies; SHOULD: physical exam,
    # medications, results — sent always, so a reader finds them (nullFlavor="NI" when there is nothing).
    "consultation": {"reason_for_referral", "history_of_present_illness", "physical_exam", "consult_assessment_plan",
                     "problems", "allergies", "medications", "results"},
}


# Sections whose template has a later version the 2.1 schematron checks: both templateIds are sent.
ALSO = {f"{S}.500": "2022-06-01"}


def _start(body, spec: Spec, null: bool = False):
    section = el(el(body, "component"), "section", nullFlavor="NI" if null else None)
    template(section, spec.root, spec.ext)
    if spec.root in ALSO:
        template(section, spec.root, ALSO[spec.root])
    code(section, "code", spec.loinc, LOINC, spec.display)
    el(section, "title", text=spec.title)
    return section


def add_sections(body, ctx: Context) -> None:
    kind = ctx.kind
    required = REQUIRED[kind]
    for name in ORDER[kind]:
        spec = SPECS[name]
        if not ctx.included(spec.key):
            if name in required:
                section = _start(body, spec, null=True)
                paragraph(_text(section), WITHHELD)
            continue
        section = _start(body, spec)
        if spec.build(section, ctx):
            continue
        if name in required:
            section.getparent().getparent().remove(section.getparent())
            section = _start(body, spec, null=True)
            paragraph(_text(section), f"No {spec.title.lower()} recorded.")
        else:
            section.getparent().getparent().remove(section.getparent())
    if ctx.draft.include_note and ctx.note is not None:
        spec = NOTES
        section = _start(body, Spec(spec.key, spec.root, spec.ext, ctx.note.type_code, ctx.note.type_display,
                                    "Notes", spec.build))
        spec.build(section, ctx)
