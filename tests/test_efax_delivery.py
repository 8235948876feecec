"""Fax referrals through the outbox worker, end to end against the loopback Phaxio: the stored packet PDF
reaches the provider, statuses are polled until final, a busy line is redialled after the configured delays
and a bad number fails at once, each attempt a ReferralEvent, and one fax per number is in flight."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json

import pytest
from pypdf import PdfReader

from documents.packet import build_attachments
from loopback_phaxio import LoopbackPhaxio
from models import clock
from models.config import Config
from models.documents import referral_files
from models.outbox import claim_due_jobs
from models.patients import Note
from models.referrals import OutboxJob, Referral, ReferralEvent
from models.referring import ReferralDraft, create_referral, faxed_before
from transports.outbox import OutboxWorker

NUMBER = "2175550142"  # (217) 555-0142: a fictional number in a real area code
ENV = {"PHAXIO_API_KEY": "test-key", "PHAXIO_API_SECRET": "test-secret"}


@pytest.fixture
def phaxio():
    with LoopbackPhaxio(polls_to_final=2) as server:
        yield server


def fax_config(tmp_path, server, **efax) -> Config:
    section = {"provider": "phaxio", "api_url": server.url, "retry_delays": [120, 300], "poll_seconds": 10,
               **efax}
    return Config(path=None, data_dir=tmp_path, database_url="", values={"efax": section})


def fax_referral(number: str = NUMBER, note: Note | None = None) -> Referral:
    note = note or Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).first()
    draft = ReferralDraft(patient_id=note.patient_id, note_id=note.id, channel="efax", recipient=number,
                          recipient_name="Dr. Ana Ruiz", reason="Palpitations")
    return create_referral(draft, build_attachments(draft))


def drain(config: Config, *, until: dt.datetime | None = None, step: float = 10):
    """Run the worker, moving the frozen clock on by `step` seconds between rounds (polls come due), until
    nothing is due before `until`."""
    worker = OutboxWorker(config, env=ENV)
    summaries = []
    while True:
        summaries.append(asyncio.run(worker.run_once()))
        due = OutboxJob.select().where(OutboxJob.state.in_(("pending", "waiting")), OutboxJob.channel == "efax")
        nxt = min((job.due_at for job in due), default=None)
        if nxt is None or (until is not None and nxt > until):
            return summaries
        clock.freeze(max(clock.now() + dt.timedelta(seconds=step), nxt))


def events(referral: Referral) -> list[tuple[str, str]]:
    return [(e.kind, e.detail) for e in ReferralEvent.select().where(ReferralEvent.referral == referral.id)
            .order_by(ReferralEvent.id)]


def event_id(referral: Referral, kind: str) -> int:
    return ReferralEvent.get(ReferralEvent.referral == referral.id, ReferralEvent.kind == kind).id


def test_a_fax_goes_out_as_the_stored_pdf_and_is_delivered_when_phaxio_says_success(seeded, tmp_path, phaxio):
    referral = fax_referral()
    drain(fax_config(tmp_path, phaxio))
    referral = Referral.get_by_id(referral.id)
    assert referral.status == "delivered" and referral.delivered_at is not None
    [fax] = phaxio.faxes
    [stored] = referral_files(referral.id)
    assert fax.to == "+12175550142" and fax.pdf == bytes(stored.content)
    text = PdfReader(io.BytesIO(fax.pdf)).pages[0].extract_text()
    assert "CONFIDENTIALITY NOTICE" in text and "Page 1 of" in text
    assert fax.header_text and len(fax.header_text) <= 50
    kinds = [kind for kind, _ in events(referral)]
    assert kinds[:3] == ["queued", "sending", "sent"] and kinds[-1] == "delivered"
    assert "fax handed to phaxio" in events(referral)[2][1] and "attempt 1 of 3" in events(referral)[2][1]
    assert faxed_before(NUMBER)


def test_busy_twice_then_success_is_redialled_after_the_configured_delays(seeded, tmp_path, phaxio):
    phaxio.script("+12175550142", ["busy", "busy", "success"])
    config = fax_config(tmp_path, phaxio)
    referral = fax_referral()
    start = clock.now()
    drain(config, until=start + dt.timedelta(seconds=60))  # the first fax, busy, and nothing more yet
    referral = Referral.get_by_id(referral.id)
    assert referral.status == "queued" and "Busy" in referral.status_reason
    job = OutboxJob.get(OutboxJob.referral == referral.id)
    assert job.state == "pending" and job.due_at >= start + dt.timedelta(seconds=120)
    assert len(phaxio.faxes) == 1
    drain(config)
    referral = Referral.get_by_id(referral.id)
    assert referral.status == "delivered" and len(phaxio.faxes) == 3
    retries = [detail for kind, detail in events(referral) if kind == "retry"]
    assert len(retries) == 2 and all("Busy" in detail for detail in retries)
    assert "attempt 1 of 3" in retries[0] and "attempt 2 of 3" in retries[1]
    sent = [detail for kind, detail in events(referral) if kind == "sent"]
    assert [("attempt 1" in sent[0]), ("attempt 2" in sent[1]), ("attempt 3" in sent[2])] == [True] * 3
    first, second, third = sorted(phaxio.faxes, key=lambda f: f.id)
    assert first.pdf == second.pdf == third.pdf


def test_busy_every_time_fails_after_the_cap(seeded, tmp_path, phaxio):
    phaxio.script("+12175550142", ["busy", "no-answer", "busy", "success"])
    referral = fax_referral()
    drain(fax_config(tmp_path, phaxio))
    referral = Referral.get_by_id(referral.id)
    assert referral.status == "failed" and len(phaxio.faxes) == 3
    assert referral.status_reason == "fax failed: not delivered after 3 attempts: Busy"
    assert not faxed_before(NUMBER)


@pytest.mark.parametrize("outcome, words", [("bad-number", "Invalid number"),
                                            ("conversion", "Failed to normalize PDF document")])
def test_a_bad_number_or_a_document_phaxio_cannot_convert_fails_at_once(seeded, tmp_path, phaxio, outcome, words):
    phaxio.script("+12175550142", [outcome, "success"])
    referral = fax_referral()
    drain(fax_config(tmp_path, phaxio))
    referral = Referral.get_by_id(referral.id)
    assert referral.status == "failed" and words in referral.status_reason and len(phaxio.faxes) == 1
    assert [kind for kind, _ in events(referral)].count("retry") == 0


def test_phaxio_refusing_the_credentials_fails_the_fax_with_what_to_check(seeded, tmp_path, phaxio):
    referral = fax_referral()
    config = fax_config(tmp_path, phaxio)
    summary = asyncio.run(OutboxWorker(config, env={**ENV, "PHAXIO_API_SECRET": "wrong"}).run_once())
    referral = Referral.get_by_id(referral.id)
    assert summary.failed == 1 and referral.status == "failed"
    assert "PHAXIO_API_KEY" in referral.status_reason and phaxio.faxes == []


def test_phaxio_down_leaves_the_fax_queued_for_a_later_try(seeded, tmp_path):
    from direct_pki import closed_port

    referral = fax_referral()
    config = Config(path=None, data_dir=tmp_path, database_url="",
                    values={"efax": {"provider": "phaxio", "api_url": f"http://127.0.0.1:{closed_port()}/v2.1"}})
    summary = asyncio.run(OutboxWorker(config, env=ENV).run_once())
    referral = Referral.get_by_id(referral.id)
    assert summary.retried == 1 and referral.status == "queued" and referral.status_reason.startswith("phaxio:")


def test_efax_not_set_up_leaves_faxes_queued_and_says_why(seeded, tmp_path):
    referral = fax_referral()
    config = Config(path=None, data_dir=tmp_path, database_url="", values={})
    summary = asyncio.run(OutboxWorker(config, env={}).run_once())
    assert "eFax is not set up" in summary.not_ready
    assert Referral.get_by_id(referral.id).status == "queued"


def test_one_fax_in_flight_per_number(seeded, tmp_path, phaxio):
    notes = list(Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).limit(3))
    first, second = fax_referral(note=notes[0]), fax_referral(note=notes[1])
    other = fax_referral("3125550100", note=notes[2])
    claimed = claim_due_jobs("w1", ("efax",))
    assert sorted(job.referral_id for job in claimed) == sorted([first.id, other.id])
    assert claim_due_jobs("w2", ("efax",)) == []  # the second fax to 217-555-0142 waits for the first
    OutboxJob.update(state="pending", lease_until=None).execute()
    drain(fax_config(tmp_path, phaxio))
    assert {Referral.get_by_id(r.id).status for r in (first, second, other)} == {"delivered"}
    to_same = sorted((f for f in phaxio.faxes if f.to == "+12175550142"), key=lambda f: f.id)
    assert len(to_same) == 2
    assert to_same[1].polls == 0 or to_same[0].outcome == "success"


def test_the_cli_asks_for_the_number_again_before_the_first_fax_to_it(data_dir, cli):
    code, out, err = cli("--data-dir", data_dir, "search", "1000001", "--json")
    mrn = json.loads(out)[0][0]["mrn"]
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", mrn, "--via", "efax",
                         "--to", "(217) 555-0142")
    assert code == 1 and "nothing has been faxed to (217) 555-0142 before" in err and out == ""
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", mrn, "--via", "efax",
                         "--to", "(217) 555-0142", "--confirm-number", "217 555 0143")
    assert code == 1 and "is not the number given with --to" in err
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", mrn, "--via", "efax",
                         "--to", "(217) 555-0142", "--confirm-number", "+1 217 555 0142")
    assert code == 0 and out.strip().isdigit()
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", mrn, "--via", "efax",
                         "--to", "(555) 123-0001")
    assert code == 1 and "no such area code" in err


# --- the email-to-fax gateway: the report comes back by email, through the inbound pipeline ---------------------

GATEWAY = "fax.example.net"


@pytest.fixture(scope="module")
def gateway_tls(tmp_path_factory):
    from direct_pki import make_ca, make_leaf, write_key, write_pem

    folder = tmp_path_factory.mktemp("gateway-tls")
    ca = make_ca("Fax Gateway Test CA")
    leaf = make_leaf(ca, dns=["localhost"], ips=["127.0.0.1"], cn="gateway", usage=None)
    return {"ca": str(write_pem(folder / "ca.pem", ca.cert)), "cert": str(write_pem(folder / "gw.pem", leaf.cert)),
            "key": str(write_key(folder / "gw.key", leaf.key))}


@pytest.fixture
def gateway(gateway_tls):
    from direct_pki import server_context
    from loopback_fax_gateway import FaxGateway

    with FaxGateway(GATEWAY, tls_context=server_context(gateway_tls["cert"], gateway_tls["key"])) as server:
        yield server


def gateway_config(tmp_path, server, tls) -> Config:
    return Config(path=None, data_dir=tmp_path, database_url="", values={
        "direct": {"address": "referrals@riverbend.example"},
        "smtp": {"host": "127.0.0.1", "port": server.port, "ca_file": tls["ca"], "timeout": 5},
        "efax": {"provider": "smtp-gateway", "gateway_domain": GATEWAY, "retry_delays": [120, 300],
                 "poll_seconds": 30, "report_timeout_minutes": 30},
    })


def reports_back(server, config: Config, count: int) -> list:
    """Wait for the gateway's reports and feed each to the receiving pipeline, as the listener would."""
    import time

    from transports.efax.reports import FaxReports
    from transports.inbound import receive_message

    deadline = time.monotonic() + 10
    while len(server.reports) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(server.reports) >= count
    return [receive_message(raw, fax_reports=FaxReports.from_config(config), channel="smtp")
            for raw in server.reports[count - 1:count]]


def test_through_the_gateway_busy_twice_then_success_each_report_matched_back(seeded, tmp_path, gateway,
                                                                             gateway_tls):
    gateway.script("12175550142", ["busy", "busy", "success"])
    config = gateway_config(tmp_path, gateway, gateway_tls)
    referral = fax_referral()
    worker = OutboxWorker(config, env={})
    for attempt in (1, 2, 3):
        summary = asyncio.run(worker.run_once())
        assert summary.sent == 1, summary.details
        assert Referral.get_by_id(referral.id).status == "sent"
        [outcome] = reports_back(gateway, config, attempt)
        assert outcome.outcome == "accepted" and outcome.matched_referral == referral.id
        if attempt < 3:
            assert outcome.reason == "fax not delivered yet: it will be sent again"
            assert Referral.get_by_id(referral.id).status == "queued"
            clock.freeze(clock.now() + dt.timedelta(seconds=(120, 300)[attempt - 1]))
    referral = Referral.get_by_id(referral.id)
    assert referral.status == "delivered" and len(gateway.faxes) == 3
    [stored] = referral_files(referral.id)
    assert all(fax.pdf == bytes(stored.content) and fax.number == "12175550142" for fax in gateway.faxes)
    assert len({fax.message_id for fax in gateway.faxes}) == 3  # each attempt its own Message-ID
    kinds = [kind for kind, _ in events(referral)]
    assert kinds.count("sent") == 3 and kinds.count("retry") == 2 and kinds[-1] == "delivered"
    pages = len(PdfReader(io.BytesIO(bytes(stored.content))).pages)
    assert f"{pages} page(s), attempt 3)" in events(referral)[-1][1]


def test_a_bad_number_report_fails_the_referral_and_a_second_copy_changes_nothing(seeded, tmp_path, gateway,
                                                                                   gateway_tls):
    from transports.efax.reports import FaxReports
    from transports.inbound import receive_message

    gateway.script("12175550142", ["bad-number"])
    config = gateway_config(tmp_path, gateway, gateway_tls)
    referral = fax_referral()
    asyncio.run(OutboxWorker(config, env={}).run_once())
    [outcome] = reports_back(gateway, config, 1)
    referral = Referral.get_by_id(referral.id)
    assert outcome.reason == "fax failed: the referral is marked failed"
    assert referral.status == "failed" and "fax failed:" in referral.status_reason
    again = gateway.reports[0].replace(b"<report-1@", b"<report-1-copy@")
    second = receive_message(again, fax_reports=FaxReports.from_config(config), channel="smtp")
    assert second.outcome == "rejected" and "no fax that is waiting" in second.reason
    assert Referral.get_by_id(referral.id).status == "failed"


def test_a_report_not_from_the_gateway_is_not_taken_as_one(seeded, tmp_path, gateway, gateway_tls):
    from transports.efax.reports import FaxReports
    from transports.inbound import receive_message

    config = gateway_config(tmp_path, gateway, gateway_tls)
    referral = fax_referral()
    asyncio.run(OutboxWorker(config, env={}).run_once())
    import time

    while not gateway.reports:
        time.sleep(0.02)
    forged = gateway.reports[0].replace(f"reports@{GATEWAY}".encode(), b"reports@fax.attacker.example")
    outcome = receive_message(forged, fax_reports=FaxReports.from_config(config), channel="smtp")
    assert outcome.outcome == "rejected" and "not encrypted" in outcome.reason
    assert Referral.get_by_id(referral.id).status == "sent"


def test_no_report_within_the_timeout_fails_the_fax_with_what_to_do(seeded, tmp_path, gateway, gateway_tls):
    config = gateway_config(tmp_path, gateway, gateway_tls)
    referral = fax_referral()
    worker = OutboxWorker(config, env={})
    asyncio.run(worker.run_once())
    clock.freeze(clock.now() + dt.timedelta(minutes=31))
    asyncio.run(worker.run_once())
    referral = Referral.get_by_id(referral.id)
    assert referral.status == "failed"
    assert referral.status_reason.startswith("no delivery report from smtp-gateway within 30 minutes")
