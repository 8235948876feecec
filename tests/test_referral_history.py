"""Referral history on a real SQLite file: listing and filtering, the detail, the three actions with every
refusal, the all-or-nothing guarantee, and `referdesk referrals` as scripts use it."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from models import referral_history as rh
from models.documents import Attachment, file_document
from models.patients import Patient
from models.referral_history import (
    HistoryError,
    cancel_referral,
    get_referral,
    list_referrals,
    mark_report_received,
    parse_mdy,
    referral_detail,
    resend_referral,
)
from models.referrals import STATUSES, AuditEvent, Document, OutboxJob, Referral, ReferralEvent
from models.referring import ReferralDraft, create_referral

TODAY = dt.date(2026, 11, 2)  # conftest freezes the clock at 2026-11-02 10:00 UTC (and TZ=UTC)


def seeded_id(status: str) -> int:
    """A referral in `status`: from the seeded history when it has one, else made here and moved there."""
    rid = Referral.select(Referral.id).where(Referral.status == status).order_by(Referral.id).scalar()
    if rid is not None:
        return rid
    ref = new_referral()
    changes = {"status": status}
    if status not in ("queued", "cancelled"):
        changes["sent_at"] = ref.created_at
        OutboxJob.update(state="done").where(OutboxJob.referral == ref.id).execute()
    else:
        OutboxJob.update(state="cancelled" if status == "cancelled" else "pending").where(
            OutboxJob.referral == ref.id).execute()
    if status == "failed":
        changes["status_reason"] = "5.7.31 no certificate is published for the recipient's address"
    if status == "report-received":
        changes["report_received_on"] = TODAY
    Referral.update(**changes).where(Referral.id == ref.id).execute()
    return ref.id


def new_referral(patient_id: int = 1, *, direction: str = "transferring", attachments=()) -> Referral:
    draft = ReferralDraft(patient_id=patient_id, note_id=None, channel="direct", direction=direction,
                          recipient="consult@direct.cardio.example", recipient_name="Ada Heart, MD",
                          username="frontdesk")
    return create_referral(draft, list(attachments))


def snapshot(referral_id: int) -> tuple:
    """Everything an action may touch, to show a refused or failed action left no trace."""
    ref = Referral.get_by_id(referral_id)
    return (ref.status, ref.status_reason, ref.message_id, ref.report_received_on, ref.sent_at,
            ReferralEvent.select().where(ReferralEvent.referral == referral_id).count(),
            [(j.id, j.state) for j in OutboxJob.select().where(OutboxJob.referral == referral_id)],
            AuditEvent.select().count(), Document.select().where(Document.referral == referral_id).count())


# --- listing ------------------------------------------------------------------------------------------------


def test_list_is_newest_first_with_display_fields(seeded):
    rows = list_referrals()
    assert len(rows) == Referral.select().count() >= 12
    assert [r.created_at for r in rows] == sorted((r.created_at for r in rows), reverse=True)
    first = rows[0]
    patient = Patient.get_by_id(first.patient_id)
    assert first.patient_name == f"{patient.last_name}, {patient.first_name}"
    assert first.mrn == patient.mrn
    assert {r.status for r in rows} >= {"delivered", "report-received", "failed"}


def test_fax_recipients_are_shown_formatted(seeded):
    made = create_referral(ReferralDraft(patient_id=2, note_id=None, channel="efax", recipient="217.555.0142"), [])
    fax = [r for r in list_referrals() if r.channel == "efax"]
    assert get_referral(made.id).recipient == "(217) 555-0142"
    for row in fax:
        stored = Referral.get_by_id(row.id).recipient
        assert stored.isdigit() and len(stored) == 10
        assert row.recipient == f"({stored[:3]}) {stored[3:6]}-{stored[6:]}"


def test_status_filter_and_open(seeded):
    failed = list_referrals(status="failed")
    assert failed and all(r.status == "failed" and r.status_reason for r in failed)
    queued = new_referral()
    open_rows = list_referrals(status="open")
    assert {r.status for r in open_rows} <= {"queued", "sending", "sent"}
    assert queued.id in {r.id for r in open_rows}
    assert {r.id for r in open_rows} == {r.id for r in list_referrals() if r.status in ("queued", "sending", "sent")}


def test_unknown_status_lists_the_valid_ones(seeded):
    with pytest.raises(ValueError) as err:
        list_referrals(status="lost")
    for name in ("open", *STATUSES):
        assert name in str(err.value)


def test_date_window_includes_both_ends(seeded):
    failed = list_referrals(status="failed")[0]
    day = failed.created_at.date()
    same_day = list_referrals(since=day, until=day)
    assert failed.id in {r.id for r in same_day}
    assert all(r.created_at.date() == day for r in same_day)
    assert failed.id not in {r.id for r in list_referrals(since=day + dt.timedelta(days=1))}
    assert failed.id not in {r.id for r in list_referrals(until=day - dt.timedelta(days=1))}
    with pytest.raises(HistoryError, match="after the To date"):
        list_referrals(since=day, until=day - dt.timedelta(days=1))


def test_patient_filter_and_limit(seeded):
    some = list_referrals()[3]
    mine = list_referrals(patient_id=some.patient_id)
    assert mine and {r.patient_id for r in mine} == {some.patient_id}
    assert [r.id for r in list_referrals(limit=2)] == [r.id for r in list_referrals()[:2]]


def test_rows_serialise_to_json(seeded):
    row = get_referral(seeded_id("report-received"))
    data = json.loads(json.dumps(row.as_json()))
    assert data["report_received_on"] == row.report_received_on.isoformat()
    assert data["created_at"] == row.created_at.isoformat()
    assert set(data) >= {"id", "mrn", "channel", "recipient", "status", "message_id"}


def test_detail_has_events_oldest_first_and_attachments_without_content(seeded):
    ref = new_referral(attachments=[Attachment("summary.xml", "application/xml", b"<ClinicalDocument/>", "ccda")])
    detail = referral_detail(ref.id)
    assert detail.row.id == ref.id and detail.row.status == "queued"
    assert [e.kind for e in detail.events] == ["queued"]
    assert [(a.filename, a.media_type, a.size, a.kind) for a in detail.attachments] == [
        ("summary.xml", "application/xml", len(b"<ClinicalDocument/>"), "ccda")]
    assert not hasattr(detail.attachments[0], "content")
    failed = referral_detail(seeded_id("failed"))
    assert [e.at for e in failed.events] == sorted(e.at for e in failed.events)
    assert failed.events[-1].kind == "failed"
    with pytest.raises(HistoryError, match="no referral with id 999999"):
        referral_detail(999999)


def test_parse_mdy():
    assert parse_mdy("11/02/2026") == dt.date(2026, 11, 2)
    assert parse_mdy(" 1/5/2026 ") == dt.date(2026, 1, 5)
    for bad in ("", "2026-11-02", "13/45/2026", "11/02/26", "ab/cd/efgh"):
        with pytest.raises(HistoryError):
            parse_mdy(bad)


# --- mark the report received -------------------------------------------------------------------------------


def test_mark_report_received_on_a_delivered_referral(seeded):
    rid = seeded_id("delivered")
    row = mark_report_received(rid, dt.date(2026, 10, 30), username="frontdesk")
    assert row.status == "report-received" and row.report_received_on == dt.date(2026, 10, 30)
    stored = Referral.get_by_id(rid)
    assert stored.status == "report-received" and stored.report_received_on == dt.date(2026, 10, 30)
    event = ReferralEvent.select().where(ReferralEvent.referral == rid).order_by(ReferralEvent.id.desc()).get()
    assert event.kind == "report-received" and "10/30/2026" in event.detail and "frontdesk" in event.detail
    audit = AuditEvent.select().order_by(AuditEvent.id.desc()).get()
    assert (audit.action, audit.object_id, audit.username) == ("referral.report_received", str(rid), "frontdesk")
    patient = Patient.get_by_id(row.patient_id)
    for phi in (patient.last_name, patient.mrn, "2026-10-30", "10/30/2026"):
        assert phi not in audit.detail


def test_mark_report_received_today_on_a_sent_referral(seeded):
    rid = seeded_id("sent")
    assert mark_report_received(rid, TODAY).status == "report-received"


def test_mark_report_received_links_the_report_document(seeded):
    rid = seeded_id("delivered")
    row = get_referral(rid)
    report = file_document(Attachment("report.pdf", "application/pdf", b"%PDF-1.4", "report"), owner="patient",
                           patient=Patient.get_by_id(row.patient_id))
    mark_report_received(rid, TODAY, document_id=report.id)
    assert Document.get_by_id(report.id).referral_id == rid
    assert "document_id=" + str(report.id) in AuditEvent.select().order_by(AuditEvent.id.desc()).get().detail
    assert [a.id for a in referral_detail(rid).attachments] == [report.id]


@pytest.mark.parametrize("status, words", [
    ("failed", "failed and never reached"),
    ("cancelled", "was cancelled"),
    ("report-received", "already has its report"),
])
def test_mark_report_received_refuses_and_says_why(seeded, status, words):
    rid = seeded_id(status)
    before = snapshot(rid)
    with pytest.raises(ValueError, match=words):
        mark_report_received(rid, TODAY)
    assert snapshot(rid) == before


def test_mark_report_received_refuses_a_queued_one(seeded):
    rid = new_referral().id
    before = snapshot(rid)
    with pytest.raises(HistoryError, match="has not been sent yet"):
        mark_report_received(rid, TODAY)
    assert snapshot(rid) == before


def test_mark_report_received_refuses_a_receiving_referral(seeded):
    ref = new_referral(direction="receiving")
    Referral.update(status="delivered").where(Referral.id == ref.id).execute()
    before = snapshot(ref.id)
    with pytest.raises(HistoryError, match="one we received"):
        mark_report_received(ref.id, TODAY)
    assert snapshot(ref.id) == before


def test_mark_report_received_refuses_future_and_too_early_dates(seeded):
    rid = seeded_id("delivered")
    created = get_referral(rid).created_at.date()
    before = snapshot(rid)
    with pytest.raises(HistoryError, match="in the future"):
        mark_report_received(rid, TODAY + dt.timedelta(days=1))
    with pytest.raises(HistoryError, match="before the referral was made"):
        mark_report_received(rid, created - dt.timedelta(days=1))
    assert snapshot(rid) == before
    assert mark_report_received(rid, created).report_received_on == created  # the same day is fine


def test_mark_report_received_refuses_another_patients_document(seeded):
    rid = seeded_id("delivered")
    other = Patient.select().where(Patient.id != get_referral(rid).patient_id).first()
    report = file_document(Attachment("r.pdf", "application/pdf", b"%PDF", "report"), owner="patient",
                           patient=other)
    before = snapshot(rid)
    with pytest.raises(HistoryError, match="another patient's chart"):
        mark_report_received(rid, TODAY, document_id=report.id)
    with pytest.raises(HistoryError, match="no document with id 999999"):
        mark_report_received(rid, TODAY, document_id=999999)
    assert snapshot(rid) == before and Document.get_by_id(report.id).referral_id is None


# --- resend ----------------------------------------------------------------------------------------------------


def test_resend_a_failed_referral_queues_a_new_message(seeded):
    rid = seeded_id("failed")
    old = Referral.get_by_id(rid)
    row = resend_referral(rid, username="frontdesk")
    assert row.status == "queued" and row.status_reason == ""
    assert row.message_id and row.message_id != old.message_id
    assert row.message_id.startswith("<") and row.message_id.endswith(".example>")
    jobs = list(OutboxJob.select().where(OutboxJob.referral == rid))
    pending = [(j.state, j.channel, j.due_at) for j in jobs if j.state == "pending"]
    assert pending == [("pending", old.channel, dt.datetime(2026, 11, 2, 10))]
    new_job = max(jobs, key=lambda j: j.id)
    event = ReferralEvent.select().where(ReferralEvent.referral == rid).order_by(ReferralEvent.id.desc()).get()
    assert (event.kind, event.detail) == ("queued", "resent by frontdesk")
    audit = AuditEvent.select().order_by(AuditEvent.id.desc()).get()
    assert (audit.action, audit.object_id) == ("referral.resend", str(rid))
    assert f"job_id={new_job.id}" in audit.detail


@pytest.mark.parametrize("status", ["delivered", "sent", "cancelled", "report-received"])
def test_resend_refuses_anything_but_failed(seeded, status):
    rid = seeded_id(status)
    before = snapshot(rid)
    with pytest.raises(ValueError, match="cancelled; make a new referral" if status == "cancelled"
                       else "only a failed referral can be resent"):
        resend_referral(rid)
    assert snapshot(rid) == before


def test_resend_loses_a_race_with_a_worker_cleanly(seeded, monkeypatch):
    """The row was read as failed, but the database moved on before the update: nothing may happen."""
    rid = seeded_id("failed")
    stale = get_referral(rid)
    Referral.update(status="delivered").where(Referral.id == rid).execute()
    monkeypatch.setattr(rh, "get_referral", lambda _id: stale)
    before = snapshot(rid)
    with pytest.raises(HistoryError, match="changed meanwhile"):
        resend_referral(rid)
    assert snapshot(rid) == before


# --- cancel ------------------------------------------------------------------------------------------------------


def test_cancel_a_queued_referral_cancels_its_job(seeded):
    rid = new_referral().id
    row = cancel_referral(rid, username="hpark")
    assert row.status == "cancelled"
    assert [j.state for j in OutboxJob.select().where(OutboxJob.referral == rid)] == ["cancelled"]
    event = ReferralEvent.select().where(ReferralEvent.referral == rid).order_by(ReferralEvent.id.desc()).get()
    assert (event.kind, event.detail) == ("cancelled", "cancelled by hpark")
    audit = AuditEvent.select().order_by(AuditEvent.id.desc()).get()
    assert (audit.action, audit.object_id, audit.username) == ("referral.cancel", str(rid), "hpark")


@pytest.mark.parametrize("status, words", [
    ("sent", "only a referral still queued"),
    ("cancelled", "already cancelled"),
    ("failed", "only a referral still queued"),
])
def test_cancel_refuses_anything_not_queued(seeded, status, words):
    rid = seeded_id(status)
    before = snapshot(rid)
    with pytest.raises(ValueError, match=words):
        cancel_referral(rid)
    assert snapshot(rid) == before


def test_cancel_refuses_once_a_worker_claimed_the_job_and_rolls_back(seeded):
    rid = new_referral().id
    OutboxJob.update(state="claimed", claimed_by="worker-1").where(OutboxJob.referral == rid).execute()
    before = snapshot(rid)
    with pytest.raises(HistoryError, match="picked up for sending"):
        cancel_referral(rid)
    assert snapshot(rid) == before  # the status update inside the transaction was rolled back
    assert Referral.get_by_id(rid).status == "queued"


# --- one transaction -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["mark", "resend", "cancel"])
def test_each_action_is_all_or_nothing(seeded, monkeypatch, action):
    """The audit record is written last; if it fails, the status, event and job changes must vanish too."""
    rid = {"mark": lambda: seeded_id("delivered"), "resend": lambda: seeded_id("failed"),
           "cancel": lambda: new_referral().id}[action]()
    before = snapshot(rid)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(AuditEvent, "create", broken)
    run = {"mark": lambda: mark_report_received(rid, TODAY), "resend": lambda: resend_referral(rid),
           "cancel": lambda: cancel_referral(rid)}[action]
    with pytest.raises(RuntimeError, match="disk full"):
        run()
    monkeypatch.undo()
    assert snapshot(rid) == before


# --- the command line ------------------------------------------------------------------------------------------


def test_cli_referrals_json_has_history_with_events(data_dir, cli):
    code, out, err = cli("--data-dir", data_dir, "referrals", "--json")
    assert code == 0 and err == ""
    items = json.loads(out)
    assert len(items) >= 12
    for item in items:
        assert set(item) >= {"id", "mrn", "channel", "recipient", "status", "message_id", "events"}
        assert item["events"] and item["events"][0]["kind"] == "queued"
        assert all(set(e) == {"at", "kind", "detail"} for e in item["events"])
    failed = [i for i in items if i["status"] == "failed"]
    assert failed and failed[0]["events"][-1]["kind"] == "failed"
    assert [i["created_at"] for i in items] == sorted((i["created_at"] for i in items), reverse=True)


def test_cli_referrals_text_one_line_each_and_filters(data_dir, cli):
    code, out, _ = cli("--data-dir", data_dir, "referrals", "--status", "failed")
    lines = out.splitlines()
    assert code == 0 and lines
    assert all(" failed (" in line and "<seed" in line for line in lines)
    _, everything, _ = cli("--data-dir", data_dir, "referrals", "--json")
    first = json.loads(everything)[-1]["created_at"][:10]
    code, out, _ = cli("--data-dir", data_dir, "referrals", "--since", first, "--until", first, "--json")
    assert code == 0 and {i["created_at"][:10] for i in json.loads(out)} == {first}


def test_cli_referrals_errors_say_what_to_do(data_dir, cli):
    code, out, err = cli("--data-dir", data_dir, "referrals", "--status", "lost")
    assert code == 1 and out == "" and "use one of: open, queued" in err
    code, out, err = cli("--data-dir", data_dir, "referrals", "--since", "11/02/2026")
    assert code == 1 and out == "" and "use YYYY-MM-DD" in err
    code, out, err = cli("--data-dir", data_dir, "referrals", "--since", "2026-11-02", "--until", "2026-01-01")
    assert code == 1 and "after the To date" in err
