"""Delivery notifications as HISPs send them: the reference implementation's MDN and DSN samples, and the
outbox's claim rules they act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from transports.direct.notifications import parse_notification, read_message

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "standards" / "direct" / "javari-agent" / "messages"


def test_the_reference_implementations_processed_mdn():
    found = parse_notification(read_message((SAMPLES / "MDNMessage.txt").read_bytes()))
    assert found.kind == "processed"
    assert found.original_message_id == "<9501051053.aa04167@IETF.CNR I.Reston.VA.US>"
    assert found.reporter == "externUser1@starugh-stateline.com"


def test_the_reference_implementations_dsn_is_a_failure_with_the_servers_words():
    found = parse_notification(read_message((SAMPLES / "DSNMessage.txt").read_bytes()))
    assert found.kind == "dsn-failed"
    assert found.original_message_id == "<9501051053.aa04167@IETF.CNR I.Reston.VA.US>"
    assert found.detail == "status 5.0.0 550 error - no such recipient"


@pytest.mark.parametrize("disposition, kind", [
    ("automatic-action/MDN-sent-automatically;dispatched", "dispatched"),
    ("automatic-action/MDN-sent-automatically;failed", "failed"),
    ("manual-action/MDN-sent-manually;displayed", None),  # not a delivery fact
])
def test_dispositions(disposition, kind):
    raw = ("From: a@b.example\r\nMessage-ID: <n@b.example>\r\nContent-Type: multipart/report; "
           "report-type=disposition-notification; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
           "--x\r\nContent-Type: message/disposition-notification\r\n\r\n"
           f"Original-Message-ID: <m@us.example>\r\nDisposition: {disposition}\r\n\r\n--x--\r\n").encode()
    found = parse_notification(read_message(raw))
    assert (found.kind if found else None) == kind


def test_a_dsn_naming_the_message_only_in_the_returned_headers():
    raw = (b"From: mailer-daemon@hisp.example\r\nMessage-ID: <d@hisp.example>\r\nContent-Type: multipart/report; "
           b"report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nbounced\r\n"
           b"--x\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; hisp.example\r\n\r\n"
           b"Final-Recipient: rfc822; ruiz@cardio.example\r\nAction: failed\r\nStatus: 5.7.31\r\n"
           b"Diagnostic-Code: smtp; 550 5.7.31 no certificate\r\n\r\n"
           b"--x\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <ours@riverbend.example>\r\n"
           b"Subject: Referral\r\n\r\n--x--\r\n")
    found = parse_notification(read_message(raw))
    assert (found.kind, found.original_message_id, found.reporter) == (
        "dsn-failed", "<ours@riverbend.example>", "ruiz@cardio.example")
    assert "5.7.31" in found.detail


def test_an_ordinary_message_is_not_a_notification():
    assert parse_notification(read_message(b"From: a@b\r\nSubject: hi\r\n\r\nbody\r\n")) is None


# --- the outbox's claims ----------------------------------------------------------------------------------

def queued_referral():
    from documents.packet import build_attachments
    from models.patients import Note
    from models.referring import ReferralDraft, create_referral

    note = Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).first()
    draft = ReferralDraft(patient_id=note.patient_id, note_id=note.id, channel="direct", direction="transferring",
                          recipient="ruiz@cardio.example.org", reason="Evaluation")
    return create_referral(draft, build_attachments(draft))


def test_a_job_is_claimed_by_one_worker_only(seeded):
    from models.outbox import claim_due_jobs

    referral = queued_referral()
    first = claim_due_jobs("worker-a", ["direct"])
    assert [job.referral_id for job in first] == [referral.id]
    assert claim_due_jobs("worker-b", ["direct"]) == []
    assert claim_due_jobs("worker-c", ["efax"]) == []


def test_a_referral_cancelled_before_it_was_claimed_is_not_sent(seeded):
    from models.outbox import claim_due_jobs
    from models.referral_history import cancel_referral

    referral = queued_referral()
    cancel_referral(referral.id)
    assert claim_due_jobs("worker-a", ["direct"]) == []


def test_a_worker_whose_lease_ran_out_cannot_record_over_the_next_one(seeded):
    import datetime as dt

    from models import clock
    from models.outbox import LeaseLost, claim_due_jobs, job_sent
    from tests.conftest import FROZEN_NOW

    queued_referral()
    [slow] = claim_due_jobs("slow", ["direct"])
    clock.freeze(FROZEN_NOW + dt.timedelta(minutes=11))
    [fast] = claim_due_jobs("fast", ["direct"])
    job_sent(fast, "accepted")
    with pytest.raises(LeaseLost):
        job_sent(slow, "accepted too")
