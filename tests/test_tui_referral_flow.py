"""The referral workflow by keys only: chart → notes → note → ToC → Send Referral By → dialog → message → Send.

Snapshots cover every screen and dialog state at 80×24 and 120×40; Pilot tests drive the flow and check what
was stored. The database is a real seeded SQLite file; the clock is frozen (conftest).
"""

from __future__ import annotations

import io
import json

import pytest
from pypdf import PdfReader
from textual.widgets import Input, OptionList, SelectionList, Static

from models.contacts import Contact
from models.referrals import Document, OutboxJob, Referral, ReferralEvent
from tui.app import ReferdeskApp
from tui.dialogs.confirm import ConfirmDialog
from tui.dialogs.send_referral import SendReferralDialog
from tui.screens.chart import ChartScreen
from tui.screens.compose import ComposeScreen
from referral_nav import (SIZES, contact, open_chart, open_note, run, settle, signed_note, size_ids, to_compose,
                          to_dialog, type_text, unsigned_note)
from tui.screens.note_view import NoteViewScreen

# --- snapshots ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_face_sheet(seeded, direct_ready_config, snap_compare, size):
    mrn = signed_note().patient.mrn
    steps = lambda p: open_chart(p, mrn, by_keys=False)  # noqa: E731
    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_notes_pane(seeded, direct_ready_config, snap_compare, size):
    mrn = signed_note().patient.mrn

    async def steps(pilot):
        await open_chart(pilot, mrn, by_keys=False)
        await pilot.press("2")

    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_signed_note_with_transferring_chosen(seeded, direct_ready_config, snap_compare, size):
    note = signed_note()

    async def steps(pilot):
        await open_note(pilot, note, by_keys=False)
        await pilot.press("t")

    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_unsigned_note_says_why_it_cannot_be_sent(seeded, direct_ready_config, snap_compare, size):
    note = unsigned_note()
    steps = lambda p: open_note(p, note, by_keys=False)  # noqa: E731
    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_send_referral_dialog(seeded, direct_ready_config, snap_compare, size):
    note = signed_note()
    steps = lambda p: to_dialog(p, note, by_keys=False)  # noqa: E731
    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_send_referral_dialog_asks_for_a_reason(seeded, direct_ready_config, snap_compare, size):
    note = signed_note()

    async def steps(pilot):
        await to_dialog(pilot, note, by_keys=False)
        await pilot.press("tab", "ctrl+a", "ctrl+k", "ctrl+s")

    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_direct_message_window(seeded, direct_ready_config, snap_compare, size):
    note = signed_note()
    steps = lambda p: to_compose(p, note, by_keys=False)  # noqa: E731
    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_address_book_suggestions(seeded, direct_ready_config, snap_compare, size):
    note, verified = signed_note(), contact("verified")

    async def steps(pilot):
        await to_compose(pilot, note, by_keys=False)
        await type_text(pilot, verified.name[:3], by_keys=False)

    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
@pytest.mark.parametrize("case", ["verified", "no-certificate", "expired", "untrusted", "revoked", "malformed",
                                  "dns-error"])
def test_snapshot_recipient_verdicts(seeded, direct_ready_config, direct_dns, snap_compare, size, case):
    """Each verdict of the real check (loopback DNS publishing the seeded contacts' certificates)."""
    note = signed_note()
    typed = {
        "verified": lambda: contact("verified").direct_address,
        "no-certificate": lambda: "someone@direct.unknown-clinic.example",
        "expired": lambda: contact("invalid", "expired").direct_address,
        "untrusted": lambda: contact("invalid", "not trusted").direct_address,
        "revoked": lambda: contact("invalid", "revoked").direct_address,
        "malformed": lambda: "dr.smith@@direct example",
        "dns-error": lambda: contact("verified").direct_address,
    }[case]()

    async def steps(pilot):
        await to_compose(pilot, note, by_keys=False)
        if case == "dns-error":
            direct_dns.stop()
        await type_text(pilot, typed, by_keys=False)
        await pilot.press("enter")

    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_find_in_directory(seeded, direct_ready_config, snap_compare, size):
    note = signed_note()

    async def steps(pilot):
        await to_compose(pilot, note, by_keys=False)
        await pilot.press("f6")
        await type_text(pilot, "cardio", by_keys=False)

    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_efax_window(seeded, direct_ready_config, snap_compare, size):
    note = signed_note()
    steps = lambda p: to_compose(p, note, "f", by_keys=False)  # noqa: E731
    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_print_window(seeded, direct_ready_config, snap_compare, size, tmp_path):
    note = signed_note()

    async def steps(pilot):
        await to_compose(pilot, note, "p", by_keys=False)
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(pilot, "/tmp/referrals-snapshot", by_keys=False)
        await pilot.press("enter")

    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_queued_outcome_on_the_note(seeded, direct_ready_config, snap_compare, size):
    note, verified = signed_note(), contact("verified")

    async def steps(pilot):
        await to_compose(pilot, note, by_keys=False)
        await type_text(pilot, verified.direct_address, by_keys=False)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("ctrl+s")

    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


@pytest.mark.parametrize("size", SIZES, ids=size_ids)
def test_snapshot_help(seeded, direct_ready_config, snap_compare, size):
    note = signed_note()

    async def steps(pilot):
        await open_note(pilot, note, by_keys=False)
        await pilot.press("f1")

    assert snap_compare(ReferdeskApp(config=direct_ready_config), terminal_size=size, run_before=run(steps))


# --- keyboard flows -------------------------------------------------------------------------------------


@pytest.fixture
def hisp(tmp_path):
    """A real SMTP server with STARTTLS on 127.0.0.1 playing the practice's HISP, and its CA file."""
    from direct_pki import make_ca, make_leaf, server_context, write_key, write_pem
    from loopback_smtp import RecordingSmtp

    ca = make_ca("HISP TLS CA")
    leaf = make_leaf(ca, dns=["localhost"], ips=["127.0.0.1"], cn="hisp", usage=None)
    context = server_context(write_pem(tmp_path / "hisp.pem", leaf.cert), write_key(tmp_path / "hisp.key", leaf.key))
    with RecordingSmtp(tls_context=context) as server:
        server.ca_file = write_pem(tmp_path / "hisp-ca.pem", ca.cert)
        yield server


@pytest.fixture
def sending_config(direct_ready_config, direct_world, direct_dns, hisp):
    """direct_ready_config with the in-app outbox worker on and the loopback HISP as smart host."""
    from direct_site import config_text
    from models.config import load_config

    path = direct_ready_config.path
    path.write_text(config_text(direct_world, direct_dns, smtp_port=hisp.port, in_app_worker=True)
                    .replace("timeout = 5\n", f'timeout = 5\nca_file = "{hisp.ca_file}"\n', 1))
    return load_config(path, db_url=direct_ready_config.database_url, env={})


async def test_full_flow_by_keys_verifies_for_real_and_sends_through_the_hisp(seeded, sending_config, hisp):
    """The whole loop by keys against loopback DNS (certificate discovery and trust) and SMTP (the HISP)."""
    note, chosen = signed_note(), contact("verified")
    app = ReferdeskApp(config=sending_config, username="frontdesk")
    async with app.run_test(size=(80, 24)) as pilot:
        await to_dialog(pilot, note)
        assert isinstance(app.screen, SendReferralDialog)
        sections = app.screen.query_one("#sections", SelectionList)
        assert len(sections.selected) == 13  # every Summary of Care item starts ticked
        await pilot.press("down", "down", "down", "space")  # untick Immunizations
        await pilot.press("down", "down", "down", "down", "down", "space")  # untick Goals
        await pilot.press("tab", "ctrl+a", "ctrl+k", *"Cardiology evaluation")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, ComposeScreen)

        await pilot.press(*chosen.name[:4])
        await pilot.pause()
        suggestions = app.screen.query_one("#suggestions", OptionList)
        assert suggestions.option_count >= 1
        assert chosen.name in str(suggestions.get_option_at_index(0).prompt)
        await pilot.press("down", "enter")
        assert app.screen.query_one("#to", Input).value == chosen.direct_address
        await settle(pilot)
        verdict = str(app.screen.query_one("#verdict", Static).content)
        assert verdict == ("✓ verified — address-bound certificate from Referdesk Test Trust Anchor, valid until "
                           "01/01/2028")
        await pilot.press("ctrl+s")
        await settle(pilot)

        assert isinstance(app.screen, NoteViewScreen)
        outcome = app.screen.query_one("#outcome", Static)
        for _ in range(100):  # the in-app worker sends it; the banner follows
            if str(outcome.content).startswith("Successfully Sent"):
                break
            await pilot.pause(0.1)
        assert str(outcome.content).startswith("Successfully Sent — referral #")

        await pilot.press("f3")
        await settle(pilot)
        from tui.screens.referrals import ReferralsScreen

        assert isinstance(app.screen, ReferralsScreen)
        referral = Referral.select().where(Referral.note == note.id).get()
        assert referral.status == "sent"
        table = app.screen.query_one("#referrals-table")
        row = [str(cell) for cell in table.get_row(str(referral.id))]
        assert "Sent" in " ".join(row)

    assert referral.recipient == chosen.direct_address
    assert referral.contact_id == chosen.id
    # the audit log: the check of the address by whoever typed it, the hand-over by the worker
    from models.referrals import AuditEvent

    checks = AuditEvent.select().where(AuditEvent.action == "direct.verify",
                                       AuditEvent.object_id == chosen.direct_address.lower())
    assert {(r.username, r.outcome) for r in checks} == {("frontdesk", "ok")}
    handed = AuditEvent.get(AuditEvent.action == "referral.direct", AuditEvent.object_id == str(referral.id))
    assert (handed.username, handed.outcome) == ("worker", "ok")
    assert referral.direction == "transferring" and referral.channel == "direct"
    assert json.loads(referral.excluded_sections) == ["goals", "immunizations"]
    assert referral.reason == "Cardiology evaluation"
    assert referral.message_id.startswith("<") and referral.message_id.endswith(">")
    assert OutboxJob.select().where(OutboxJob.referral == referral, OutboxJob.state == "done").count() == 1
    [received] = hisp.received
    assert (received.rcpt_tos, received.tls) == ([chosen.direct_address], True)
    assert f"Message-ID: {referral.message_id}".encode() in received.content
    documents = Document.select().where(Document.referral == referral)
    assert sorted((d.owner, d.kind) for d in documents) == sorted(
        (owner, kind) for owner in ("patient", "practice") for kind in ("note", "ccda", "xdm", "message"))
    filed = {d.kind: d for d in documents if d.owner == "patient"}
    assert all(d.patient_id == note.patient_id for d in filed.values())
    note_pdf = PdfReader(io.BytesIO(bytes(filed["note"].content)))
    assert "Chief Complaint" in note_pdf.pages[0].extract_text() and filed["note"].media_type == "application/pdf"
    assert b"<ClinicalDocument" in bytes(filed["ccda"].content) and b"57133-1" in bytes(filed["ccda"].content)
    # The two unticked items left the document: no immunization or goal entries went out.
    from lxml import etree

    ccda = etree.fromstring(bytes(filed["ccda"].content))
    v3 = {"v3": "urn:hl7-org:v3"}
    for code in ("11369-6", "61146-7"):  # Immunizations, Goals
        for section in ccda.xpath(f"//v3:section[v3:code/@code='{code}']", namespaces=v3):
            assert section.get("nullFlavor") == "NI" and not section.findall("v3:entry", v3)
    assert [e.kind for e in ReferralEvent.select().where(ReferralEvent.referral == referral)] == [
        "queued", "sending", "sent"]
    assert Contact.get_by_id(chosen.id).cert_fingerprint  # the address book remembers the certificate checked


async def test_send_is_impossible_until_the_recipient_is_verified(seeded, direct_ready_config):
    note, bad = signed_note(), contact("invalid", "no certificate")
    app = ReferdeskApp(config=direct_ready_config)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_compose(pilot, note)
        await pilot.press(*bad.direct_address, "enter")
        await settle(pilot)
        verdict = str(app.screen.query_one("#verdict", Static).content)
        assert verdict == ("✗ Invalid Direct Address: No Direct certificate is published for this address: it "
                           "is not a Direct address, or its HISP does not publish certificates.")
        assert app.screen.query_one("#send").disabled
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, ComposeScreen)
        await pilot.press("shift+tab", "ctrl+a", "ctrl+k", *"not an address", "tab")
        await settle(pilot)
        assert str(app.screen.query_one("#verdict", Static).content).startswith(
            "✗ Invalid Direct Address: malformed")
    assert Referral.select().where(Referral.note == note.id).count() == 0


async def test_escape_backs_out_of_every_step_without_storing_anything(seeded, direct_ready_config):
    note = signed_note()
    before = (Referral.select().count(), Document.select().count(), OutboxJob.select().count())
    app = ReferdeskApp(config=direct_ready_config)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_compose(pilot, note)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, NoteViewScreen)
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, SendReferralDialog)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, NoteViewScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ChartScreen)
    assert (Referral.select().count(), Document.select().count(), OutboxJob.select().count()) == before


async def test_unsigned_note_cannot_start_a_referral(seeded, direct_ready_config):
    note = unsigned_note()
    app = ReferdeskApp(config=direct_ready_config)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_note(pilot, note)
        assert isinstance(app.screen, NoteViewScreen)
        text = str(app.screen.query_one("#unsigned", Static).content)
        assert text == (f"This note is unsigned: only signed notes can be sent. Ask {note.author.display_name} "
                        "to sign it.")
        await pilot.press("t", "d", "f", "p")
        await pilot.pause()
        assert isinstance(app.screen, NoteViewScreen)


async def test_find_in_directory_fills_the_to_field(seeded, direct_ready_config):
    note = signed_note()
    app = ReferdeskApp(config=direct_ready_config)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_compose(pilot, note)
        await pilot.press("f6", *"cardio")
        await settle(pilot)
        table = app.screen.query_one("#dir-results")
        assert table.row_count > 0
        expected = str(table.get_row_at(0)[1])
        await pilot.press("down", "enter")
        await settle(pilot)
        assert isinstance(app.screen, ComposeScreen)
        assert app.screen.query_one("#to", Input).value == expected


async def test_efax_needs_a_valid_number_and_a_cover_sheet_name(seeded, direct_ready_config):
    note = signed_note()
    app = ReferdeskApp(config=direct_ready_config)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_compose(pilot, note, "f")
        await pilot.press(*"555-0100", "enter")
        await settle(pilot)
        assert "needs 10 digits" in str(app.screen.query_one("#verdict", Static).content)
        await pilot.press("shift+tab", "ctrl+a", "ctrl+k", *"(217) 555-0142", "enter")
        await settle(pilot)
        assert str(app.screen.query_one("#verdict", Static).content) == "✓ verified — fax number (217) 555-0142"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "cover sheet" in str(app.screen.query_one("#outcome", Static).content)
        await pilot.press(*"Dr. Ana Ruiz", "ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)  # nothing faxed to this number before: read it back
        assert "(217) 555-0142 the fax number of Dr. Ana Ruiz?" in str(app.screen.query_one("#question").content)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, ComposeScreen) and not Referral.select().where(
            Referral.recipient == "2175550142").exists()
        await pilot.press("ctrl+s")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert isinstance(app.screen, NoteViewScreen)
    referral = Referral.select().where(Referral.channel == "efax").order_by(Referral.id.desc()).first()
    assert (referral.recipient, referral.recipient_name, referral.status) == ("2175550142", "Dr. Ana Ruiz", "queued")


async def test_keymap_from_the_config_file_remaps_a_binding(seeded, tmp_path):
    from models.config import load_config

    config_file = tmp_path / "config.toml"
    config_file.write_text('[keymap]\n"app.help" = "f9"\n')
    app = ReferdeskApp(config=load_config(config_file, db_url="sqlite:////unused.db", env={}))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("f9")
        await pilot.pause()
        from tui.dialogs.help import HelpDialog

        assert isinstance(app.screen, HelpDialog)
        await pilot.press("escape")
        await pilot.press("f1")
        await pilot.pause()
        assert not isinstance(app.screen, HelpDialog)


async def test_first_use_of_direct_opens_the_set_up_and_leaving_it_sends_nothing(seeded):
    from tui.screens.direct_setup import DirectSetupScreen

    note = signed_note()
    before = Referral.select().count()
    app = ReferdeskApp()  # no configuration: Direct has never been set up
    async with app.run_test(size=(80, 24)) as pilot:
        await open_note(pilot, note, by_keys=False)
        await pilot.press("t", "d")
        await pilot.pause()
        assert isinstance(app.screen, DirectSetupScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, NoteViewScreen)
        await pilot.press("f")  # eFax needs no Direct identity
        await pilot.pause()
        assert isinstance(app.screen, SendReferralDialog)
    assert Referral.select().count() == before


async def test_global_keys_do_not_throw_away_a_message_being_written(seeded, direct_ready_config):
    note = signed_note()
    app = ReferdeskApp(config=direct_ready_config)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_compose(pilot, note, by_keys=False)
        await type_text(pilot, "dr.who@direct", by_keys=False)
        for key in ("f2", "f3", "f4"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, ComposeScreen)
        assert app.screen.query_one("#to", Input).value == "dr.who@direct"
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("f2")
        await pilot.pause()
        from tui.screens.patient_search import PatientSearchScreen

        assert isinstance(app.screen, PatientSearchScreen)


async def test_the_chart_shows_the_new_referral_and_its_documents_when_the_user_comes_back(seeded,
                                                                                            direct_ready_config):
    note, chosen = signed_note(), contact("verified")
    app = ReferdeskApp(config=direct_ready_config)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_compose(pilot, note, by_keys=False)
        await type_text(pilot, chosen.direct_address, by_keys=False)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("ctrl+s")
        await settle(pilot)
        await pilot.press("escape")  # note view -> chart
        await settle(pilot)
        assert isinstance(app.screen, ChartScreen)
        referral = Referral.select().where(Referral.note == note.id).get()
        await pilot.press("4")
        await settle(pilot)
        assert app.screen.query_one("#referrals-table").get_row(str(referral.id))
        await pilot.press("3")
        await settle(pilot)
        documents = app.screen.query_one("#documents DataTable")
        filed = Document.select().where(Document.referral == referral, Document.owner == "patient").count()
        assert filed >= 1 and documents.row_count == filed  # the patient's copies, not the practice's
