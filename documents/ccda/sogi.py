"""USCDI v3 sex, gender identity and sexual orientation: Social History entries, sent only when recorded.

Templates (both schematrons checked): Sex Observation 2.16.840.1.113883.10.20.22.4.507 (Companion Guide R4.1
2023-06-28, C-CDA 3.0 2023-07-01), Gender Identity Observation 2.16.840.1.113883.10.20.34.3.45:2023-05-01 and
Sexual Orientation Observation 2.16.840.1.113883.10.20.22.4.501:2023-05-01, the last two also Social History
Observations (4.38:2022-06-01), which they SHALL conform to. An answer that is not a concept (asked but
declined, unknown) is a nullFlavor value, which Sex Observation forbids: there it is a coded "asked-declined"
(HL7 DataAbsentReason) or SNOMED CT "Patient sex unknown"."""

from __future__ import annotations

from dataclasses import dataclass

from documents.ccda.entries import Env, _entry_id, author
from documents.ccda.xml import LOINC, SNOMED, XSI_TYPE, code, el, ivl, template, text_ref, time_el
from models.codes import NULL_ANSWERS

SEX_OBSERVATION = "2.16.840.1.113883.10.20.22.4.507"
SEX_VERSIONS = ("2023-06-28", "2023-07-01")  # Companion Guide R4.1 (2.1 schematron), C-CDA 3.0
SOCIAL_HISTORY_OBSERVATION = ("2.16.840.1.113883.10.20.22.4.38", "2022-06-01")
GENDER_IDENTITY = ("2.16.840.1.113883.10.20.34.3.45", "2023-05-01")
SEXUAL_ORIENTATION = ("2.16.840.1.113883.10.20.22.4.501", "2023-05-01")
DATA_ABSENT_REASON = ("2.16.840.1.113883.4.642.4.1048", "DataAbsentReason")
SEX_UNKNOWN = ("184115007", "Patient sex unknown")

# kind -> (narrative label, LOINC code, LOINC display, template (root, extension) or None for Sex Observation)
KINDS = {
    "sex": ("Sex", "46098-0", "Sex", None),
    "gender-identity": ("Gender identity", "76691-5", "Gender identity", GENDER_IDENTITY),
    "sexual-orientation": ("Sexual orientation", "76690-7", "Sexual orientation", SEXUAL_ORIENTATION),
}


@dataclass(frozen=True)
class Item:
    kind: str  # a key of KINDS; also the id of its narrative row
    code: str  # SNOMED CT, or a key of models.codes.NULL_ANSWERS
    display: str

    @property
    def label(self) -> str:
        return KINDS[self.kind][0]


def recorded(patient) -> list[Item]:
    """What the patient's chart records, in document order; nothing for a field never recorded."""
    values = (("sex", patient.recorded_sex_code, patient.recorded_sex),
              ("gender-identity", patient.gender_identity_code, patient.gender_identity),
              ("sexual-orientation", patient.sexual_orientation_code, patient.sexual_orientation))
    return [Item(kind, value.strip(), display.strip() or NULL_ANSWERS.get(value.strip(), value.strip()))
            for kind, value, display in values if value and value.strip()]


def observation(parent, env: Env, item: Item, when, patient_id) -> None:
    """The item's observation; its text points at the narrative row whose id is `item.kind`."""
    _, loinc, loinc_display, extra = KINDS[item.kind]
    obs = el(parent, "observation", classCode="OBS", moodCode="EVN")
    if extra is None:
        for ext in SEX_VERSIONS:
            template(obs, SEX_OBSERVATION, ext)
    else:
        template(obs, *SOCIAL_HISTORY_OBSERVATION)
        template(obs, *extra)
    _entry_id(obs, env, item.kind, patient_id)
    code(obs, "code", loinc, LOINC, loinc_display)
    text_ref(obs, item.kind)
    el(obs, "statusCode", code="completed")
    if extra is None:
        time_el(obs, "effectiveTime", when)  # a point in time: Sex Observation forbids low and high
        _sex_value(obs, item)
    else:
        ivl(obs, "effectiveTime", when)  # from when it was stated (low SHALL be there)
        _value(obs, item)
    author(obs, env)


def _sex_value(obs, item: Item) -> None:
    if item.code == "ASKU":
        code(obs, "value", "asked-declined", DATA_ABSENT_REASON, "Asked But Declined", xsi_type="CD")
    elif item.code in NULL_ANSWERS:
        code(obs, "value", SEX_UNKNOWN[0], SNOMED, SEX_UNKNOWN[1], xsi_type="CD")
    else:
        code(obs, "value", item.code, SNOMED, item.display or None, xsi_type="CD")


def _value(obs, item: Item) -> None:
    if item.code not in NULL_ANSWERS:
        code(obs, "value", item.code, SNOMED, item.display or None, xsi_type="CD")
        return
    value = el(obs, "value", nullFlavor=item.code)
    value.set(XSI_TYPE, "CD")
    if item.code == "OTH" and item.display != NULL_ANSWERS["OTH"]:  # "something else", in the patient's words
        el(value, "originalText", text=item.display)
