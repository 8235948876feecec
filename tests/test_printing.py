"""Download/Print primitives (transports/printing.py): real files in tmp_path; `lp` is a stand-in from
tests/fake_cups.py, since no CUPS daemon runs in CI. Failure modes are ones that also fail as root (CI runs as
root, where chmod does not stop writes)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from fake_cups import failing_lp, hanging_lp, recording_lp
from transports import printing
from transports.printing import MAX_NAME_BYTES, PrintError, default_folder, print_pdf, safe_name, write_files

ROOT = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_zero():
    old = os.umask(0)
    yield
    os.umask(old)


# --- write_files -------------------------------------------------------------------------------------------


def test_files_are_0600_and_created_folders_0700_even_with_umask_0(tmp_path, umask_zero):
    folder = tmp_path / "a" / "b" / "referrals"
    paths = write_files(folder, [("packet.pdf", b"%PDF-1.7 packet"), ("summary.xml", b"<ClinicalDocument/>")])

    assert paths == [folder / "packet.pdf", folder / "summary.xml"]
    assert [p.read_bytes() for p in paths] == [b"%PDF-1.7 packet", b"<ClinicalDocument/>"]
    assert [mode(p) for p in paths] == [0o600, 0o600]
    assert [mode(d) for d in (tmp_path / "a", tmp_path / "a" / "b", folder)] == [0o700, 0o700, 0o700]
    assert sorted(os.listdir(folder)) == ["packet.pdf", "summary.xml"]  # no temporary files left behind


def test_an_existing_folder_keeps_its_mode(tmp_path, umask_zero):
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    (path,) = write_files(str(folder), [("a.pdf", b"x")])
    assert mode(folder) == 0o755 and mode(path) == 0o600


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("/etc/passwd", "etc_passwd"),
        ("a/b\\c.pdf", "a_b_c.pdf"),
        ("..", "document"),
        ("", "document"),
        (".bashrc", "bashrc"),
        ("...hidden.pdf", "hidden.pdf"),
        ("x\x00y\r\nz\t.pdf", "x_y_z.pdf"),
        ("\x1b[31mRED\x1b[0m \x1b]0;title\x07name.pdf", "RED name.pdf"),
        ("bidi\u202etxt.pdf", "bidi_txt.pdf"),
        ("Referral – José Núñez.pdf", "Referral _ José Núñez.pdf"),
        ("report.pdf.", "report.pdf"),
        ("a  b__c.pdf", "a b_c.pdf"),
    ],
)
def test_names_are_sanitised(name, expected):
    assert safe_name(name) == expected


def test_long_names_are_capped_keeping_the_extension():
    long_ascii = safe_name("a" * 10_000 + ".pdf")
    long_unicode = safe_name("é" * 500 + ".pdf")
    for name in (long_ascii, long_unicode):
        assert name.endswith(".pdf") and len(name.encode()) <= MAX_NAME_BYTES
    assert unicodedata.is_normalized("NFC", long_unicode)
    assert len(safe_name("x" * 400).encode()) <= MAX_NAME_BYTES


def test_nothing_escapes_the_folder(tmp_path):
    folder = tmp_path / "out"
    hostile = ["../../escape.pdf", "/tmp/abs.pdf", "sub/dir.pdf", "..\\..\\win.pdf", "\x1b[2J.pdf", "a" * 5000]
    paths = write_files(folder, [(name, b"x") for name in hostile])

    assert all(p.parent == folder for p in paths)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert all(not n.startswith(".") and n.isprintable() for n in os.listdir(folder))
    assert len(os.listdir(folder)) == len(hostile)


def test_existing_files_are_never_overwritten(tmp_path):
    (tmp_path / "referral.pdf").write_bytes(b"old")
    (tmp_path / "notes").write_bytes(b"old notes")
    (tmp_path / "packet.xml").mkdir()  # a directory holding the name counts as taken too

    paths = write_files(
        tmp_path,
        [("referral.pdf", b"new"), ("referral.pdf", b"newer"), ("notes", b"n"), ("packet.xml", b"<x/>")],
    )

    assert [p.name for p in paths] == ["referral (2).pdf", "referral (3).pdf", "notes (2)", "packet (2).xml"]
    assert (tmp_path / "referral.pdf").read_bytes() == b"old"
    assert (tmp_path / "notes").read_bytes() == b"old notes"
    assert [p.read_bytes() for p in paths] == [b"new", b"newer", b"n", b"<x/>"]


def test_all_or_nothing_when_the_second_file_cannot_be_written(tmp_path):
    """A real write error that root gets too: the file size limit (RLIMIT_FSIZE → EFBIG), in a child process."""
    folder = tmp_path / "out"
    code = f"""
import json, os, resource, signal
from transports.printing import PrintError, write_files
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    write_files({str(folder)!r}, [("cover.pdf", b"small"), ("packet.pdf", b"x" * 100_000), ("c.xml", b"c")])
    print(json.dumps(None))
except PrintError as exc:
    print(json.dumps(str(exc)))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, check=True,
    )
    message = json.loads(done.stdout)

    assert message == f"Could not save 'packet.pdf' in {folder}: File too large; nothing was saved."
    assert os.listdir(folder) == []  # the first file is removed again, and no temporary file is left


def test_all_or_nothing_on_bad_input_too(tmp_path):
    with pytest.raises(TypeError):
        write_files(tmp_path, [("first.pdf", b"ok"), ("second.pdf", None)])  # type: ignore[list-item]
    assert os.listdir(tmp_path) == []


def test_a_folder_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "referrals"
    blocker.write_bytes(b"not a folder")

    with pytest.raises(PrintError) as caught:
        write_files(blocker, [("a.pdf", b"x")])
    assert str(caught.value) == f"{blocker} is a file, not a folder: choose another folder, or move that file away."

    with pytest.raises(PrintError) as caught:
        write_files(blocker / "sub", [("a.pdf", b"x")])
    assert str(caught.value) == (
        f"Could not create the folder {blocker / 'sub'}: Not a directory; choose another folder."
    )
    assert blocker.read_bytes() == b"not a folder"


def test_an_unwritable_folder_is_a_clear_error(tmp_path, monkeypatch):
    # chmod cannot make a folder unwritable for root (CI), so the permission check itself is stood in for.
    monkeypatch.setattr(printing.os, "access", lambda *args, **kwargs: False)
    with pytest.raises(PrintError, match="Cannot write to the folder .*: choose a folder you can write to"):
        write_files(tmp_path, [("a.pdf", b"x")])
    assert os.listdir(tmp_path) == []


def test_home_is_expanded(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))

    (path,) = write_files("~/referrals", [("a.pdf", b"x")])
    assert path == home / "referrals" / "a.pdf"

    assert default_folder(None) == home / "referrals"
    assert default_folder("  ") == home / "referrals"
    assert default_folder("~/Desktop/out") == home / "Desktop" / "out"
    monkeypatch.chdir(tmp_path)
    assert default_folder("relative") == tmp_path / "relative"


# --- print_pdf ---------------------------------------------------------------------------------------------


@pytest.fixture
def pdf(tmp_path) -> Path:
    path = tmp_path / "packet.pdf"
    path.write_bytes(b"%PDF-1.7\n")
    return path


def recorded_argv(tmp_path: Path) -> list[str]:
    return json.loads((tmp_path / "lp-argv.json").read_text())


def test_print_passes_exact_arguments_and_returns_the_job_id(tmp_path, pdf):
    lp = recording_lp(tmp_path, job="Front_Desk-42")
    job = print_pdf(pdf, "Front_Desk", title="Referral 2026-11-02", copies=2, lp=str(lp))

    assert job == "Front_Desk-42"
    assert recorded_argv(tmp_path) == ["-d", "Front_Desk", "-t", "Referral 2026-11-02", "-n", "2", "--", str(pdf)]
    assert (tmp_path / "lp-locale").read_text() == "C"  # lp's "request id is" is not translated


def test_print_without_title_or_copies(tmp_path, pdf):
    lp = recording_lp(tmp_path)
    assert print_pdf(pdf, "queue@printserver", lp=str(lp)) == "QUEUE-42"
    assert recorded_argv(tmp_path) == ["-d", "queue@printserver", "--", str(pdf)]


def test_title_loses_control_characters_and_a_leading_dash_stays_a_value(tmp_path, pdf):
    lp = recording_lp(tmp_path)
    print_pdf(pdf, "q", title="-n 99\x1b[2J\r\nx", lp=str(lp))
    assert recorded_argv(tmp_path) == ["-d", "q", "-t", "-n 99x", "--", str(pdf)]


def test_lp_error_is_passed_on_trimmed(tmp_path, pdf):
    lp = failing_lp(tmp_path)
    with pytest.raises(PrintError) as caught:
        print_pdf(pdf, "Nowhere", lp=str(lp))
    assert str(caught.value) == "lp: The printer or class does not exist."


def test_lp_timeout(tmp_path, pdf):
    lp = hanging_lp(tmp_path)
    with pytest.raises(PrintError) as caught:
        print_pdf(pdf, "Front_Desk", timeout=0.3, lp=str(lp))
    assert str(caught.value) == (
        "lp did not answer within 0.3 s; the job may or may not be queued: "
        "check the queue 'Front_Desk' before printing again."
    )


HINT = (
    "CUPS is not installed here (no `lp` command): install cups-client, "
    "or leave [print] printer empty to only save the file"
)


def test_lp_missing_gives_the_install_hint(tmp_path, pdf, monkeypatch):
    with pytest.raises(PrintError) as caught:
        print_pdf(pdf, "Front_Desk", lp=str(tmp_path / "no-such-lp"))
    assert str(caught.value) == HINT

    monkeypatch.setenv("PATH", str(tmp_path))  # the default: `lp` looked up on a PATH that has none
    with pytest.raises(PrintError) as caught:
        print_pdf(pdf, "Front_Desk")
    assert str(caught.value) == HINT


@pytest.mark.parametrize(
    "queue", ["", "Front Desk", "a/b", "a#b", "a\\b", "a\tb", "a\nb", "\x1b[31m", "q\x00", "x" * 128, "é" * 64]
)
def test_bad_queue_names_are_refused_before_running_lp(tmp_path, pdf, queue):
    lp = recording_lp(tmp_path)
    with pytest.raises(PrintError, match="is not a valid printer name"):
        print_pdf(pdf, queue, lp=str(lp))
    assert not (tmp_path / "lp-argv.json").exists()


@pytest.mark.parametrize("copies", [0, -1, 10_000, True, 1.5])
def test_bad_copies_are_refused_before_running_lp(tmp_path, pdf, copies):
    lp = recording_lp(tmp_path)
    with pytest.raises(PrintError, match="number of copies"):
        print_pdf(pdf, "q", copies=copies, lp=str(lp))
    assert not (tmp_path / "lp-argv.json").exists()


def test_a_missing_file_is_refused_before_running_lp(tmp_path):
    lp = recording_lp(tmp_path)
    with pytest.raises(PrintError, match="There is no file to print"):
        print_pdf(tmp_path / "gone.pdf", "q", lp=str(lp))
    assert not (tmp_path / "lp-argv.json").exists()
