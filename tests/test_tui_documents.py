"""Documents in the TUI: the chart's pane, the practice's list, and the viewer — snapshots and keyboard flows."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, TextArea

from models.documents import Attachment, file_document
from models.patients import Patient
from models.referrals import AuditEvent
from tui.app import ReferdeskApp
from tui.dialogs.save_copy import SaveCopyDialog
from tui.screens.chart import ChartScreen
from tui.screens.document_view import DocumentViewScreen
from tui.screens.documents import PracticeDocumentsScreen
from tui.widgets.narrative import NarrativeTable, SectionHeading

SIZES = [(80, 24), (120, 40)]
EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "standards" / "cda" / "examples"
REFERRAL_NOTE = EXAMPLES / "hl7-c-cda-examples" / "Documents" / "Referral Note" / "Referral_Note.xml"
BAD_XML = EXAMPLES / "onc-negative" / "NegativeTesting_CCDS" / "NT_BadXml_r11_v2.xml"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
NOTE = "Encounter note 11/01/2026\n\nSeen for knee wound follow-up. [see attached]\nPlan: referral to wound care.\n"
size_ids = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")


class Docs:
    """The documents one patient and the practice have, filed oldest first (so listed in reverse)."""

    def __init__(self) -> None:
        patients = Patient.select().order_by(Patient.mrn)
        self.patient, self.other = patients[0], patients[1]
        self.mrn = self.patient.mrn

        def patient_file(filename, media_type, content, kind, title):
            return file_document(Attachment(filename, media_type, content, kind=kind, title=title),
                                 owner="patient", patient=self.patient).id

        self.ccda = patient_file("Referral_Note.xml", "text/xml", REFERRAL_NOTE.read_bytes(), "ccda",
                                 "Referral note from Dr Primary")
        self.text = patient_file("encounter-note.txt", "text/plain; charset=utf-8", NOTE.encode(), "note",
                                 "Encounter note 11/01/2026")
        self.bad = patient_file("consult-report.xml", "application/xml", BAD_XML.read_bytes(), "report",
                                "Consult report (damaged)")
        self.pdf = patient_file("referral-packet.pdf", "application/pdf", PDF, "note-pdf", "Referral packet")
        self.practice = file_document(Attachment("referral-policy.pdf", "application/pdf", PDF * 40, kind="other",
                                                 title="Referral policy 2026"), owner="practice").id


@pytest.fixture
def docs(seeded):
    return Docs()


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def chart(mrn: str, *keys: str):
    async def run_before(pilot) -> None:
        await pilot.pause()
        pilot.app.open_patient(mrn, section="documents")
        await settle(pilot)
        await pilot.press("3", *keys)
        await settle(pilot)

    return run_before


def viewer(document_id_of, *keys: str):
    async def run_before(pilot) -> None:
        await pilot.pause()
        pilot.app.push_screen(DocumentViewScreen(document_id_of()))
        await settle(pilot)
        if keys:
            await pilot.press(*keys)
            await settle(pilot)

    return run_before


# --- snapshots ---------------------------------------------------------------------------------------------


@size_ids
def test_snapshot_chart_documents(docs, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=chart(docs.mrn))


@size_ids
def test_snapshot_chart_without_documents(docs, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=chart(docs.other.mrn))


@size_ids
def test_snapshot_practice_documents(docs, snap_compare, size):
    async def run_before(pilot) -> None:
        await pilot.press("f4")
        await settle(pilot)

    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=run_before)


@size_ids
def test_snapshot_all_documents(docs, snap_compare, size):
    async def run_before(pilot) -> None:
        await pilot.press("f4")
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)

    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=run_before)


@size_ids
def test_snapshot_ccda_top(docs, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=viewer(lambda: docs.ccda))


@size_ids
def test_snapshot_ccda_later_section(docs, snap_compare, size):
    # Eight jumps: the MEDICATIONS section and its six-column table, wrapped to the terminal's width.
    keys = ["right_square_bracket"] * 8
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=viewer(lambda: docs.ccda, *keys))


@size_ids
def test_snapshot_parse_error(docs, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=viewer(lambda: docs.bad))


@size_ids
def test_snapshot_pdf_metadata(docs, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=viewer(lambda: docs.pdf))


@size_ids
def test_snapshot_plain_text(docs, snap_compare, size):
    assert snap_compare(ReferdeskApp(), terminal_size=size, run_before=viewer(lambda: docs.text))


# --- keyboard flows ----------------------------------------------------------------------------------------


async def open_chart_documents(app, pilot, mrn: str) -> DataTable:
    await pilot.pause()
    app.open_patient(mrn, section="documents")
    await settle(pilot)
    await pilot.press("3")
    await settle(pilot)
    table = app.screen.query_one("#documents-table", DataTable)
    assert table.has_focus
    return table


async def test_documents_are_listed_newest_first(docs):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_chart_documents(app, pilot, docs.mrn)
        keys = [int(table.coordinate_to_cell_key((row, 0)).row_key.value) for row in range(table.row_count)]
        assert keys == [docs.pdf, docs.bad, docs.text, docs.ccda]
        date, title, kind, media, size = (str(c) for c in table.get_row_at(3))
        assert (date, kind, media, size) == ("11/02/2026", "C-CDA", "XML", "135 KB")
        # A title too long for an 80-column chart is clipped so the row fits without scrolling sideways.
        assert title.startswith("Referral note fr") and title.endswith("…")
        assert table.virtual_size.width <= table.size.width


async def test_enter_opens_a_ccda_and_brackets_move_between_sections(docs):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_chart_documents(app, pilot, docs.mrn)
        await pilot.press("down", "down", "down", "enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DocumentViewScreen)
        headings = list(screen.query(SectionHeading))
        assert [h.section.title for h in headings[:3]] == ["ADVANCE DIRECTIVES", "ALLERGIES AND ADVERSE REACTIONS",
                                                          "ASSESSMENT"]
        assert len(headings) == 19 and screen.query(NarrativeTable)
        body = screen.query_one("#doc-body")
        assert body.scroll_y == 0 and "19 sections" in str(screen.query_one("#doc-title").content)
        assert headings[0].region.y < 24  # the first section starts on the first screen

        await pilot.press("right_square_bracket")
        assert screen.section_index == 0 and body.scroll_y == headings[0].virtual_region.y > 0
        await pilot.press("right_square_bracket", "n")
        await pilot.pause()
        assert screen.section_index == 2 and body.scroll_y == headings[2].virtual_region.y
        assert "3/19 ASSESSMENT" in str(screen.query_one("#doc-title").content)
        assert headings[2].region.y == body.region.y  # the section's heading is at the top of the view
        await pilot.press("left_square_bracket")
        assert screen.section_index == 1 and body.scroll_y == headings[1].virtual_region.y
        await pilot.press("p", "p")
        assert screen.section_index == -1 and body.scroll_y == 0

        await pilot.press(*["right_square_bracket"] * 25)  # past the end stays on the last section
        await pilot.pause()
        assert screen.section_index == 18 and body.scroll_y == body.max_scroll_y
        await pilot.press("left_square_bracket")
        assert screen.section_index == 17

        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ChartScreen)
        assert app.screen.query_one("#documents-table", DataTable).has_focus


async def test_scrolling_by_hand_keeps_the_section_position(docs):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(DocumentViewScreen(docs.ccda))
        await settle(pilot)
        screen = app.screen
        headings = list(screen.query(SectionHeading))
        body = screen.query_one("#doc-body")
        body.scroll_to(y=headings[4].virtual_region.y + 1, animate=False, immediate=True)
        await pilot.pause()
        assert screen.section_index == 4
        await pilot.press("right_square_bracket")
        assert screen.section_index == 5 and body.scroll_y == headings[5].virtual_region.y


async def test_a_document_that_fails_to_parse_shows_why_and_its_raw_text(docs):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(DocumentViewScreen(docs.bad))
        await settle(pilot)
        screen = app.screen
        error = screen.query_one(".doc-error")
        assert "not well-formed XML at line 59: error parsing attribute name" in str(error.content)
        assert not screen.query(TextArea)
        await pilot.press("right_square_bracket")  # no sections: nothing happens, nothing breaks
        await pilot.press("r")
        await pilot.pause()
        raw = screen.query_one("#doc-text", TextArea)
        assert raw.read_only and raw.text.startswith('<?xml version="1.0"?>') and raw.has_focus
        await pilot.press("x")  # read only: typing changes nothing
        assert raw.text == BAD_XML.read_bytes().decode()
        await pilot.press("r")
        await pilot.pause()
        assert not screen.query(TextArea) and screen.query_one(".doc-error")
        await pilot.press("escape")
        assert not isinstance(app.screen, DocumentViewScreen)


async def test_plain_text_is_shown_read_only(docs):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(DocumentViewScreen(docs.text))
        await settle(pilot)
        area = app.screen.query_one("#doc-text", TextArea)
        assert area.read_only and area.text == NOTE and area.has_focus
        await pilot.press("escape")
        assert not isinstance(app.screen, DocumentViewScreen)


async def test_save_a_pdf_copy_to_a_folder(docs, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # so the user can type "~/out"
    folder = tmp_path / "out"
    folder.mkdir()
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_chart_documents(app, pilot, docs.mrn)
        assert table.cursor_row == 0  # the PDF, newest
        await pilot.press("enter")
        await settle(pilot)
        assert "cannot be displayed in a terminal" in str(app.screen.query_one(".doc-note").content)

        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, SaveCopyDialog)
        await pilot.press("ctrl+u", *"~/out", "enter")
        await settle(pilot)
        assert isinstance(app.screen, DocumentViewScreen)
        copy = folder / "referral-packet.pdf"
        assert copy.read_bytes() == PDF
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert AuditEvent.select().where(AuditEvent.action == "document.save-copy",
                                         AuditEvent.object_id == str(docs.pdf)).count() == 1

        # Again to the same folder: refused, said in the dialog, the first copy untouched.
        copy.write_bytes(b"the user's own file")
        await pilot.press("s")
        await pilot.pause()
        assert app.screen.query_one("#save-folder", Input).value == "~/out"  # the last folder used
        await pilot.press("enter")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, SaveCopyDialog)
        assert "already exists; referdesk never overwrites a file" in str(dialog.query_one("#save-error").content)
        assert copy.read_bytes() == b"the user's own file"
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, DocumentViewScreen)


async def test_save_dialog_escape_writes_nothing_and_a_missing_folder_is_explained(docs, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "out").mkdir()
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(DocumentViewScreen(docs.pdf))
        await settle(pilot)
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("ctrl+u", *"~/out", "escape")
        await settle(pilot)
        assert isinstance(app.screen, DocumentViewScreen)
        assert list((tmp_path / "out").iterdir()) == []

        await pilot.press("s")
        await pilot.pause()
        await pilot.press("ctrl+u", *"~/nowhere", "enter")
        await settle(pilot)
        assert isinstance(app.screen, SaveCopyDialog)
        assert f"the folder {tmp_path / 'nowhere'} does not exist" in str(app.screen.query_one("#save-error").content)
        await pilot.press("escape")
        assert AuditEvent.select().where(AuditEvent.action == "document.save-copy").count() == 0


async def test_practice_documents_and_the_all_patients_toggle(docs):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("f4")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, PracticeDocumentsScreen)
        table = screen.query_one("#documents-table", DataTable)
        assert table.has_focus and table.row_count == 1
        assert str(table.get_row_at(0)[1]) == "Referral policy 2026"

        await pilot.press("a")
        await settle(pilot)
        assert table.row_count == 5
        assert [str(c.label) for c in table.columns.values()][0] == "Patient"
        owners = [str(table.get_row_at(r)[0]) for r in range(5)]
        patient = f"{docs.patient.last_name}, {docs.patient.first_name}"
        assert owners == ["Practice"] + [patient] * 4
        await pilot.press("a")
        await settle(pilot)
        assert table.row_count == 1

        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DocumentViewScreen) and app.screen.document_id == docs.practice
        await pilot.press("escape")
        await pilot.press("escape")
        assert not isinstance(app.screen, PracticeDocumentsScreen)


async def test_the_empty_chart_says_so(docs):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.open_patient(docs.other.mrn, section="documents")
        await settle(pilot)
        status = app.screen.query_one("#documents-status")
        assert str(status.content).startswith("No documents in this chart yet.")
        assert not app.screen.query_one("#documents-table").display
        await pilot.press("v")  # nothing to open: nothing happens
        assert isinstance(app.screen, ChartScreen)


async def test_a_resized_terminal_rewraps_tables_and_keeps_the_section(docs):
    app = ReferdeskApp()
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(DocumentViewScreen(docs.ccda))
        await settle(pilot)
        await pilot.press(*["right_square_bracket"] * 8)
        screen = app.screen
        wide = [c.width for c in screen.query(NarrativeTable)[4].columns.values()]
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        assert screen.section_index == 7
        assert "8/19 MEDICATIONS" in str(screen.query_one("#doc-title").content)
        narrow = [c.width for c in screen.query(NarrativeTable)[4].columns.values()]
        assert sum(narrow) < sum(wide) and sum(narrow) + 2 * len(narrow) <= 80


async def test_a_missing_document_is_said_not_a_blank_screen(docs):
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(DocumentViewScreen(99999))
        await settle(pilot)
        assert "no document with id 99999" in str(app.screen.query_one(".doc-error").content)
        await pilot.press("s")  # nothing loaded: nothing to save
        assert isinstance(app.screen, DocumentViewScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, DocumentViewScreen)


async def test_checks_findings_show_as_one_line_and_f_lists_them(seeded):
    """A received C-CDA that breaks rules says so above the document; f opens the list."""
    from textual.widgets import Static

    from models.documents import Attachment, file_document
    from models.patients import Patient
    from tui.app import ReferdeskApp
    from tui.screens.document_view import DocumentViewScreen

    patient = Patient.select().order_by(Patient.id).first()
    data = (Path(__file__).resolve().parents[2] / "shared" / "standards" / "cda" / "examples" / "hl7-c-cda-examples"
            / "Documents" / "Referral Note" / "Referral_Note.xml").read_bytes()
    document = file_document(Attachment("referral.xml", "application/xml", data, "report", "Referral"),
                             owner="patient", patient=patient)
    app = ReferdeskApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.push_screen(DocumentViewScreen(document.id))
        await app.workers.wait_for_complete()
        await pilot.pause()
        line = str(app.screen.query_one(".doc-findings", Static).content)
        assert line.startswith("⚠ Checks found") and "f lists them" in line
        await pilot.press("f")
        listed = str(app.screen.query_one(".doc-findings", Static).content)
        assert "57113-1" in listed and listed.count("•") >= 2
        await pilot.press("f")
        assert str(app.screen.query_one(".doc-findings", Static).content) == line
