"""What the documents screens show about a stored document, and the one way a copy of it leaves referdesk.

The screens stay thin: they ask `display_document()` what to show (a C-CDA read into sections, plain text,
or only the metadata of a file a terminal cannot show) and `save_copy()` to write a file.
"""

from __future__ import annotations

import codecs
import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from documents.ccda_reader import read_summary
from documents.ccda_view import CcdaView, CcdaViewError, read_ccda
from models.audit import patient_mrn_for, record
from models.documents import get_document, list_documents
from models.referrals import Document

KIND_LABELS = {"ccda": "C-CDA", "xdm": "XDM", "note": "Note", "note-pdf": "Note PDF", "fax-cover": "Fax cover",
               "report": "Report", "pdf": "PDF", "image": "Image", "message": "Message",
               "findings": "C-CDA findings", "other": "Other"}
_SHORT_TYPES = {"text/xml": "XML", "application/xml": "XML", "application/pdf": "PDF", "application/zip": "ZIP",
                "text/plain": "Text", "text/html": "HTML", "application/json": "JSON", "image/tiff": "TIFF"}
XML_TYPES = ("text/xml", "application/xml")
_TEXT_TYPES = ("application/json",)


def base_media_type(media_type: str) -> str:
    """'text/plain; charset=utf-8' → 'text/plain'."""
    return media_type.split(";", 1)[0].strip().lower()


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind.replace("-", " ").capitalize() or "Other")


def short_media_type(media_type: str) -> str:
    base = base_media_type(media_type)
    if base in _SHORT_TYPES:
        return _SHORT_TYPES[base]
    subtype = base.rpartition("/")[2]
    return (subtype.rpartition("+")[2] or subtype).upper()[:6] or "?"


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if size >= 100 else f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def describe_document(document: Document) -> list[tuple[str, str]]:
    """Label/value rows about a document, for a screen or `--json`; no content."""
    rows = [("Title", document.title), ("File", document.filename), ("Kind", kind_label(document.kind)),
            ("Type", document.media_type), ("Size", f"{human_size(document.size)} ({document.size:,} bytes)"),
            ("Filed", f"{document.created_at:%m/%d/%Y %H:%M}")]
    if document.owner == "practice":
        rows.append(("Owner", "Practice"))
    elif document.patient_id is not None:
        patient = document.patient
        rows.append(("Patient", f"{patient.last_name}, {patient.first_name} · MRN {patient.mrn}"))
    rows.append(("SHA-256", document.sha256))
    return rows


@dataclass(frozen=True)
class DocumentRow:
    """One line of a documents list."""

    id: int
    filed: dt.datetime
    title: str
    kind: str
    type: str
    size: str
    owner: str  # 'Practice', or the patient as 'Last, First'


def document_rows(*, patient_id: int | None = None, owner: str | None = None) -> list[DocumentRow]:
    """The documents list, newest first, as the screens show it."""
    names: dict[int, str] = {}
    rows = []
    for document in list_documents(patient_id=patient_id, owner=owner):
        if document.owner == "practice" or document.patient_id is None:
            whose = "Practice"
        else:
            if document.patient_id not in names:
                patient = document.patient
                names[document.patient_id] = f"{patient.last_name}, {patient.first_name}"
            whose = names[document.patient_id]
        rows.append(DocumentRow(id=document.id, filed=document.created_at, title=document.title,
                                kind=kind_label(document.kind), type=short_media_type(document.media_type),
                                size=human_size(document.size), owner=whose))
    return rows


# --- what the viewer shows ----------------------------------------------------------------------------------

DisplayMode = Literal["ccda", "text", "binary", "error"]


@dataclass(frozen=True)
class DocumentDisplay:
    """One document made ready for the viewer; `text` is the plain text, or the raw text of an XML that failed."""

    document_id: int
    title: str
    type_label: str
    details: tuple[tuple[str, str], ...]
    mode: DisplayMode
    ccda: CcdaView | None = None
    text: str = ""
    error: str = ""
    findings: tuple[str, ...] = ()  # what the structural checks found wrong, "severity: message" each


def looks_like_cda(content: bytes) -> bool:
    """Whether the first few KB name a ClinicalDocument: files arrive labelled application/octet-stream too."""
    head = content[:4096]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "ClinicalDocument" in head.decode("utf-16", errors="ignore")
    return b"ClinicalDocument" in head


def decode_text(content: bytes, media_type: str = "") -> str:
    """Text in the charset the media type names (UTF-8 otherwise), never failing on a bad byte."""
    match = re.search(r"charset=\"?([\w.:-]+)", media_type, re.I)
    encoding = match.group(1) if match else "utf-8"
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    try:
        return content.decode(encoding, errors="replace").removeprefix("\ufeff")
    except LookupError:
        return content.decode("utf-8", errors="replace").removeprefix("\ufeff")


def display_mode(media_type: str, content: bytes) -> DisplayMode:
    base = base_media_type(media_type)
    if base in XML_TYPES or base.endswith("+xml") or looks_like_cda(content):
        return "ccda"
    if base.startswith("text/") or base in _TEXT_TYPES:
        return "text"
    return "binary"


def display_document(document: Document) -> DocumentDisplay:
    """How the viewer shows `document` (loaded with its content)."""
    common = dict(document_id=document.id, title=document.title, type_label=short_media_type(document.media_type),
                  details=tuple(describe_document(document)))
    content = bytes(document.content or b"")
    mode = display_mode(document.media_type, content)
    if mode == "ccda":
        try:
            view = read_ccda(content)
        except CcdaViewError as error:
            return DocumentDisplay(**common, mode="error", error=str(error), text=decode_text(content))
        findings = tuple(f"{f.severity}: {f.message}" for f in read_summary(content).findings
                         if f.severity in ("error", "warning"))
        return DocumentDisplay(**common, mode="ccda", ccda=view, findings=findings)
    if mode == "text":
        return DocumentDisplay(**common, mode="text", text=decode_text(content, document.media_type))
    return DocumentDisplay(**common, mode="binary")


# --- saving a copy ----------------------------------------------------------------------------------------------


class DocumentCopyError(ValueError):
    """Why a copy was not saved, in words the user can act on."""


_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()-]+")


def safe_filename(name: str, fallback: str) -> str:
    """The last path component only, without characters a shell or another OS would trip on."""
    cleaned = _UNSAFE.sub("_", Path(name.replace("\\", "/")).name).strip(" .")[:200]
    return cleaned or fallback


def save_copy(document_id: int, folder: str | Path, *, username: str = "") -> Path:
    """Write the document into `folder` (which must exist) as a new file readable by its owner only.

    Never overwrites: PHI must not replace a file the user meant to keep. The audit log records that a copy
    left referdesk, by document id only.
    """
    if not str(folder).strip():
        raise DocumentCopyError("type the folder to save the copy in")
    target = Path(str(folder).strip()).expanduser()
    if not target.exists():
        raise DocumentCopyError(f"the folder {target} does not exist")
    if not target.is_dir():
        raise DocumentCopyError(f"{target} is a file, not a folder")
    document = get_document(document_id)
    path = target / safe_filename(document.filename, fallback=f"document-{document.id}")
    _write_private(path, bytes(document.content))
    record("document.save-copy", username=username, patient_mrn=patient_mrn_for(document.patient_id),
           object_type="document", object_id=str(document.id))
    return path


def _write_private(path: Path, content: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DocumentCopyError(f"{path} already exists; referdesk never overwrites a file — "
                                f"choose another folder or move that file") from None
    except PermissionError:
        raise DocumentCopyError(f"cannot write in {path.parent}: permission denied") from None
    except OSError as error:
        raise DocumentCopyError(f"cannot save to {path.parent}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # whatever the umask: the copy holds PHI
            file.write(content)
    except OSError as error:
        path.unlink(missing_ok=True)
        raise DocumentCopyError(f"cannot save to {path.parent}: {error.strerror}") from None
