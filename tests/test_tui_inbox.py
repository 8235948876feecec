"""The inbox in the TUI: snapshots at 80x24 and 120x40, and the keyboard flows, on real received messages — sealed
and trust-checked as in tests/test_receiving.py (a consultant's report filed to its referral, one quarantined
for an untrusted signer, one whose patient nobody could match) — in a temp-file SQLite database: F5, filter,
open, and attaching the unmatched one to a patient by keys; Esc leaving everything as it was."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from rich.color import ColorSystem
from textual.widgets import DataTable, Input, Select, Static

from direct_ca import http_server, pki  # noqa: F401 (fixtures)
from documents.viewing import document_rows
from models import clock
from models.inbox import attach_to_patient, inbox_row
from models.patients import Patient
from models.referral_history import get_referral
from models.referrals import AuditEvent, Document, InboundMessage, OutboxJob
from receiving_kit import (DIRECT, EVE_MRN, MYRA_MRN, ZOE_MRN, Site, ccda, inner_message, make_parties, make_site,
                           opener_for, seal)
from test_tui_readability import unreadable
from transports.direct.mime import Part
from transports.inbound import receive_message
from tui.app import ReferdeskApp
from tui.dialogs.attach_patient import AttachPatientDialog
from tui.dialogs.confirm import ConfirmDialog
from tui.screens.chart import ChartScreen
from tui.screens.document_view import DocumentViewScreen
from tui.screens.inbox import InboxScreen
from tui.screens.inbox_detail import InboxDetailScreen
from tui.screens.patient_search import PatientSearchScreen
from tui.widgets.documents_pane import DocumentsPane
from tui.widgets.result_list import ResultList
from pilot_keys import keys, press, settle

SIZES = [(80, 24), (120, 40)]
size_ids = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")

# Keys, from patient search: F5, then the filter (s, Enter opens it, a letter jumps to the choice, Enter).
TO_ALL = ("f5", "s", "enter", "end", "enter")
TO_QUARANTINED = ("f5", "s", "enter", "q", "enter")


# --- the messages -----------------------------------------------------------------------------------------------

@dataclass
class Inbox:
    site: Site
    quarantined: int  # untrusted signer
    filed: int  # Eve Betterhalf's report, closing her referral
    unfiled: int  # a C-CDA naming Isabella Jones, born 05/01/1947: nobody here by that name


@pytest.fixture(scope="module")
def parties(pki, tmp_path_factory):  # noqa: F811
    return make_parties(pki, tmp_path_factory.mktemp("inbox"))


def _report(n: int, attachments: list[Part], in_reply_to: str | None = None) -> bytes:
    return inner_message(message_id=f"<report-{n}@cardio.example.org>", attachments=attachments,
                         in_reply_to=in_reply_to)


@pytest.fixture
def inbox(db, parties, pki) -> Inbox:  # noqa: F811
    """Three messages received through the real pipeline (transports.inbound): the quarantined one yesterday
    afternoon, the other two this morning."""
    site = make_site()
    opener = opener_for(parties, pki)
    ambulatory = Part("CCDA_Ambulatory.xml", "text/xml",
                      (DIRECT / "ett" / "ccda" / "CCDA_Ambulatory.xml").read_bytes())  # Isabella Jones
    eve = Part("consult-note.xml", "text/xml", ccda("Betterhalf", "Eve", "19750501"))
    sent = [seal(_report(1, [ambulatory]), parties, signer=parties.stranger),
            seal(_report(2, [eve], f"<ref-{EVE_MRN}@direct.riverbend-family.example>"), parties,
                 signer=parties.partner),
            seal(_report(3, [ambulatory]), parties, signer=parties.partner)]
    ids = []
    for raw, at in zip(sent, (dt.datetime(2026, 11, 1, 16, 40), dt.datetime(2026, 11, 2, 10, 14),
                              dt.datetime(2026, 11, 2, 10, 21))):
        clock.freeze(at)
        receive_message(raw, opener=opener, channel="smtp")
        ids.append(InboundMessage.select().order_by(InboundMessage.id.desc()).get().id)
    clock.freeze(dt.datetime(2026, 11, 2, 10, 30))
    found = Inbox(site, *ids)
    assert [inbox_row(i).state for i in ids] == ["rejected", "filed", "unfiled"]
    return found


def snapshot_state(inbound_id: int) -> tuple:
    """Everything attaching could change."""
    message = InboundMessage.get_by_id(inbound_id)
    return (message.state, message.patient_id, message.referral_id, message.error,
            Document.select().where(Document.owner == "patient").count(),
            tuple(OutboxJob.select(OutboxJob.state).where(OutboxJob.inbound == inbound_id).tuples()),
            AuditEvent.select().where(~(AuditEvent.action.endswith(".list") | AuditEvent.action.endswith(".view")))
            .count())  # looking (a list or a message opened) is recorded, and is not a change


def referral_statuses(inbox: Inbox) -> dict[str, str]:
    return {mrn: get_referral(rid).status for mrn, rid in inbox.site.referrals.items()}


# --- driving ------------------------------------------------------------------------------------------------------

def table_of(app) -> DataTable:
    return app.screen.query_one("#inbox-table", DataTable)


def row_ids(table: DataTable) -> list[int]:
    return [int(table.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(table.row_count)]


def text_of(app, selector: str) -> str:
    """What a Static shows, as plain text (its markup rendered)."""
    return str(app.screen.query_one(selector, Static).render())


# --- snapshots ------------------------------------------------------------------------------------------------


@size_ids
def test_snapshot_inbox_all(inbox, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=keys(*TO_ALL))


@size_ids
def test_snapshot_quarantined_detail(inbox, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=keys(*TO_QUARANTINED, "enter"))


@size_ids
def test_snapshot_attach_dialog_with_results(inbox, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=keys("f5", "a", "n", "e", "down"))


# --- keyboard flows -----------------------------------------------------------------------------------------


async def test_f5_opens_the_to_be_filed_list_and_all_shows_every_message(inbox):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, "f5")
        assert isinstance(app.screen, InboxScreen)
        assert app.screen.query_one("#inbox-state", Select).value == "unfiled"  # something waits: that list
        table = table_of(app)
        assert row_ids(table) == [inbox.unfiled] and table.has_focus
        assert str(table.get_row_at(0)[-1]) == "To be filed"
        assert "1 message to be filed" in text_of(app, "#inbox-message")
        await press(pilot, "s", "enter", "end", "enter")
        table = table_of(app)
        assert row_ids(table) == [inbox.unfiled, inbox.filed, inbox.quarantined]  # newest first
        assert table.has_focus
        states = [str(table.get_row_at(i)[-1]) for i in range(3)]
        assert states[0] == "To be filed"
        assert states[1] == f"Filed → referral #{inbox.site.referrals[EVE_MRN]}"
        assert states[2].startswith("Quarantined: no") and states[2].endswith("…")
        assert str(table.get_row_at(1)[3]) == "Betterhalf, Eve"
        await press(pilot, "escape")
        assert isinstance(app.screen, PatientSearchScreen)


async def test_with_nothing_to_file_the_inbox_opens_on_every_message(inbox):
    attach_to_patient(inbox.unfiled, MYRA_MRN)
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, "f5")
        assert app.screen.query_one("#inbox-state", Select).value == "all"
        assert row_ids(table_of(app)) == [inbox.unfiled, inbox.filed, inbox.quarantined]
        await press(pilot, "s", "enter", "home", "enter")  # To be filed, chosen: empty, and says so
        assert table_of(app).row_count == 0
        assert text_of(app, "#inbox-message") == "Nothing waits to be filed."


async def test_ctrl_g_opens_the_inbox_from_the_search_box_too(inbox):
    """Ctrl+G, not Ctrl+E: text boxes keep Ctrl+E (end of line), and terminals without F5 still get here."""
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.focused is not None and app.focused.id == "query"
        await press(pilot, "ctrl+g")
        assert isinstance(app.screen, InboxScreen)


async def test_ctrl_g_opens_the_inbox_from_deep_in_a_chart(inbox):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.open_patient(MYRA_MRN)
        await settle(pilot)
        assert isinstance(app.screen, ChartScreen)
        await press(pilot, "ctrl+g")
        assert isinstance(app.screen, InboxScreen)
        assert len(app.screen_stack) == 3  # search, inbox: the chart was left
        await press(pilot, "ctrl+g")  # again: still the one inbox
        assert isinstance(app.screen, InboxScreen) and len(app.screen_stack) == 3


async def test_filter_to_quarantined_and_the_detail_gives_the_whole_reason(inbox):
    reason = InboundMessage.get_by_id(inbox.quarantined).error
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, *TO_QUARANTINED)
        table = table_of(app)
        assert row_ids(table) == [inbox.quarantined]
        assert str(table.get_row_at(0)[-1]).startswith("Quarantined: ")
        await press(pilot, "enter")
        assert isinstance(app.screen, InboxDetailScreen) and app.screen.inbound_id == inbox.quarantined
        assert "Quarantined" in text_of(app, "#message-title")
        state = text_of(app, "#f-state")
        assert state.startswith("Quarantined — ") and reason[1:] in state
        assert "Somebody Else's Root" in state and "not in your trust bundle" in state
        assert text_of(app, "#f-signer") == "— (no trusted signature)"
        assert "never acknowledged" in text_of(app, "#f-mdns")
        assert text_of(app, "#f-messageid") == "<report-1@cardio.example.org>"
        assert "kept as it came" in text_of(app, "#no-documents")
        before = snapshot_state(inbox.quarantined)
        assert "a" not in app.screen.active_bindings  # not offered: only a message to be filed can be attached
        await press(pilot, "a")
        assert isinstance(app.screen, InboxDetailScreen)
        assert snapshot_state(inbox.quarantined) == before
        await press(pilot, "escape", "a")  # on the list, the key says why not
        assert isinstance(app.screen, InboxScreen)
        assert any("was rejected (quarantined)" in n.message for n in app._notifications)


async def test_attach_an_unfiled_message_by_keys_files_it_to_the_patients_chart(inbox):
    myra = Patient.get(Patient.mrn == MYRA_MRN)
    assert document_rows(patient_id=myra.id, owner="patient") == []
    app = ReferdeskApp(username="frontdesk")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, "f5", "a")
        assert isinstance(app.screen, AttachPatientDialog)
        assert "Jones, Isabella · DOB 05/01/1947 · F" in text_of(app, "#attach-ccda")
        query = app.screen.query_one("#attach-query", Input)
        assert query.value == "Jones"  # the name its C-CDA gives, ready to be typed over
        await press(pilot, "m", "y")
        assert query.value == "my"
        results = app.screen.query_one("#attach-results", ResultList)
        assert results.keys == [MYRA_MRN]
        await press(pilot, "down")
        assert results.has_focus
        await press(pilot, "enter")
        assert isinstance(app.screen, ConfirmDialog)
        question = str(app.screen.query_one("#question", Static).content)
        assert question.startswith("File 2 documents from ruiz@cardio.example.org to Jones, Myra "
                                   f"(MRN {MYRA_MRN}, born 05/01/1947)?")
        assert "closed as report received" in question and "told the message reached the chart" in question
        assert inbox_row(inbox.unfiled).state == "unfiled"  # nothing yet
        await press(pilot, "y")
        assert isinstance(app.screen, InboxScreen)  # the dialog closed and the list read itself again
        assert table_of(app).row_count == 0
        assert text_of(app, "#inbox-message") == "Nothing waits to be filed."
        assert any(f"filed to Jones, Myra (MRN {MYRA_MRN})" in n.message and "closed" in n.message
                   for n in app._notifications)

        filed = inbox_row(inbox.unfiled)
        assert (filed.state, filed.mrn, filed.referral_id) == ("filed", MYRA_MRN, inbox.site.referrals[MYRA_MRN])
        assert get_referral(inbox.site.referrals[MYRA_MRN]).status == "report-received"
        audit = AuditEvent.select().where(AuditEvent.action == "inbound.attach").get()
        assert (audit.username, audit.object_id) == ("frontdesk", str(inbox.unfiled))

        # and the documents are in her chart, where staff look for them
        await press(pilot, "f2", *MYRA_MRN, "enter", "enter", "3")
        assert isinstance(app.screen, ChartScreen)
        pane = app.screen.query_one(DocumentsPane)
        assert sorted(r.title for r in pane.rows) == ["Get Well Clinic: Health Summary", "Message text"]


async def test_escape_from_the_attach_dialog_changes_nothing(inbox):
    before = snapshot_state(inbox.unfiled), referral_statuses(inbox)
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, "f5", "a", "n", "e", "down", "enter")
        assert isinstance(app.screen, ConfirmDialog)
        await press(pilot, "escape")  # the question: back to the dialog
        assert isinstance(app.screen, AttachPatientDialog)
        await press(pilot, "enter", "n")  # asked again, and No
        assert isinstance(app.screen, AttachPatientDialog)
        await press(pilot, "escape")
        assert isinstance(app.screen, InboxScreen)
        assert row_ids(table_of(app)) == [inbox.unfiled]
        assert (snapshot_state(inbox.unfiled), referral_statuses(inbox)) == before
        await press(pilot, "a", "escape")  # straight out
        assert isinstance(app.screen, InboxScreen)
    assert (snapshot_state(inbox.unfiled), referral_statuses(inbox)) == before


async def test_global_keys_do_not_throw_the_dialog_away(inbox):
    """A dialog is left with Esc: Textual gives a modal screen's keys only to the modal, so F3 and F5 do nothing."""
    before = snapshot_state(inbox.unfiled)
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, "f5", "a", "f3", "f5", "f2")
        assert isinstance(app.screen, AttachPatientDialog)
        assert [type(s).__name__ for s in app.screen_stack[1:]] == ["PatientSearchScreen", "InboxScreen",
                                                                    "AttachPatientDialog"]
    assert snapshot_state(inbox.unfiled) == before


async def test_a_refusal_while_the_dialog_was_open_is_shown_and_nothing_changes(inbox):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, "f5", "a", "n", "e", "down", "enter")
        assert isinstance(app.screen, ConfirmDialog)
        attach_to_patient(inbox.unfiled, ZOE_MRN, username="someone-else")  # filed from another desk meanwhile
        before = snapshot_state(inbox.unfiled), referral_statuses(inbox)
        await press(pilot, "y")
        assert isinstance(app.screen, AttachPatientDialog)  # still open, saying why
        status = app.screen.query_one("#attach-status", Static)
        assert status.has_class("-error")
        assert str(status.content).startswith("Nothing was changed: Message")
        assert "already filed to the chart of MRN 2000005" in str(status.content)
        assert any(n.severity == "error" and n.title == "Nothing changed" for n in app._notifications)
        assert (snapshot_state(inbox.unfiled), referral_statuses(inbox)) == before
        await press(pilot, "escape")
        assert isinstance(app.screen, InboxScreen)
        assert table_of(app).row_count == 0  # the list read itself again: nothing waits now


async def test_a_message_that_may_not_be_attached_says_why(inbox):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, *TO_ALL, "down", "a")
        assert isinstance(app.screen, InboxScreen)
        assert any("already filed to the chart of MRN 2000001" in n.message for n in app._notifications)


async def test_the_detail_opens_documents_and_attaches_from_there(inbox):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await press(pilot, "f5", "enter")
        assert isinstance(app.screen, InboxDetailScreen) and app.screen.inbound_id == inbox.unfiled
        assert text_of(app, "#f-ccda") == "Jones, Isabella · DOB 05/01/1947 · F"
        assert "dispatched: held until it is filed" in text_of(app, "#f-mdns")
        assert text_of(app, "#f-signer").startswith("SHA-256 ")
        documents = app.screen.query_one("#documents", DataTable)
        assert documents.has_focus and documents.row_count == 2
        await press(pilot, "down", "enter")
        assert isinstance(app.screen, DocumentViewScreen)
        assert "Get Well Clinic" in text_of(app, "#doc-title")
        await press(pilot, "escape", "a", "j", "o", "down", "enter", "y")
        assert isinstance(app.screen, InboxDetailScreen)
        assert "Filed → referral" in text_of(app, "#f-state")
        assert text_of(app, "#f-patient").startswith(f"Jones, Myra · MRN {MYRA_MRN}")
        assert "dispatched: pending" in text_of(app, "#f-mdns")
        await press(pilot, "escape")
        assert isinstance(app.screen, InboxScreen) and table_of(app).row_count == 0


@pytest.mark.parametrize("system", [ColorSystem.STANDARD, ColorSystem.EIGHT_BIT], ids=["16-colour", "256-colour"])
async def test_text_stays_visible_when_colours_are_reduced(inbox, system):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for step, sequence in (("inbox", TO_ALL), ("detail", ("end", "enter")), ("list", ("escape",)),
                               ("dialog", ("home", "a", "n", "e", "down"))):
            await press(pilot, *sequence)
            assert unreadable(app, system) == [], step
