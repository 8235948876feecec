"""Download/Print end to end: `referdesk send --via print` saves the packet (owner-only, never over an existing
file, with the C-CDA and XDM when asked), prints it through CUPS's `lp` when a printer is chosen, and says what
went wrong when either cannot be done. Also the packet's text snapshot: what a fax machine or printer receives,
compared as text (pypdf), not pixels."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest
from pypdf import PdfReader

from fake_cups import failing_lp, recording_lp
from models.db import close_database, open_database, sqlite_url
from models.referrals import Document, Referral, ReferralEvent

SNAPSHOT = Path(__file__).parent / "data" / "referral_packet" / "fax-packet.txt"  # text, outside syrupy's folder


@pytest.fixture
def mrn(data_dir, cli):
    code, out, err = cli("--data-dir", data_dir, "search", "1000001", "--json")
    return json.loads(out)[0][0]["mrn"]


@pytest.fixture
def lp_on_path(tmp_path, monkeypatch):
    """A stand-in `lp` first on PATH (CUPS does not run in CI); returns its folder (argv lands in lp-argv.json)."""
    folder = tmp_path / "bin"
    folder.mkdir()

    def install(make) -> Path:
        (folder / "lp").unlink(missing_ok=True)
        (folder / "lp").symlink_to(make(folder))
        return folder

    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return install


def stored(data_dir: Path, referral_id: int):
    open_database(sqlite_url(data_dir / "referdesk.db"))
    try:
        referral = Referral.get_by_id(referral_id)
        documents = {d.filename: bytes(d.content) for d in Document.select().where(
            Document.referral == referral_id, Document.owner == "patient", Document.kind != "message")}
        events = [(e.kind, e.detail) for e in referral.events.order_by(ReferralEvent.id)]
        return referral, documents, events
    finally:
        close_database()


def pdf_text(content: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(content)).pages]


def test_send_via_print_saves_the_packet_owner_only_in_a_new_folder(data_dir, cli, mrn, tmp_path):
    folder = tmp_path / "out" / "referrals"
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", mrn, "--via", "print", "--to", folder,
                         "--reason", "Palpitations on exertion")
    assert code == 0, err
    referral, documents, events = stored(data_dir, int(out))
    [name] = documents
    saved = folder / name
    assert [p.name for p in folder.iterdir()] == [name] and saved.read_bytes() == documents[name]
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert referral.status == "delivered" and events[-1] == ("delivered", f"saved {name} in {folder}")
    assert f"saved {name} in {folder}" in err
    pages = pdf_text(saved.read_bytes())
    patient = referral.patient
    first = pages[0]
    assert f"{patient.last_name}" in first and patient.birth_date.strftime("%m/%d/%Y") in first
    assert "Palpitations on exertion" in "\n".join(pages)
    assert f"Page 1 of {len(pages)}" in first and "CONFIDENTIALITY NOTICE" not in first
    assert all(f"Page {n} of {len(pages)}" in text for n, text in enumerate(pages, 1))
    for heading in ("Clinical summary", "Problems", "Medications", "Allergies", "Encounter note"):
        assert heading in "\n".join(pages), heading


def test_the_ccda_and_xdm_on_request_and_never_over_an_existing_file(data_dir, cli, mrn, tmp_path):
    folder = tmp_path / "out"
    args = ("--data-dir", data_dir, "send", "--patient", mrn, "--via", "print", "--to", folder,
            "--with-ccda", "--with-xdm")
    code, out, err = cli(*args)
    assert code == 0, err
    _, documents, _ = stored(data_dir, int(out))
    assert sorted(Path(n).suffix for n in documents) == [".pdf", ".xml", ".zip"]
    code, out, err = cli(*args)
    assert code == 0, err
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 6 and sum(" (2)" in n for n in names) == 3
    for name, content in documents.items():
        assert (folder / name).read_bytes() == content


def test_with_a_printer_the_pdf_goes_to_cups_and_the_job_id_is_reported(data_dir, cli, mrn, tmp_path, lp_on_path):
    bin_dir = lp_on_path(lambda d: recording_lp(d, job="FrontDesk-17"))
    folder = tmp_path / "out"
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", mrn, "--via", "print", "--to", folder,
                         "--printer", "FrontDesk")
    assert code == 0, err
    referral, documents, events = stored(data_dir, int(out))
    [name] = documents
    argv = json.loads((bin_dir / "lp-argv.json").read_text())
    assert argv[:2] == ["-d", "FrontDesk"] and argv[-2:] == ["--", str(folder / name)]
    assert referral.status == "delivered" and events[-1][1].endswith("sent to printer FrontDesk as job FrontDesk-17")


def test_a_printer_that_refuses_fails_the_referral_with_lps_words_but_keeps_the_saved_file(
        data_dir, cli, mrn, tmp_path, lp_on_path):
    lp_on_path(failing_lp)
    folder = tmp_path / "out"
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", mrn, "--via", "print", "--to", folder,
                         "--printer", "Nowhere")
    assert code == 1 and "but not printed: lp: The printer or class does not exist." in err
    referral_id = int(out)
    referral, documents, _ = stored(data_dir, referral_id)
    assert referral.status == "failed" and [p.name for p in folder.iterdir()] == list(documents)


def test_printer_only_leaves_no_file_behind(data_dir, cli, mrn, lp_on_path, tmp_path):
    bin_dir = lp_on_path(recording_lp)
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", mrn, "--via", "print", "--to",
                         "printer:FrontDesk")
    assert code == 0, err
    argv = json.loads((bin_dir / "lp-argv.json").read_text())
    printed = Path(argv[-1])
    assert argv[:2] == ["-d", "FrontDesk"] and not printed.exists() and not printed.parent.exists()
    referral, _, events = stored(data_dir, int(out))
    assert referral.status == "delivered" and events[-1][1] == "sent to printer FrontDesk as job QUEUE-42"


def test_a_folder_that_is_a_file_is_refused_before_anything_is_stored(data_dir, cli, mrn, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", mrn, "--via", "print", "--to", blocker)
    assert code == 1 and "is a file, not a folder" in err and out == ""
    open_database(sqlite_url(data_dir / "referdesk.db"))
    try:
        assert not Referral.select().where(Referral.channel == "print").exists()
    finally:
        close_database()


def test_the_fax_packet_text_matches_its_snapshot(seeded):
    """What the fax machine prints, as text, for a fixed patient and day: a regression check that any change to
    the packet shows up here for review (REFERDESK_UPDATE_TEXT_SNAPSHOTS=1 rewrites it)."""
    from documents.pdf import build_referral_pdf
    from models.patients import Note
    from models.referring import ReferralDraft

    note = Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).first()
    draft = ReferralDraft(patient_id=note.patient_id, note_id=note.id, channel="efax", recipient="2175550142",
                          recipient_name="Dr. Ana Ruiz", reason="Palpitations on exertion", urgency="urgent",
                          extra={"specialty": "Cardiology"})
    pages = pdf_text(build_referral_pdf(draft, cover_sheet=True))
    text = "".join(f"===== page {n} =====\n{page.rstrip()}\n" for n, page in enumerate(pages, 1))
    if os.environ.get("REFERDESK_UPDATE_TEXT_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(text)
    assert text == SNAPSHOT.read_text()
    assert "FAX" in pages[0] and "CONFIDENTIALITY NOTICE" in pages[0] and f"Page 1 of {len(pages)}" in pages[0]
