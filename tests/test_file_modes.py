"""Files and folders referdesk makes are its owner's only: 0600 files in 0700 folders, whatever the umask and
even when the data folder or database already exist with looser modes (copied in, restored from a backup).

Driven through the real paths — a referral with its documents, a message received, a referral printed to a
folder, the Direct set-up saving its configuration — then every file and folder under the data folder is
os.stat-ed. (Tests run as root, so modes are read, never probed by trying to open as someone else.)
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from models.db import close_database, open_database, private_folder, sqlite_url


def loose_modes(root: Path) -> list[str]:
    """Every path under `root` (and root) whose mode is not 0700 for a folder or 0600 for a file."""
    found = []
    for path in [root, *sorted(root.rglob("*"))]:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            found.append(f"{path.relative_to(root.parent)}: {mode:o}")
    return found


@pytest.fixture
def loose_data(seeded_template, tmp_path):
    """A data folder as a careless copy leaves it: folder 0755, database and a stale WAL 0644, umask 022."""
    folder = tmp_path / "data"
    folder.mkdir()
    os.chmod(folder, 0o755)
    shutil.copy(seeded_template, folder / "referdesk.db")
    os.chmod(folder / "referdesk.db", 0o644)
    old = os.umask(0o022)
    yield folder
    os.umask(old)
    close_database()


def test_opening_tightens_a_loose_data_folder_and_database(loose_data):
    assert loose_modes(loose_data)  # the starting point really is loose
    open_database(sqlite_url(loose_data / "referdesk.db"))
    from models.patients import Patient

    assert Patient.select().count() > 0  # WAL and shared-memory files now exist
    assert (loose_data / "referdesk.db-wal").exists() and (loose_data / "referdesk.db-shm").exists()
    assert loose_modes(loose_data) == []


def test_a_new_database_in_a_new_folder_is_private_under_umask_022(tmp_path):
    old = os.umask(0o022)
    try:
        open_database(sqlite_url(tmp_path / "new" / "deeper" / "referdesk.db"))
        close_database()
    finally:
        os.umask(old)
    assert loose_modes(tmp_path / "new" / "deeper") == []


def test_a_shared_or_foreign_folder_is_not_changed_but_warned_about(tmp_path, caplog):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # sticky and world-writable, like /tmp
    with caplog.at_level("WARNING"):
        private_folder(shared)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    assert "can be read by other users" in caplog.text


def test_every_file_referdesk_writes_under_the_data_folder_is_0600_in_0700_folders(loose_data, cli, tmp_path):
    from documents.packet import build_attachments
    from models.patients import Note, Patient
    from models.referring import ReferralDraft, create_referral
    from transports.direct.setup import save_direct_settings

    # a referral with its documents, through the library (umask 022 here)
    open_database(sqlite_url(loose_data / "referdesk.db"))
    note = Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).first()
    draft = ReferralDraft(patient_id=note.patient_id, note_id=note.id, channel="print",
                          recipient=str(loose_data / "exports"), reason="File modes")
    create_referral(draft, build_attachments(draft))
    mrn = Patient.get_by_id(note.patient_id).mrn
    close_database()

    # printed to a folder inside the data folder, from the command line
    code, out, err = cli("--data-dir", loose_data, "send", "--patient", mrn, "--via", "print",
                         "--to", loose_data / "exports" / "today", "--with-ccda", "--with-xdm")
    assert code == 0, err
    printed = list((loose_data / "exports" / "today").iterdir())
    assert any(p.suffix == ".pdf" for p in printed) and any(p.suffix == ".xml" for p in printed)

    # a message received (kept raw in the database)
    raw = tmp_path / "incoming.eml"
    raw.write_bytes(b"From: ruiz@cardio.example.org\r\nTo: referrals@direct.example.org\r\nSubject: report\r\n"
                    b"Message-ID: <modes-1@cardio.example.org>\r\nContent-Type: text/plain\r\n\r\nReport.\r\n")
    code, out, err = cli("--data-dir", loose_data, "receive", raw)
    assert code in (0, 3), err

    # the C-CDA written with -o into the data folder
    code, out, err = cli("--data-dir", loose_data, "ccda", "--patient", mrn, "-o", loose_data / "summary.xml")
    assert code == 0, err

    # the Direct set-up saving its configuration into a new folder there
    save_direct_settings(loose_data / "settings" / "config.toml",
                         {"address": "referrals@direct.example.org", "certificate": "/nowhere/practice.p12",
                          "password_env": "REFERDESK_P12_PASSWORD", "trust_anchors": "/nowhere/anchors"},
                         {"host": "127.0.0.1", "port": 2525})

    assert loose_modes(loose_data) == []


def test_the_sandbox_writes_its_files_privately(tmp_path):
    from transports.sandbox.sandbox import copy_database, write_private

    old = os.umask(0o022)
    try:
        source = tmp_path / "source.db"
        open_database(sqlite_url(source))
        close_database()
        copy_database(source, tmp_path / "demo" / "sandbox" / "partner" / "referdesk.db")
        write_private(tmp_path / "demo" / "sandbox.json", "{}")
    finally:
        os.umask(old)
    assert loose_modes(tmp_path / "demo" / "sandbox" / "partner") == []
    assert stat.S_IMODE(os.stat(tmp_path / "demo" / "sandbox.json").st_mode) == 0o600


def test_a_passphrase_written_in_the_configuration_is_refused_and_dropped_on_save(tmp_path):
    from models.config import load_config
    from transports.direct.sender import DirectContext, DirectNotReady
    from transports.direct.setup import direct_settings_missing, save_direct_settings

    path = tmp_path / "config.toml"
    path.write_text('[direct]\naddress = "referrals@direct.example.org"\ncertificate = "/x/practice.p12"\n'
                    'trust_anchors = "/x/anchors"\npassword = "hunter2"\n[smtp]\nhost = "127.0.0.1"\n')
    config = load_config(path, env={})
    missing = direct_settings_missing(config)
    assert len(missing) == 1 and "[direct] password" in missing[0] and "environment variable" in missing[0]
    with pytest.raises(DirectNotReady) as refused:
        DirectContext.from_config(config, env={})
    assert "[direct] password" in str(refused.value) and "hunter2" not in str(refused.value)
    save_direct_settings(path, {"password_env": "REFERDESK_P12_PASSWORD"}, {})
    assert "hunter2" not in path.read_text() and "password_env" in path.read_text()
    assert direct_settings_missing(load_config(path, env={})) == []
