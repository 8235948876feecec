"""Unpacking a received IHE XDM package (or a plain zip) into the documents it carries, so they can be filed.

The package is read the way `referdesk inspect` reads it (documents.ccda_validate: in memory, member names
checked, inflated bytes counted per member and for the whole package, nothing extracted to disk), so the two
refuse exactly the same zip bombs. An XDM package's documents are the ones its METADATA.XML lists; a zip
without IHE_XDM/ gives every file in it except the package's own furniture.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from dataclasses import dataclass, field

from documents.ccda_reader import DEFAULT_MAX_BYTES
from documents.ccda_validate import MAX_ZIP_ENTRIES, _Package, _safe_name, is_symlink  # the inspector's limits

#: What a package holds besides its documents (IHE ITI TF-1 XDM): never filed as documents themselves.
FURNITURE = {"README.TXT", "INDEX.HTM"}
_MEDIA_BY_EXTENSION = {
    ".xml": "text/xml", ".pdf": "application/pdf", ".txt": "text/plain", ".htm": "text/html", ".html": "text/html",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".tif": "image/tiff",
    ".tiff": "image/tiff", ".zip": "application/zip", ".rtf": "application/rtf", ".json": "application/json",
}


@dataclass(frozen=True)
class PackedDocument:
    path: str  # the member's name in the package, as written there
    media_type: str
    content: bytes

    @property
    def filename(self) -> str:
        return posixpath.basename(self.path) or self.path


@dataclass
class Unpacked:
    """The documents read from a package; `problems` say, one sentence each, what could not be read (a document
    that is listed but missing, too large when inflated, or a package that is no zip at all)."""

    documents: list[PackedDocument] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    xdm: bool = False


def media_type_for(name: str, content: bytes = b"") -> str:
    """A media type from the content's signature, else the name's extension; application/octet-stream if
    neither says."""
    if content.startswith(b"%PDF-"):
        return "application/pdf"
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if content.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "application/zip"
    extension = posixpath.splitext(name.lower())[1]
    return _MEDIA_BY_EXTENSION.get(extension, "application/octet-stream")


def unpack(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Unpacked:
    """The documents in the zip `data`; never raises for what the zip contains."""
    result = Unpacked()
    package = _Package(data, max_bytes)
    try:
        package.archive = zipfile.ZipFile(io.BytesIO(data))
        members = package.archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        result.problems.append(f"the attached package is not a readable zip archive ({error})")
        return result
    if len(members) > MAX_ZIP_ENTRIES:
        result.problems.append(f"the attached package has {len(members)} members; referdesk reads packages of up "
                               f"to {MAX_ZIP_ENTRIES}")
        return result
    for member in members:
        if member.is_dir():
            continue
        if not _safe_name(member.filename):
            result.problems.append(f"the package holds a file with an unsafe name ({member.filename[:80]!r})")
            continue
        if is_symlink(member):  # never followed (nothing is extracted), but never filed as a document either
            result.problems.append(f"the package holds a symbolic link ({member.filename[:80]!r})")
            continue
        package.files[member.filename.upper()] = member
    result.xdm = any(name.startswith("IHE_XDM/") for name in package.files)
    listed = package.xdm_documents() if result.xdm else []
    if result.xdm and not listed:
        result.problems += [f.message for f in package.findings if f.severity == "error"] or [
            "the XDM package lists no document"]
        return result
    candidates = listed or [name for name in package.files if _is_document(name)]
    for key in dict.fromkeys(candidates):  # in order, once each
        member = package.files[key]
        before = len(package.findings)
        content = package.read(member)
        if content is None:
            result.problems += [f.message for f in package.findings[before:]] or [
                f"{member.filename}: could not be read from the package"]
            continue
        result.documents.append(PackedDocument(member.filename, media_type_for(member.filename, content), content))
    if not result.documents and not result.problems:
        result.problems.append("the attached package holds no document")
    return result


def _is_document(upper_name: str) -> bool:
    base = posixpath.basename(upper_name)
    if upper_name in FURNITURE or base == "METADATA.XML" or base.startswith(".") or "__MACOSX/" in upper_name:
        return False
    return True
