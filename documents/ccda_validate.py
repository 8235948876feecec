"""Validate a received C-CDA (XSD, optional schematron) and inspect a file or IHE XDM zip for `referdesk inspect`.

Everything about the content is a `Finding` (same type the reader uses), so one list shows a person all that
is wrong with a document; only a path that cannot be read raises. XDM zips come from outside, so they are
read in memory with size, count and name limits and nothing is ever extracted to disk.
"""

from __future__ import annotations

import functools
import io
import os
import posixpath
import stat
import zipfile
from dataclasses import asdict
from pathlib import Path

from lxml import etree

from documents.ccda_reader import DEFAULT_MAX_BYTES, Finding, Summary, as_json, parse_root, path_of, read_summary
from documents.ccda_view import CcdaViewError, parse_xml
from models.safe_text import has_unsafe

SCHEMA_ENTRY = Path("infrastructure/cda/CDA_SDTC.xsd")
MAX_XSD_FINDINGS = 200
MAX_ZIP_ENTRIES = 1000
MAX_ZIP_TOTAL = 100 * 1024 * 1024  # uncompressed bytes read from one package, all members together
_SVRL = "{http://purl.oclc.org/dsdl/svrl}"


# --- XSD and schematron ------------------------------------------------------------------------------------


def validate(path_or_bytes: Path | str | bytes, *, schema_dir: Path | None = None,
             schematron: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Finding]:
    """XSD findings (when `schema_dir` is given) and schematron findings (when `schematron` is given)."""
    if isinstance(path_or_bytes, bytes):
        data = path_or_bytes
    else:
        data, size = _read_bounded(Path(path_or_bytes), max_bytes)
        if data is None:
            return [Finding("error", f"the file is {size / 1_048_576:.1f} MB; the limit is "
                                     f"{max_bytes / 1_048_576:.1f} MB, so it was not validated", "/")]
    findings: list[Finding] = []
    root = parse_root(data, findings, max_bytes=max_bytes)
    if root is None:
        return findings
    return validate_tree(root, schema_dir=schema_dir, schematron=schematron)


def _read_bounded(path: Path, max_bytes: int) -> tuple[bytes | None, int]:
    """(content, size), content None when over the limit; only an unreadable path raises."""
    with path.open("rb") as handle:  # FileNotFoundError / PermissionError / IsADirectoryError pass through
        data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            return None, os.fstat(handle.fileno()).st_size
    return data, len(data)


def validate_tree(root, *, schema_dir: Path | None, schematron: Path | None) -> list[Finding]:
    findings: list[Finding] = []
    if schema_dir is not None:
        findings += xsd_findings(root, Path(schema_dir))
    if schematron is not None:
        findings += schematron_findings(root, Path(schematron))
    return findings


@functools.lru_cache(maxsize=4)
def _schema(xsd: Path) -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.parse(str(xsd), parser))


def xsd_findings(root, schema_dir: Path) -> list[Finding]:
    xsd = schema_dir / SCHEMA_ENTRY
    if not xsd.is_file():
        return [Finding("warning", f"XSD not checked: {xsd} does not exist", "/", source="xsd")]
    try:
        schema = _schema(xsd)
    except (etree.XMLSchemaParseError, OSError, etree.XMLSyntaxError) as error:
        return [Finding("warning", f"XSD not checked: the schema could not be loaded ({error})", "/", source="xsd")]
    tree = root.getroottree()
    if schema.validate(tree):
        return []
    return [Finding("error", error.message, _readable(tree, error.path or "/")[0], error.line or None, source="xsd")
            for error in list(schema.error_log)[:MAX_XSD_FINDINGS]]


def _readable(tree, location: str) -> tuple[str, int | None]:
    """A validator's XPath (`/*/*[23]/…` or `*[local-name()=…]`) as a plain path, and the element's line."""
    try:
        hits = tree.xpath(location) if location.startswith("/") else []
    except (etree.XPathError, ValueError):
        return location, None
    if hits and isinstance(hits[0], etree._Element):
        return path_of(hits[0]), hits[0].sourceline
    return location, None


@functools.lru_cache(maxsize=2)
def _schematron_runner(sch: Path):
    """A callable root -> SVRL root: saxonche (XSLT 2/3, fast) when installed, else lxml's XSLT 1.0."""
    from lxml import isoschematron

    xslt = isoschematron.Schematron(etree.parse(str(sch)), store_xslt=True, validate_schema=False).validator_xslt
    xslt.getroot().set("{http://www.w3.org/XML/1998/namespace}base", sch.resolve().as_uri())  # voc.xml beside it
    try:
        from saxonche import PySaxonProcessor
    except ImportError:
        transform = etree.XSLT(xslt)
        return lambda root: transform(root.getroottree()).getroot()
    processor = PySaxonProcessor(license=False)
    executable = processor.new_xslt30_processor().compile_stylesheet(
        stylesheet_text=etree.tostring(xslt, encoding="unicode"))

    def run(root):
        node = processor.parse_xml(xml_text=etree.tostring(root, encoding="unicode"))
        return etree.fromstring(executable.transform_to_string(xdm_node=node).encode())

    return run


def schematron_findings(root, sch: Path) -> list[Finding]:
    """Failed asserts as findings; severity from the assert's role or its *-errors / *-warnings pattern."""
    if not sch.is_file():
        return [Finding("warning", f"schematron not checked: {sch} does not exist", "/", source="schematron")]
    try:
        svrl = _schematron_runner(sch)(root)
    except Exception as error:  # noqa: BLE001 - a broken schematron set-up is a finding, not a crash
        return [Finding("warning", f"schematron not checked: {error}", "/", source="schematron")]
    findings, pattern = [], ""
    for element in svrl:
        if element.tag == _SVRL + "active-pattern":
            pattern = element.get("id") or element.get("name") or ""
        elif element.tag in (_SVRL + "failed-assert", _SVRL + "successful-report"):
            role = (element.get("role") or "").lower()
            severity = ("error" if "error" in role or pattern.endswith("-errors") else
                        "warning" if "warn" in role or pattern.endswith("-warnings") else "info")
            text = " ".join("".join(element.find(_SVRL + "text").itertext()).split()) \
                if element.find(_SVRL + "text") is not None else ""
            location, line = _readable(root.getroottree(), element.get("location") or "")
            findings.append(Finding(severity, text, location, line, source="schematron"))
    return findings


# --- inspect ------------------------------------------------------------------------------------------------


def inspect_file(path: Path | str, *, schema_dir: Path | None = None, schematron: Path | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """The `referdesk inspect` JSON for a C-CDA or an XDM zip; raises only when the path cannot be read."""
    data, size = _read_bounded(Path(path), max_bytes)
    if data is None:
        return as_json(Summary(findings=[Finding("error", f"the file is {size / 1_048_576:.1f} MB; the limit is "
                                                          f"{max_bytes / 1_048_576:.1f} MB, so it was not read", "/")]))
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return inspect_zip(data, schema_dir=schema_dir, schematron=schematron, max_bytes=max_bytes)
    return inspect_bytes(data, schema_dir=schema_dir, schematron=schematron, max_bytes=max_bytes)


def inspect_bytes(data: bytes, *, schema_dir: Path | None = None, schematron: Path | None = None,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    summary = read_summary(data, max_bytes=max_bytes)
    if schema_dir is not None or schematron is not None:
        root = parse_root(data, [], max_bytes=max_bytes)
        if root is not None:
            summary.findings += validate_tree(root, schema_dir=schema_dir, schematron=schematron)
    return as_json(summary)


def _safe_name(name: str) -> bool:
    """A member name that stays inside the package: relative, no '..', no backslashes or drive letters, and no
    control characters (a name is shown to staff and quoted in reasons that reach a failed MDN's header)."""
    if not name or name.startswith(("/", "\\")) or "\\" in name or ":" in name.split("/")[0]:
        return False
    return ".." not in name.split("/") and not has_unsafe(name) and not any(c in name for c in "\r\n\t")


def is_symlink(member: zipfile.ZipInfo) -> bool:
    """A member a Unix unzip would make a symbolic link (its content is the path it points at)."""
    return member.create_system == 3 and stat.S_ISLNK(member.external_attr >> 16)


def inspect_zip(data: bytes, *, schema_dir: Path | None = None, schematron: Path | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """Summarise every CDA document in an IHE XDM package (or any zip); the first is the top-level summary."""
    return _Package(data, max_bytes).inspect(schema_dir=schema_dir, schematron=schematron)


class _Package:
    """A zip read in memory: member names checked, inflated bytes counted per member and for the package."""

    def __init__(self, data: bytes, max_bytes: int) -> None:
        self.data, self.max_bytes = data, max_bytes
        self.findings: list[Finding] = []
        self.files: dict[str, zipfile.ZipInfo] = {}  # upper-cased name -> member
        self.budget = MAX_ZIP_TOTAL
        self.info = {"format": "zip", "members": [], "documents": []}

    def note(self, severity: str, message: str, location: str = "/") -> None:
        self.findings.append(Finding(severity, message, location, source="package"))

    def result(self, top: dict | None) -> dict:
        summary = dict(top or as_json(Summary()))
        summary["package"] = self.info
        summary["findings"] = [asdict(f) for f in self.findings] + list(summary["findings"])
        return summary

    def inspect(self, *, schema_dir: Path | None, schematron: Path | None) -> dict:
        try:
            self.archive = zipfile.ZipFile(io.BytesIO(self.data))
            members = self.archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
            self.note("error", f"the file starts like a zip but is not a readable zip archive ({error})")
            return self.result(None)
        if len(members) > MAX_ZIP_ENTRIES:
            self.note("error", f"the zip has {len(members)} members; referdesk reads packages of up to "
                               f"{MAX_ZIP_ENTRIES}")
            return self.result(None)
        for member in members:
            if member.is_dir():
                continue
            if not _safe_name(member.filename):
                self.note("error", f"unsafe member name {member.filename!r} (absolute or '..' path, or control "
                                   "characters): ignored", repr(member.filename))
                continue
            if is_symlink(member):
                self.note("error", f"member {member.filename!r} is a symbolic link: ignored", member.filename)
                continue
            self.files[member.filename.upper()] = member
            self.info["members"].append(member.filename)
        if any(name.startswith("IHE_XDM/") for name in self.files):
            self.info["format"] = "IHE XDM"
        listed = self.xdm_documents()
        candidates = listed or [name for name in self.files if name.endswith(".XML")]
        top = None
        for key in candidates:
            member = self.files[key]
            content = self.read(member)
            if content is None:
                continue
            if content.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # as the receiver does: never inflated
                self.note("warning", f"{member.filename}: a zip inside the package; not opened", member.filename)
                continue
            if not _is_cda(content):
                self.note("info", f"{member.filename}: not an HL7 CDA document; not summarised", member.filename)
                continue
            summary = inspect_bytes(content, schema_dir=schema_dir, schematron=schematron, max_bytes=self.max_bytes)
            for finding in summary["findings"]:
                finding["location"] = f"{member.filename}:{finding['location']}"
            self.info["documents"].append({"path": member.filename, **summary})
            top = top or summary
        if not self.info["documents"]:
            self.note("error", "the package contains no HL7 CDA document")
        return self.result(top)

    def read(self, member: zipfile.ZipInfo) -> bytes | None:
        """The member's bytes, or None (with a finding) when unreadable or over the member/package limit."""
        if self.budget <= 0:
            self.note("error", f"{member.filename}: not read, the package already inflated to its "
                               f"{MAX_ZIP_TOTAL // 1_048_576} MB limit", member.filename)
            return None
        limit = min(self.max_bytes, self.budget)
        chunks, total = [], 0
        try:
            with self.archive.open(member) as stream:
                while chunk := stream.read(65536):  # counted as inflated: the declared size may lie
                    total += len(chunk)
                    if total > limit:
                        self.note("error", f"{member.filename}: inflates to more than {limit / 1_048_576:.1f} MB; "
                                           f"not read (possibly a zip bomb)", member.filename)
                        self.budget -= total
                        return None
                    chunks.append(chunk)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError) as error:
            self.note("error", f"{member.filename}: cannot be read from the zip ({error})", member.filename)
            return None
        self.budget -= total
        return b"".join(chunks)

    def xdm_documents(self) -> list[str]:
        """Upper-cased names of the documents IHE_XDM/SUBSET*/METADATA.XML lists; findings for what is broken."""
        files = self.files
        if not any(name.startswith("IHE_XDM/") for name in files):
            return []
        metadata = sorted(name for name in files if name.startswith("IHE_XDM/") and name.endswith("/METADATA.XML"))
        if not metadata:
            self.note("error", "IHE_XDM/ folder without a SUBSET*/METADATA.XML: a broken XDM package", "IHE_XDM/")
        for required in ("README.TXT", "INDEX.HTM"):
            if required not in files:
                self.note("warning", f"XDM package without {required}", required)
        if "INDEX.HTM" in files and (index := self.read(files["INDEX.HTM"])) is not None:
            try:
                parse_xml(index)
            except CcdaViewError as error:
                self.note("warning", f"INDEX.HTM is not well-formed XHTML: {error}", files["INDEX.HTM"].filename)
        listed: list[str] = []
        for name in metadata:
            where = files[name].filename
            content = self.read(files[name])
            if content is None:
                continue
            try:
                root = parse_xml(content)
            except CcdaViewError as error:
                self.note("error", f"{where}: {error}", where)
                continue
            uris = [value.text.strip() for obj in root.iter("{*}ExtrinsicObject")
                    for slot in obj.iter("{*}Slot") if slot.get("name") == "URI"
                    for value in slot.iter("{*}Value") if value.text and value.text.strip()]
            if not uris:
                self.note("error", f"{where} lists no document (no ExtrinsicObject with a URI slot)", where)
            for uri in uris:
                key = posixpath.normpath(f"{name.rpartition('/')[0]}/{uri}").upper()
                if not _safe_name(uri) or key not in files:
                    self.note("error", f"{where} lists {uri!r}, which is not in the package", where)
                else:
                    listed.append(key)
        return listed


def _is_cda(content: bytes) -> bool:
    try:
        root = parse_xml(content)
    except CcdaViewError:
        return True  # unreadable: the reader reports why
    return etree.QName(root).localname == "ClinicalDocument"
