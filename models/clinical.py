"""The clinical lists a Summary of Care draws on, each entry coded in the system C-CDA expects.

Code systems (OIDs as C-CDA names them): SNOMED CT 2.16.840.1.113883.6.96, ICD-10-CM …6.90, RxNorm …6.88,
LOINC …6.1, CVX …12.292, CPT …6.12, UCUM units. Each table keeps the code and its display name together so
a document can be built from a row without a terminology server.
"""

from __future__ import annotations

import peewee as pw

from models.db import BaseModel
from models.patients import Patient
from models.practice import Provider


def _patient(backref: str) -> pw.ForeignKeyField:
    return pw.ForeignKeyField(Patient, backref=backref, on_delete="CASCADE")


class Problem(BaseModel):
    patient = _patient("problems")
    snomed_code = pw.CharField()
    icd10_code = pw.CharField(default="")
    display = pw.CharField()
    onset_date = pw.DateField(null=True)
    resolved_date = pw.DateField(null=True)
    status = pw.CharField(default="active")  # active | resolved


class Medication(BaseModel):
    patient = _patient("medications")
    rxnorm_code = pw.CharField()
    display = pw.CharField()
    dose = pw.CharField(default="")
    route_code = pw.CharField(default="")  # NCI Thesaurus route (2.16.840.1.113883.3.26.1.1)
    route = pw.CharField(default="")
    frequency = pw.CharField(default="")
    start_date = pw.DateField(null=True)
    status = pw.CharField(default="active")  # active | completed


class Allergy(BaseModel):
    patient = _patient("allergies")
    substance_system = pw.CharField(default="RxNorm")  # RxNorm | SNOMED CT | UNII
    substance_code = pw.CharField()
    substance = pw.CharField()
    reaction_code = pw.CharField(default="")  # SNOMED CT
    reaction = pw.CharField(default="")
    severity_code = pw.CharField(default="")  # SNOMED CT 255604002 mild / 6736007 moderate / 24484000 severe
    severity = pw.CharField(default="")
    onset_date = pw.DateField(null=True)
    status = pw.CharField(default="active")


class Immunization(BaseModel):
    patient = _patient("immunizations")
    cvx_code = pw.CharField()
    display = pw.CharField()
    given_on = pw.DateField()
    status = pw.CharField(default="completed")


class VitalSign(BaseModel):
    patient = _patient("vital_signs")
    measured_at = pw.DateTimeField()
    loinc_code = pw.CharField()
    display = pw.CharField()
    value = pw.FloatField()
    unit = pw.CharField()  # UCUM


class Result(BaseModel):
    patient = _patient("results")
    resulted_at = pw.DateTimeField()
    panel_code = pw.CharField(default="")  # LOINC panel
    panel = pw.CharField(default="")
    loinc_code = pw.CharField()
    display = pw.CharField()
    value = pw.FloatField()
    unit = pw.CharField(default="")
    reference_low = pw.FloatField(null=True)
    reference_high = pw.FloatField(null=True)
    interpretation = pw.CharField(default="N")  # HL7 ObservationInterpretation: N, H, L


class Procedure(BaseModel):
    patient = _patient("procedures")
    code_system = pw.CharField(default="SNOMED CT")  # SNOMED CT | CPT
    code = pw.CharField()
    display = pw.CharField()
    performed_on = pw.DateField()


class SmokingStatus(BaseModel):
    patient = _patient("smoking_statuses")
    snomed_code = pw.CharField()
    display = pw.CharField()
    observed_on = pw.DateField()


class Goal(BaseModel):
    patient = _patient("goals")
    loinc_code = pw.CharField(default="")
    description = pw.CharField()
    target_date = pw.DateField(null=True)


class HealthConcern(BaseModel):
    patient = _patient("health_concerns")
    snomed_code = pw.CharField()
    display = pw.CharField()
    noted_on = pw.DateField()


class CareTeamMember(BaseModel):
    patient = _patient("care_team")
    provider = pw.ForeignKeyField(Provider, backref="care_teams")
    role_code = pw.CharField(default="")  # SNOMED CT, e.g. 446050000 primary care physician
    role = pw.CharField(default="")


class PlanItem(BaseModel):
    """Assessment and plan: what is planned next (a referral, a test, a follow-up visit)."""

    patient = _patient("plan_items")
    code_system = pw.CharField(default="LOINC")
    code = pw.CharField(default="")
    description = pw.CharField()
    planned_on = pw.DateField(null=True)


class Payer(BaseModel):
    patient = _patient("payers")
    payer_type_code = pw.CharField()  # PHDSC Source of Payment Typology (2.16.840.1.113883.3.221.5)
    payer_type = pw.CharField()
    payer_name = pw.CharField()
    member_id = pw.CharField()
    group_number = pw.CharField(default="")


CLINICAL_MODELS = [
    Problem,
    Medication,
    Allergy,
    Immunization,
    VitalSign,
    Result,
    Procedure,
    SmokingStatus,
    Goal,
    HealthConcern,
    CareTeamMember,
    PlanItem,
    Payer,
]
