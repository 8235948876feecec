"""Which patient and which of our referrals a received consultant's report belongs to (ARCHITECTURE.md
"Receiving"): first a reply to one of our referral messages (In-Reply-To / References), then the patient named
in the report's C-CDA (last name, first name and date of birth, normalised like patient search) together with
an open referral of that patient sent to the report's sender.

Filing to the wrong chart is the failure users fear most, so doubt leaves the report unfiled for staff: two
patients with the same name and birth date, or a reply whose C-CDA names somebody else than the referral's
patient.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from peewee import fn

from models.patients import Patient
from models.referral_history import get_referral, mark_received_refusal
from models.referrals import Referral
from models.text import normalize

OPEN_FOR_REPORT = ("sent", "delivered")


@dataclass(frozen=True)
class Demographics:
    last_name: str
    first_name: str
    birth_date: dt.date

    @classmethod
    def of(cls, last_name: str, first_name: str, birth_date: str | None) -> "Demographics | None":
        """From a C-CDA's patient; None unless all three are there."""
        if not (normalize(last_name or "") and normalize(first_name or "") and birth_date):
            return None
        try:
            born = dt.date.fromisoformat(birth_date[:10])
        except ValueError:
            return None
        return cls(last_name, first_name, born)

    def fits(self, patient: Patient) -> bool:
        return (normalize(self.last_name) == patient.last_norm and normalize(self.first_name) == patient.first_norm
                and self.birth_date == patient.birth_date)


@dataclass(frozen=True)
class Match:
    patient_id: int | None  # the chart it goes to; None: unfiled
    referral_id: int | None  # the referral it answers (open or not)
    closes: bool  # the referral is waiting for its report and this closes it
    how: str  # "reply" | "demographics" | ""
    note: str = ""  # why it is unfiled, or why the referral it answers is not closed, in words


def _referral_answered(references: list[str]) -> Referral | None:
    if not references:
        return None
    return (Referral.select().where(Referral.message_id.in_(references), Referral.direction == "transferring")
            .order_by(Referral.created_at.desc(), Referral.id.desc()).first())


def open_referral_for(patient_id: int, sender: str) -> Referral | None:
    """The patient's most recent referral sent to `sender` (compared case-insensitively) still waiting for its
    report."""
    return (Referral.select().where(Referral.patient == patient_id, Referral.direction == "transferring",
                                    Referral.status.in_(OPEN_FOR_REPORT),
                                    fn.LOWER(Referral.recipient) == sender.strip().lower())
            .order_by(Referral.created_at.desc(), Referral.id.desc()).first())


def match_report(*, references: list[str], sender: str, demographics: Demographics | None) -> Match:
    answered = _referral_answered(references)
    if answered is not None:
        patient = answered.patient
        if demographics is not None and not demographics.fits(patient):
            return Match(None, answered.id, False, "reply",
                         f"it answers referral {answered.id}, but its C-CDA names a different patient than that "
                         "referral's: check it and attach it to the right chart")
        refusal = mark_received_refusal(get_referral(answered.id))
        return Match(patient.id, answered.id, refusal is None, "reply", refusal or "")
    if demographics is None:
        return Match(None, None, False, "", "it answers none of our referral messages and carries no C-CDA naming "
                                            "the patient (name and date of birth)")
    candidates = list(Patient.select(Patient.id).where(
        Patient.last_norm == normalize(demographics.last_name),
        Patient.first_norm == normalize(demographics.first_name),
        Patient.birth_date == demographics.birth_date).limit(3))
    if not candidates:
        return Match(None, None, False, "", "no patient here has the name and date of birth its C-CDA gives")
    if len(candidates) > 1:
        return Match(None, None, False, "", "more than one patient here has the name and date of birth its C-CDA "
                                            "gives")
    patient_id = candidates[0].id
    referral = open_referral_for(patient_id, sender)
    if referral is None:
        return Match(patient_id, None, False, "demographics",
                     f"the patient has no open referral to {sender}; filed to the chart without closing one")
    return Match(patient_id, referral.id, True, "demographics")
