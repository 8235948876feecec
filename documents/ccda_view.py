"""Read any HL7 CDA R2 document (C-CDA or not) into plain values a screen can show.

Documents arrive from outside the practice, so the reader is defensive first: no DTDs, no entities, no
network, no huge trees, and a clear `CcdaViewError` instead of a traceback for anything it will not read.
It keeps what a person reads — the header and each section's human-readable narrative — and leaves the
coded entries to the validator (`referdesk inspect`).
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
from dataclasses import dataclass

from lxml import etree

from models.documents import MAX_DOCUMENT_BYTES

NS = "urn:hl7-org:v3"
_V3 = f"{{{NS}}}"
#: The US Social Security Number OID: never shown as the patient's identifier.
SSN_ROOT = "2.16.840.1.113883.4.1"
NO_INFORMATION = "No information"


class CcdaViewError(ValueError):
    """A document referdesk will not read, with a message that says why in the user's words."""


# --- what the reader returns ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Paragraph:
    text: str  # lines separated by "\n" where the narrative had <br/>


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]  # every row as wide as the widest row or header
    caption: str = ""


@dataclass(frozen=True)
class ItemList:
    items: tuple[str, ...]
    ordered: bool = False
    caption: str = ""


Block = Paragraph | Table | ItemList


@dataclass(frozen=True)
class Section:
    title: str
    code: str
    blocks: tuple[Block, ...]
    subsections: tuple["Section", ...] = ()


@dataclass(frozen=True)
class PatientInfo:
    name: str = ""
    birth_date: dt.date | None = None
    sex: str = ""
    mrn: str = ""  # the first identifier that is not an SSN


@dataclass(frozen=True)
class Party:
    """A person and/or organisation named in the header: author, custodian, recipient."""

    name: str = ""
    organization: str = ""

    def __str__(self) -> str:
        return " — ".join(part for part in (self.name, self.organization) if part)


@dataclass(frozen=True)
class CcdaView:
    title: str
    type_code: str
    type_display: str
    effective_time: dt.date | dt.datetime | None
    patient: PatientInfo
    author: Party
    custodian: Party
    recipients: tuple[Party, ...]
    sections: tuple[Section, ...] = ()

    def all_sections(self) -> list[tuple[int, Section]]:
        """Every section with its depth (0 = top level), in reading order."""
        found: list[tuple[int, Section]] = []

        def visit(sections: tuple[Section, ...], depth: int) -> None:
            for section in sections:
                found.append((depth, section))
                visit(section.subsections, depth + 1)

        visit(self.sections, 0)
        return found


# --- safe parsing ---------------------------------------------------------------------------------------


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not thread-safe and documents are read in worker threads.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_pis=True, remove_comments=True)


_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _refuse_dtd() -> CcdaViewError:
    return CcdaViewError("this document contains a DOCTYPE/entity declarations, which referdesk never processes")


def _prolog(data: bytes) -> str:
    head = data[:65536].removeprefix(codecs.BOM_UTF8)
    if head.startswith(_WIDE_BOMS) or b"\x00" in head[:4]:
        codec = "utf-32" if head[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff") else "utf-16"
        return head.decode(codec, errors="ignore")
    return head.decode("latin-1")  # every ASCII-compatible encoding spells "<!DOCTYPE" the same way


def _prolog_has_doctype(text: str) -> bool:
    """Whether a DOCTYPE comes before the root element (past whitespace, processing instructions, comments)."""
    at, end = 0, len(text)
    while at < end:
        if text[at] in " \t\r\n\ufeff":
            at += 1
        elif text.startswith("<?", at) or text.startswith("<!--", at):
            terminator = "?>" if text[at + 1] == "?" else "-->"
            close = text.find(terminator, at + 2)
            if close < 0:
                return False
            at = close + len(terminator)
        else:
            return text.startswith("<!DOCTYPE", at)
    return False


def _check_input(data: bytes) -> None:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise CcdaViewError(f"this document is {len(data) / 1_048_576:.1f} MB; referdesk reads documents up to "
                            f"{MAX_DOCUMENT_BYTES // 1_048_576} MB")
    if not data or data.isspace():
        raise CcdaViewError("this document is empty")
    # Refused before the parser sees it; the parsed tree is checked again in case the prolog fooled the scan.
    if _prolog_has_doctype(_prolog(data)):
        raise _refuse_dtd()


_LINE_SUFFIX = re.compile(r",? line \d+, column \d+$")


def parse_xml(data: bytes) -> etree._Element:
    """The root element of `data`, parsed with entities, DTDs and the network off."""
    _check_input(data)
    try:
        tree = etree.fromstring(data, _parser()).getroottree()
    except etree.XMLSyntaxError as error:
        line = error.lineno or (error.position[0] if error.position else 0)
        message = _LINE_SUFFIX.sub("", (error.msg or str(error)).split(" (line")[0]).strip()
        raise CcdaViewError(f"not well-formed XML at line {line}: {message}") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise _refuse_dtd()
    return tree.getroot()


def _check_root(root: etree._Element) -> None:
    qname = etree.QName(root)
    if qname.localname == "ClinicalDocument" and qname.namespace != NS:
        where = f"the {qname.namespace} namespace" if qname.namespace else "no namespace"
        raise CcdaViewError(f"this XML is a <ClinicalDocument> in {where}, not an HL7 CDA document "
                            f"(expected {NS})")
    if qname.namespace != NS or qname.localname != "ClinicalDocument":
        raise CcdaViewError(f"this XML is a <{qname.localname}>, not an HL7 CDA document")


def read_ccda(data: bytes) -> CcdaView:
    """Read a CDA R2 document for display; raises CcdaViewError with a user-facing reason."""
    root = parse_xml(data)
    _check_root(root)
    return CcdaView(
        title=_text(root.find(f"{_V3}title")) or _attr(root.find(f"{_V3}code"), "displayName")
        or "Untitled CDA document",
        type_code=_attr(root.find(f"{_V3}code"), "code"),
        type_display=_attr(root.find(f"{_V3}code"), "displayName"),
        effective_time=parse_ts(_attr(root.find(f"{_V3}effectiveTime"), "value")),
        patient=_patient(root.find(f"{_V3}recordTarget/{_V3}patientRole")),
        author=_author(root.find(f"{_V3}author/{_V3}assignedAuthor")),
        custodian=Party(organization=_text(root.find(
            f"{_V3}custodian/{_V3}assignedCustodian/{_V3}representedCustodianOrganization/{_V3}name"))),
        recipients=tuple(_recipient(r) for r in root.iterfind(f"{_V3}informationRecipient/{_V3}intendedRecipient")),
        sections=_body_sections(root.find(f"{_V3}component")),
    )


# --- small readers ---------------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def _normalise(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _local(element) -> str:
    tag = element.tag
    if not isinstance(tag, str):  # an entity reference left unresolved, should one ever get through
        return ""
    return tag.rpartition("}")[2]


def _attr(element, name: str) -> str:
    return "" if element is None else (element.get(name) or "").strip()


def _text(element) -> str:
    return "" if element is None else _normalise("".join(element.itertext()))


_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{2}(?:\d{2})?)?$")


def parse_ts(value: str) -> dt.date | dt.datetime | None:
    """An HL7 TS (YYYY[MM[DD[HH[MM[SS[.S]]]]]][±ZZZZ]) as a date (day precision or less) or a datetime.

    Year or month precision becomes the first day of it; a time zone makes the datetime aware. Anything
    unreadable is None: the header of a real-world document is often wrong and must not stop the reading.
    """
    match = _TS.match((value or "").strip())
    if not match:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        if hour is None:
            return dt.date(int(year), int(month or 1), int(day or 1))
        tz = None
        if zone:
            sign = -1 if zone[0] == "-" else 1
            offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5] or 0))
            tz = dt.timezone(sign * offset)
        return dt.datetime(int(year), int(month), int(day), int(hour), int(minute or 0), int(second or 0),
                           tzinfo=tz)
    except ValueError:
        return None


def format_name(name) -> str:
    """A person name (PN) in reading order: 'Patricia Primary, M.D.'; plain-text names as written."""
    if name is None or name.get("nullFlavor"):
        return ""
    parts: dict[str, list[str]] = {"prefix": [], "given": [], "family": [], "suffix": []}
    aside: list[str] = []  # call-me and birth given names: shown only when there is no other given name
    for part in name:
        kind = _local(part)
        text = _text(part) if kind in parts else ""
        if not text:
            continue
        if kind == "given" and part.get("qualifier") in ("CL", "BR"):
            aside.append(text)
        else:
            parts[kind].append(text)
    parts["given"] = parts["given"] or aside
    if not any(parts.values()):
        return _text(name)
    main = " ".join(parts["prefix"] + parts["given"] + parts["family"])
    return ", ".join([main] + parts["suffix"]) if main else " ".join(parts["suffix"])


def _preferred_name(element) -> str:
    if element is None:
        return ""
    names = element.findall(f"{_V3}name")
    legal = [n for n in names if (n.get("use") or "L") in ("L", "C")]
    for name in legal + names:
        text = format_name(name)
        if text:
            return text
    return ""


_SEX = {"F": "Female", "M": "Male", "UN": "Undifferentiated"}


def _patient(role) -> PatientInfo:
    if role is None:
        return PatientInfo()
    person = role.find(f"{_V3}patient")
    mrn = next((i.get("extension") for i in role.findall(f"{_V3}id")
                if i.get("extension") and i.get("root") != SSN_ROOT), "")
    gender = person.find(f"{_V3}administrativeGenderCode") if person is not None else None
    code = _attr(gender, "code")
    birth = parse_ts(_attr(person.find(f"{_V3}birthTime") if person is not None else None, "value"))
    return PatientInfo(
        name=_preferred_name(person),
        birth_date=birth.date() if isinstance(birth, dt.datetime) else birth,
        sex=_SEX.get(code) or _attr(gender, "displayName") or code,
        mrn=mrn.strip(),
    )


def _author(assigned) -> Party:
    if assigned is None:
        return Party()
    name = _preferred_name(assigned.find(f"{_V3}assignedPerson"))
    if not name:
        device = assigned.find(f"{_V3}assignedAuthoringDevice")
        if device is not None:
            name = " ".join(filter(None, (_text(device.find(f"{_V3}manufacturerModelName")),
                                          _text(device.find(f"{_V3}softwareName")))))
    return Party(name=name, organization=_text(assigned.find(f"{_V3}representedOrganization/{_V3}name")))


def _recipient(intended) -> Party:
    return Party(name=_preferred_name(intended.find(f"{_V3}informationRecipient")),
                 organization=_text(intended.find(f"{_V3}receivedOrganization/{_V3}name")))


# --- the body ---------------------------------------------------------------------------------------------


def _body_sections(component) -> tuple[Section, ...]:
    if component is None:
        return ()
    structured = component.find(f"{_V3}structuredBody")
    if structured is not None:
        return tuple(_section(s) for s in structured.iterfind(f"{_V3}component/{_V3}section"))
    non_xml = component.find(f"{_V3}nonXMLBody")
    return (_non_xml_section(non_xml),) if non_xml is not None else ()


def _non_xml_section(body) -> Section:
    text = body.find(f"{_V3}text")
    media = _attr(text, "mediaType") or "text/plain"
    if text is not None and media.startswith("text/plain") and _attr(text, "representation") != "B64" \
            and text.find(f"{_V3}reference") is None:
        blocks = (Paragraph(_text(text)),) if _text(text) else (Paragraph(NO_INFORMATION),)
    else:
        blocks = (Paragraph(f"[{media} content that cannot be shown in a terminal]"),)
    return Section(title="Document body", code="", blocks=blocks)


def _section(element) -> Section:
    code = element.find(f"{_V3}code")
    subsections = tuple(_section(s) for s in element.iterfind(f"{_V3}component/{_V3}section"))
    text = element.find(f"{_V3}text")
    blocks: tuple[Block, ...] = ()
    if not element.get("nullFlavor") and text is not None:
        blocks = tuple(narrative_blocks(text))
    if not blocks and (not subsections or element.get("nullFlavor")):
        blocks = (Paragraph(NO_INFORMATION),)
    return Section(title=_text(element.find(f"{_V3}title")) or _attr(code, "displayName") or "Untitled section",
                   code=_attr(code, "code"), blocks=blocks, subsections=subsections)


# --- the narrative block (<text>) -------------------------------------------------------------------------

_LINE_BREAKING = {"paragraph", "list", "item", "table", "tr", "thead", "tbody", "tfoot", "caption"}
_SKIPPED = {"footnote", "footnoteRef", "col", "colgroup"}


class _Lines:
    """Text gathered into lines: whitespace normalised within a line, no empty lines."""

    def __init__(self) -> None:
        self.lines: list[list[str]] = [[]]

    def add(self, text: str | None) -> None:
        if text:
            self.lines[-1].append(text)

    def newline(self) -> None:
        if self.lines[-1]:
            self.lines.append([])

    def result(self) -> list[str]:
        return [line for line in (_normalise("".join(parts)) for parts in self.lines) if line]


def _walk(element, out: _Lines) -> None:
    """Gather `element`'s human-readable text, not its tail: inline markup flattened, blocks on new lines."""
    name = _local(element)
    if name in _SKIPPED or (name == "content" and element.get("revised") == "delete"):
        return
    if name == "br":
        out.newline()
        return
    if name == "renderMultiMedia":
        out.add(" [image] ")
        return
    breaks = name in _LINE_BREAKING
    if breaks:
        out.newline()
    if name == "item":
        out.add("• ")
    out.add(element.text)
    for child in element:
        _walk(child, out)
        out.add(child.tail)
        if _local(child) in ("td", "th"):
            out.add(" ")
    if name == "caption":
        out.add(":")
    if breaks:
        out.newline()


def _lines(element) -> list[str]:
    """The text inside `element` (not the element's own line break or bullet) as lines."""
    out = _Lines()
    out.add(element.text)
    for child in element:
        _walk(child, out)
        out.add(child.tail)
    return out.result()


def narrative_blocks(text_element) -> list[Block]:
    """The section's <text> as paragraphs, tables and lists, in document order."""
    blocks: list[Block] = []
    loose = _Lines()

    def flush() -> None:
        nonlocal loose
        lines = loose.result()
        if lines:
            blocks.append(Paragraph("\n".join(lines)))
        loose = _Lines()

    loose.add(text_element.text)
    for child in text_element:
        reader = _BLOCK_READERS.get(_local(child))
        if reader is None:
            _walk(child, loose)
        else:
            flush()
            block = reader(child)
            if block is not None:
                blocks.append(block)
        loose.add(child.tail)
    flush()
    return blocks


def _paragraph(element) -> Paragraph | None:
    lines = _lines(element)
    return Paragraph("\n".join(lines)) if lines else None


def _caption(element) -> str:
    return _text(element.find(f"{_V3}caption"))


def _item_list(element) -> ItemList | None:
    items = tuple("\n".join(_lines(item)) for item in element.iterfind(f"{_V3}item"))
    items = tuple(item for item in items if item)
    if not items:
        return None
    return ItemList(items=items, ordered=element.get("listType") == "ordered", caption=_caption(element))


def _row(tr) -> tuple[list[str], bool]:
    """The cells of a row (a spanned cell's text in its first column, blanks after) and whether all are <th>."""
    cells: list[str] = []
    all_th = True
    for cell in tr:
        kind = _local(cell)
        if kind not in ("td", "th"):
            continue
        all_th = all_th and kind == "th"
        try:
            span = max(1, min(int(cell.get("colspan") or 1), 50))
        except ValueError:
            span = 1
        cells.append("\n".join(_lines(cell)))
        cells.extend([""] * (span - 1))
    return cells, all_th and bool(cells)


def _table(element) -> Table | None:
    head: list[list[str]] = []
    body: list[list[str]] = []
    foot: list[list[str]] = []
    first_body_all_th = False
    for part in element:
        name = _local(part)
        if name in ("thead", "tbody", "tfoot"):
            target = {"thead": head, "tbody": body, "tfoot": foot}[name]
            for tr in part.iterfind(f"{_V3}tr"):
                cells, all_th = _row(tr)
                if name == "tbody" and not body:
                    first_body_all_th = all_th
                target.append(cells)
        elif name == "tr":
            cells, all_th = _row(part)
            if not body:
                first_body_all_th = all_th
            body.append(cells)
    if not head and first_body_all_th and len(body) > 1:
        head.append(body.pop(0))
    headers = head[-1] if head else []
    rows = head[:-1] + body + foot
    width = max([len(headers)] + [len(r) for r in rows])
    if width == 0:
        return None
    pad = lambda cells: tuple(cells) + ("",) * (width - len(cells))  # noqa: E731
    return Table(headers=pad(headers) if headers else (), rows=tuple(pad(r) for r in rows if any(r)),
                 caption=_caption(element))


_BLOCK_READERS = {"paragraph": _paragraph, "table": _table, "list": _item_list}
