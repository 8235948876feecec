"""Download/Print delivery: save the referral's files in a folder, and optionally send the PDF to a CUPS queue.

No database and no UI: the caller passes bytes and names. The files hold PHI, so they are written owner-only
(0600, in a folder created 0700) whatever the umask, never over an existing file, and all or nothing — a
half-saved packet that looks complete is worse than an error. Printing goes through CUPS's `lp` command with an
argument list (never a shell); nothing here logs.

The tests (tests/test_printing.py) use a stand-in `lp` (tests/fake_cups.py), because a CUPS daemon is not
available in CI.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import subprocess
import unicodedata
from pathlib import Path

DEFAULT_FOLDER = "~/referrals"
MAX_NAME_BYTES = 150  # room left under NAME_MAX (255) for " (n)" and odd file systems
MAX_QUEUE_BYTES = 127  # CUPS's limit on printer and class names
MAX_TITLE_CHARS = 200  # CUPS job-name is at most 255 octets
MAX_COPIES = 9999  # CUPS's default MaxCopies

_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")
# CUPS refuses these in queue names (lpadmin's validate_name); `@` starts a server part, which lp accepts.
_QUEUE_FORBIDDEN = set(" /#\\?'\"")
_JOB_ID = re.compile(r"request id is (\S+-\d+)")


class PrintError(Exception):
    """Saving or printing failed; the message is one sentence meant for the user."""


def default_folder(config_folder: str | None) -> Path:
    """`[print] folder` when set, else ~/referrals — expanded and absolute, so messages show a real path."""
    folder = config_folder if config_folder and config_folder.strip() else DEFAULT_FOLDER
    return Path(os.path.abspath(os.path.expanduser(folder.strip())))


def safe_name(name: str) -> str:
    """A file name that stays inside the folder: no separators, `..`, control characters or escape sequences,
    no leading dot (hidden files), a bounded length; letters, digits, `-_.` and spaces are kept."""
    text = unicodedata.normalize("NFC", _ANSI.sub("", name))
    text = "".join(c if c.isalnum() or c in "-_. " else "_" for c in text)
    text = re.sub(r"\.{2,}", ".", text)
    text = re.sub(r"_{2,}", "_", re.sub(r" {2,}", " ", text))
    text = text.lstrip("._- ").rstrip(". ")
    stem, dot, ext = text.rpartition(".")
    if not dot or not stem or len(ext) > 10:
        stem, ext = text, ""
    ext = f".{ext}" if ext else ""
    stem = stem[:MAX_NAME_BYTES]
    while stem and len((stem + ext).encode()) > MAX_NAME_BYTES:
        stem = stem[:-1]
    stem = stem.rstrip("._- ")
    return (stem or "document") + ext


def write_files(folder: str | Path, files: list[tuple[str, bytes]]) -> list[Path]:
    """Write each (name, content) into the folder and return the paths used, in order.

    Each file is written to a temporary name, fsynced, then hard-linked to its final name (link never replaces
    an existing file; a taken name gets " (2)", " (3)" … before the extension). If any file fails, every file
    this call wrote is removed and PrintError names the file and the reason."""
    target = _prepare_folder(folder)
    written: list[Path] = []
    current = ""
    try:
        for name, content in files:
            current = safe_name(name)
            written.append(_write_one(target, current, content))
        _fsync_dir(target)
    except BaseException as exc:
        for path in written:
            _unlink_quietly(path)
        if not isinstance(exc, OSError):
            raise
        reason = exc.strerror or str(exc)
        raise PrintError(f"Could not save {current!r} in {target}: {reason}; nothing was saved.") from exc
    return written


def print_pdf(
    path: Path, queue: str, *, title: str = "", copies: int = 1, timeout: float = 30, lp: str = "lp"
) -> str:
    """Send a file to a CUPS queue with `lp` and return the job id ("QUEUE-123"), or "" if lp succeeded
    without printing one. The title is passed as given (minus control characters): callers keep PHI out."""
    _check_queue(queue)
    if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= MAX_COPIES:
        raise PrintError(f"The number of copies must be between 1 and {MAX_COPIES}.")
    if not Path(path).is_file():
        raise PrintError(f"There is no file to print at {path}.")
    args = [lp, "-d", queue]
    clean_title = "".join(c for c in _ANSI.sub("", title) if c.isprintable()).strip()[:MAX_TITLE_CHARS]
    if clean_title:
        args += ["-t", clean_title]
    if copies != 1:
        args += ["-n", str(copies)]
    args += ["--", os.fspath(path)]
    # lp's messages are translated; the C locale keeps "request id is" parseable and errors consistent.
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        done = subprocess.run(
            args, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            timeout=timeout, env=env, check=False,
        )
    except FileNotFoundError as exc:
        raise PrintError(
            "CUPS is not installed here (no `lp` command): install cups-client, "
            "or leave [print] printer empty to only save the file"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise PrintError(
            f"lp did not answer within {timeout:g} s; the job may or may not be queued: "
            f"check the queue {queue!r} before printing again."
        ) from exc
    except OSError as exc:
        raise PrintError(f"Could not run {lp}: {exc.strerror or exc}.") from exc
    if done.returncode != 0:
        message = " ".join(done.stderr.split())[:300] or f"lp exited with status {done.returncode}."
        raise PrintError(message)
    found = _JOB_ID.search(done.stdout)
    return found.group(1) if found else ""


def _check_queue(queue: str) -> None:
    """CUPS queue names: printable, no space, `/`, `#`, `\\` (nor `?'"`), at most 127 bytes. Checked before
    anything runs, so a bad [print] printer setting is reported as such rather than as an lp error."""
    if (
        not queue
        or len(queue.encode()) > MAX_QUEUE_BYTES
        or any(not c.isprintable() or c.isspace() or c in _QUEUE_FORBIDDEN for c in queue)
    ):
        raise PrintError(
            f"{queue!r} is not a valid printer name (CUPS names have no spaces, '/', '#' or '\\' "
            "and are at most 127 characters): check [print] printer."
        )


def _prepare_folder(folder: str | Path) -> Path:
    target = Path(os.path.abspath(os.path.expanduser(os.fspath(folder))))
    try:
        _make_private_dirs(target)
    except OSError as exc:
        raise PrintError(
            f"Could not create the folder {target}: {exc.strerror or exc}; choose another folder."
        ) from exc
    if not target.is_dir():
        raise PrintError(f"{target} is a file, not a folder: choose another folder, or move that file away.")
    if not os.access(target, os.W_OK | os.X_OK):
        raise PrintError(f"Cannot write to the folder {target}: choose a folder you can write to.")
    return target


def _make_private_dirs(target: Path) -> None:
    """Like os.makedirs, but every folder it creates (parents too) is 0700 whatever the umask; existing
    folders are left as they are."""
    missing: list[Path] = []
    for candidate in (target, *target.parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # created meanwhile by someone else: theirs, leave its mode alone
        os.chmod(directory, 0o700)


def _write_one(folder: Path, name: str, content: bytes) -> Path:
    temporary = folder / f".referdesk-{secrets.token_hex(8)}.part"
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        return _link_unused(temporary, folder, name)
    finally:
        _unlink_quietly(temporary)


def _link_unused(temporary: Path, folder: Path, name: str) -> Path:
    """Give the finished file its name without ever replacing another file: link() fails if the name is taken.
    On file systems without hard links, fall back to check-then-rename (a narrow race, but no half files)."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    ext = f".{ext}" if ext else ""
    for number in range(1, 10_000):
        final = folder / (name if number == 1 else f"{stem} ({number}){ext}")
        try:
            os.link(temporary, final, follow_symlinks=False)
            return final
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
        if os.path.lexists(final):
            continue
        os.rename(temporary, final)
        return final
    raise OSError(errno.EEXIST, "too many files with this name already")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # some file systems cannot fsync a directory; the files are synced
            raise
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
