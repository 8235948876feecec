"""The sandbox's partner practice: an automated consultant with its own referdesk database and Direct identity.

It is referdesk itself, pointed at loopback: its inbound SMTP listener receives Direct referrals through the
ordinary receiving pipeline (decrypt, verify, file in the chart, processed and dispatched MDNs through its
outbox), and a few seconds after a referral is filed its consultant "sees" the patient: a signed consultation
note is written in the partner's chart and sent back as a Consultation Note C-CDA by Direct, exactly as a
user's Send would. Run as its own process (`python -m transports.sandbox.partner --data-dir DIR`), so the two
practices never share a database connection, as two real sites would not.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
from dataclasses import dataclass

from models import clock
from models.audit import record
from models.db import database, open_database
from models.patients import Note, Patient
from models.practice import Practice, Provider
from models.referrals import AuditEvent, Document, InboundMessage

ANSWERED = "sandbox.consult-sent"  # the AuditEvent that marks an inbound referral as answered


@dataclass(frozen=True)
class Consultant:
    """Who the partner practice is: its name and Direct address, and the clinician who writes the reports."""

    practice: str = "Valley Cardiology Associates"
    address: str = "ruiz@direct.valley-cardio.example"
    npi: str = "1093817465"
    first_name: str = "Ana"
    last_name: str = "Ruiz"
    credentials: str = "MD"
    specialty: str = "Cardiovascular Disease"
    specialty_code: str = "207RC0000X"
    phone: str = "(217) 555-0188"
    fax: str = "(217) 555-0189"


def become(partner: Consultant) -> Provider:
    """Make this database the partner's: its practice row and its consultant (idempotent)."""
    with database.atomic():
        practice = Practice.select().first() or Practice(name=partner.practice, npi=partner.npi)
        practice.name, practice.npi, practice.direct_address = partner.practice, partner.npi, partner.address
        practice.phone, practice.fax = partner.phone, partner.fax
        practice.address_line, practice.city, practice.state, practice.postal_code = (
            "12 Valley Medical Plaza", "Springfield", "IL", "62702")
        practice.save()
        provider, _ = Provider.get_or_create(npi=partner.npi, defaults=dict(
            first_name=partner.first_name, last_name=partner.last_name, credentials=partner.credentials,
            specialty=partner.specialty, specialty_code=partner.specialty_code, organization=partner.practice,
            phone=partner.phone, fax=partner.fax, direct_address=partner.address, in_practice=True))
    return provider


def referrals_to_answer(delay: dt.timedelta) -> list[tuple[int, int, str]]:
    """(inbound id, patient id, sender) of referrals filed in a chart at least `delay` ago and not answered."""
    answered = AuditEvent.select(AuditEvent.object_id).where(AuditEvent.action == ANSWERED)
    rows = (InboundMessage.select(InboundMessage.id, InboundMessage.from_address, Document.patient)
            .join(Document, on=(Document.inbound == InboundMessage.id))
            .where(InboundMessage.state == "filed", InboundMessage.kind != "notification",
                   InboundMessage.received_at <= clock.now() - delay, Document.patient.is_null(False),
                   InboundMessage.id.cast("TEXT").not_in(answered))
            .distinct().tuples())
    return [(inbound, patient, sender) for inbound, sender, patient in rows]


def consult_note(patient: Patient, consultant: Provider) -> Note:
    """The consultant's signed note on the patient: what the report carries."""
    now = clock.now()
    note = Note(patient=patient, author=consultant, signed_by=consultant, type_code="11488-4",
                type_display="Consult note", title="Cardiology consultation", written_at=now, signed_at=now)
    note.sections = [
            ("Reason for Referral", "Evaluation requested by the referring practice."),
            ("History of Present Illness",
             f"{patient.first_name} {patient.last_name} was seen in consultation at the referring clinician's "
             "request. Symptoms and history were reviewed with the patient."),
            ("Physical Exam", "Alert, no acute distress. Heart: regular rate and rhythm, no murmur. Lungs: clear."),
            ("Assessment", "No acute cardiac process identified on today's evaluation."),
            ("Plan", "Continue current management. Return to the referring clinician; we are glad to see the "
                     "patient again if symptoms change."),
        ]
    note.save()
    return note


def answer(inbound_id: int, patient_id: int, sender: str, consultant: Provider) -> int:
    """Write the consult note and send the report back to whoever referred: the user's Send, automated."""
    from documents.packet import build_attachments
    from models.referring import ReferralDraft, default_subject
    from transports.submit import submit_referral

    patient = Patient.get_by_id(patient_id)
    note = consult_note(patient, consultant)
    draft = ReferralDraft(
        patient_id=patient.id, note_id=note.id, channel="direct", direction="receiving", recipient=sender,
        recipient_name="Referring clinician", reason="Consultation report", extra={"document": "consultation"},
        subject=f"Consultation report: {default_subject(patient, 'receiving').split(': ', 1)[-1]}",
        message=f"Please find attached our consultation report on {patient.first_name} {patient.last_name}. "
                "Thank you for the referral.",
        username="sandbox-consultant")
    with database.atomic():
        referral = submit_referral(draft, build_attachments(draft))
        record(ANSWERED, username="sandbox-consultant", patient_mrn=patient.mrn, object_type="inbound",
               object_id=str(inbound_id), detail=f"referral {referral.id}")
    return referral.id


async def consult(stop: asyncio.Event, consultant: Provider, *, delay: dt.timedelta, every: float,
                  wake=None) -> None:
    """Answer each filed referral once, `delay` after it arrived; `wake()` nudges the outbox to send now."""
    while not stop.is_set():
        for inbound_id, patient_id, sender in await asyncio.to_thread(referrals_to_answer, delay):
            await asyncio.to_thread(answer, inbound_id, patient_id, sender, consultant)
            if wake is not None:
                wake()
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except asyncio.TimeoutError:
            pass


async def run(data_dir: str, *, delay: float, poll: float) -> None:
    from models.config import load_config
    from transports.service import Service

    config = load_config(data_dir=data_dir)
    open_database(config.database_url)
    consultant = become(Consultant())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = Service(config, poll=poll)
    await asyncio.gather(service.run(stop),
                         consult(stop, consultant, delay=dt.timedelta(seconds=delay), every=poll))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="referdesk-sandbox-partner")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--delay", type=float, default=3.0, help="seconds between a referral's arrival and the "
                        "consultant's report")
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args(argv)
    asyncio.run(run(args.data_dir, delay=args.delay, poll=args.poll))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
