"""build_referral_pdf: the referral packet a fax machine or a printer can carry.

The chart is read through the very path the C-CDA builder uses (documents.ccda.context.gather for the patient,
note, practice, author and recipient; documents.ccda.sections.add_sections for the Summary of Care), and the
clinical summary is laid out from the C-CDA section narratives themselves, so the PDF and the C-CDA always
say the same thing. Text is real text in an embedded, subset DejaVu Sans (Unicode), never markup: nothing is
escaped or interpreted. Every page carries the patient's name, date of birth and "Page X of Y".
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from lxml import etree

from documents.ccda.context import Context, gather
from documents.ccda.header import document_title
from documents.ccda.sections import NOTES, WITHHELD, add_sections
from documents.ccda.xml import V3
from models.clinical import Payer, Problem
from models.addresses import AddressError, check_fax_number, format_fax
from models.contacts import Contact
from models.referring import ReferralDraft, default_subject

FONTS = Path(__file__).resolve().parent / "fonts"
FAMILY = "DejaVuSans"
NS = {"v3": V3}
NOTE_TEMPLATE = NOTES.root
SEXES = {"F": "Female", "M": "Male", "U": "Unknown", "UN": "Unknown"}
CONFIDENTIAL = (
    "CONFIDENTIALITY NOTICE: This facsimile contains protected health information (PHI) that is privileged and "
    "confidential under federal and state law, including HIPAA (45 CFR Parts 160 and 164). It is intended only "
    "for the use of the recipient named above, for the treatment of the patient. If you are not the intended "
    "recipient, you are hereby notified that any review, disclosure, copying, distribution or use of this "
    "information is strictly prohibited. If you have received this fax in error, please notify the sender "
    "immediately by telephone and destroy all pages received."
)
MARGIN = 15.0
GREY = (235, 235, 235)
CELL_LINE = 3.8  # mm, table text at 8 pt
CELL_PAD = 0.9


def clean(value) -> str:
    """Text as the PDF shows it: NFC (so "Nguyễn" uses the font's precomposed glyphs), no control characters."""
    if value is None:
        return ""
    text = unicodedata.normalize("NFC", str(value))
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs"))


def _date(value) -> str:
    return value.strftime("%m/%d/%Y") if value else ""


def _when(value) -> str:
    return value.strftime("%m/%d/%Y %H:%M UTC") if value else ""


# --- the Summary of Care, read back from the C-CDA narratives ---------------------------------------------

@dataclass
class Block:
    kind: str  # "paragraph" | "table"
    text: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class Section:
    title: str
    blocks: list[Block]


def _words(node) -> str:
    return clean("".join(node.itertext())).strip()


def summary_sections(ctx: Context) -> list[Section]:
    """The sections the C-CDA body carries for this draft, in its order, minus those the sender withheld and
    the note (which the packet prints in full on its own)."""
    body = etree.Element(f"{{{V3}}}structuredBody")
    add_sections(body, ctx)
    sections = []
    for node in body.iterfind("v3:component/v3:section", NS):
        if node.find(f"v3:templateId[@root='{NOTE_TEMPLATE}']", NS) is not None:
            continue
        blocks = []
        text = node.find("v3:text", NS)
        for child in (text if text is not None else []):
            tag = etree.QName(child).localname
            if tag == "paragraph":
                blocks.append(Block("paragraph", _words(child)))
            elif tag == "table":
                headers = [_words(th) for th in child.iterfind("v3:thead/v3:tr/v3:th", NS)]
                rows = [[_words(td) for td in tr.iterfind("v3:td", NS)]
                        for tr in child.iterfind("v3:tbody/v3:tr", NS)]
                blocks.append(Block("table", headers=headers, rows=rows))
        if any(b.kind == "paragraph" and b.text == WITHHELD for b in blocks):
            continue
        sections.append(Section(_words(node.find("v3:title", NS)), blocks))
    return sections


# --- the document -----------------------------------------------------------------------------------------

class PacketPDF(FPDF):
    def __init__(self, patient_line: str, title: str):
        super().__init__(orientation="P", unit="mm", format="Letter")
        self.patient_line = patient_line
        self.doc_title = title
        self.set_margins(MARGIN, 22, MARGIN)
        self.set_auto_page_break(True, margin=18)
        self.add_font(FAMILY, "", str(FONTS / "DejaVuSans.ttf"))
        self.add_font(FAMILY, "B", str(FONTS / "DejaVuSans-Bold.ttf"))
        self.set_font(FAMILY, size=10)

    def header(self):
        self.set_y(9)
        self.set_font(FAMILY, "B", 9)
        self.cell(0, 5, self.patient_line, new_x=XPos.LMARGIN, new_y=YPos.TOP)
        self.set_font(FAMILY, "", 8)
        self.cell(0, 5, self.doc_title, align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(120, 120, 120)
        self.line(MARGIN, 15, self.w - MARGIN, 15)
        self.set_y(22)
        self.set_font(FAMILY, "", 10)

    def footer(self):
        self.set_y(-13)
        self.set_font(FAMILY, "", 7)
        self.cell(0, 4, "Confidential: protected health information", new_x=XPos.LMARGIN, new_y=YPos.TOP)
        self.set_font(FAMILY, "", 8)
        self.cell(0, 4, f"Page {self.page_no()} of {{nb}}", align="R")

    # small layout helpers
    def heading(self, text: str, size: float = 13, outline: bool = True):
        if self.y > self.page_break_trigger - 25:
            self.add_page()
        if outline:
            self.start_section(clean(text))
        self.set_font(FAMILY, "B", size)
        self.multi_cell(0, size * 0.5, clean(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1.5)
        self.set_font(FAMILY, "", 10)

    def para(self, text: str, size: float = 10, bold: bool = False, gap: float = 2):
        self.set_font(FAMILY, "B" if bold else "", size)
        for line in self.wrap(clean(text), self.epw):
            self.cell(0, size * 0.48, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(gap)
        self.set_font(FAMILY, "", 10)

    def wrap(self, text: str, width: float) -> list[str]:
        """Greedy word wrap measured a word at a time (fpdf2's multi_cell re-measures the whole line for every
        character, which made long notes the slowest part of a packet); words wider than a line are split."""
        room = width - 2 * self.c_margin
        space = self.get_string_width(" ")
        lines: list[str] = []
        for paragraph in text.split("\n"):
            line, used = "", 0.0
            for word in paragraph.split(" "):
                size = self.get_string_width(word)
                if line and used + space + size <= room:
                    line, used = f"{line} {word}", used + space + size
                    continue
                if line:
                    lines.append(line)
                while size > room and len(word) > 1:
                    cut = next(n for n in range(len(word) - 1, 0, -1)
                               if self.get_string_width(word[:n]) <= room or n == 1)
                    lines.append(word[:cut])
                    word = word[cut:]
                    size = self.get_string_width(word)
                line, used = word, size
            lines.append(line)
        return lines

    def fields(self, rows: list[tuple[str, str]], label_width: float = 42, size: float = 10):
        """Label: value lines, values wrapping under themselves; empty values are left out."""
        for label, value in rows:
            value = clean(value).strip()
            if not value:
                continue
            if self.y > self.page_break_trigger - 6:
                self.add_page()
            top = self.y
            self.set_font(FAMILY, "B", size)
            self.multi_cell(label_width, size * 0.5, clean(label), align="L", new_x=XPos.RIGHT, new_y=YPos.TOP)
            self.set_font(FAMILY, "", size)
            self.set_y(top)
            self.set_x(MARGIN + label_width)
            self.multi_cell(0, size * 0.5, value, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(2)

    def _column_widths(self, headers: list[str], rows: list[list[str]]) -> tuple[float, ...]:
        """HTML-style auto layout: every column gets its longest word (so words do not break), and the space
        left is shared in proportion to how much more each column's longest cell would like."""
        pad, available = 2 * self.c_margin + 0.5, self.epw
        least, most = [], []
        for i, h in enumerate(headers):
            cells = [h + h[:len(h) // 8]] + [r[i] for r in rows if i < len(r)]  # the bold heading is wider
            words = {w for c in cells for w in c.split()} or {""}
            least.append(min(max(self.get_string_width(w) for w in words) + pad, available * 0.45))
            most.append(min(max(self.get_string_width(c) for c in cells) + pad, available * 0.45))
        most = [max(m, l) for m, l in zip(most, least)]
        if sum(least) >= available:
            return tuple(least)
        if sum(most) <= available:
            spare = available - sum(most)
            return tuple(m + spare * m / sum(most) for m in most)
        extra = [m - l for m, l in zip(most, least)]
        spare = available - sum(least)
        return tuple(l + spare * e / (sum(extra) or 1) for l, e in zip(least, extra))

    def grid(self, headers: list[str], rows: list[list[str]]):
        """A table whose heading row repeats on every page it runs over; column widths follow the content.
        Drawn by hand rather than with fpdf2's table(), which wraps every cell twice: only cells that do not
        fit their column are wrapped here (the packet's 10-page benchmark runs in about half the time)."""
        self.set_font(FAMILY, "", 8)
        widths = self._column_widths(headers, rows)
        scale = self.epw / sum(widths)
        widths = [w * scale for w in widths]
        self._row([clean(h) for h in headers], widths, heading=True)
        for cells in rows:
            cells = [clean(c) for c in cells][:len(headers)]
            self._row(cells + [""] * (len(headers) - len(cells)), widths, headings=headers)
        self.ln(3)
        self.set_font(FAMILY, "", 10)

    def _lines(self, text: str, width: float) -> list[str]:
        if "\n" not in text and self.get_string_width(text) <= width - 2 * self.c_margin:
            return [text]
        return self.wrap(text, width)

    def _row(self, cells: list[str], widths: list[float], heading: bool = False, headings=None):
        self.set_font(FAMILY, "B" if heading else "", 8)
        lines = [self._lines(text, w) for text, w in zip(cells, widths)]
        height = max(len(ls) for ls in lines) * CELL_LINE + 2 * CELL_PAD
        if self.y + height > self.page_break_trigger:
            self.add_page()
            if headings is not None:
                self._row([clean(h) for h in headings], widths, heading=True)
                self.set_font(FAMILY, "", 8)
        top, x = self.y, self.l_margin
        if heading:
            self.set_fill_color(*GREY)
            self.rect(x, top, self.epw, height, style="F")
        for cell_lines, w in zip(lines, widths):
            for k, line in enumerate(cell_lines):
                self.set_xy(x, top + CELL_PAD + k * CELL_LINE)
                self.cell(w, CELL_LINE, line)
            x += w
        self.set_draw_color(170, 170, 170)
        self.line(self.l_margin, top + height, self.l_margin + self.epw, top + height)
        self.set_xy(self.l_margin, top + height)


def _full_name(patient) -> str:
    return " ".join(part for part in (patient.first_name, patient.middle_name, patient.last_name) if part)


def _address(line, city, state, postal) -> str:
    return ", ".join(part for part in (line, city, f"{state} {postal}".strip()) if part)


def _contact(draft: ReferralDraft) -> Contact | None:
    if draft.contact_id:
        return Contact.get_or_none(Contact.id == draft.contact_id)
    if draft.channel == "direct" and draft.recipient.strip():
        return Contact.get_or_none(Contact.direct_address == draft.recipient.strip())
    return None


def _recipient(ctx: Context) -> dict[str, str]:
    draft = ctx.draft
    contact = _contact(draft)
    extra = draft.extra or {}
    info = {
        "name": ctx.recipient_name,
        "organization": (contact.organization if contact else "") or extra.get("organization", ""),
        "specialty": (contact.specialty if contact else "") or extra.get("specialty", ""),
        "phone": (contact.phone if contact else "") or extra.get("phone", ""),
        "fax": (contact.fax if contact else "") or "",
        "direct": (contact.direct_address if contact else "") or "",
    }
    if draft.channel == "efax" and draft.recipient.strip():
        try:
            info["fax"] = format_fax(check_fax_number(draft.recipient))
        except AddressError:
            info["fax"] = draft.recipient.strip()
    if draft.channel == "direct" and draft.recipient.strip():
        info["direct"] = draft.recipient.strip()
    return info


def _diagnoses(ctx: Context) -> list[str]:
    """The encounter diagnosis, then (when the problem list is sent) the active problems' ICD-10-CM codes."""
    seen, out = set(), []
    enc = ctx.encounter
    if enc is not None and enc.diagnosis_code:
        seen.add(enc.diagnosis_code)
        out.append(f"{enc.diagnosis_code} {enc.diagnosis}".strip())
    if ctx.included("problems"):
        for p in Problem.select().where(Problem.patient == ctx.patient.id).order_by(Problem.id):
            if p.icd10_code and p.icd10_code not in seen and (p.status or "active").lower() == "active":
                seen.add(p.icd10_code)
                out.append(f"{p.icd10_code} {p.display}")
    return out


def _sender(ctx: Context) -> dict[str, str]:
    a, p = ctx.author, ctx.practice
    return {
        "name": a.display_name if a else p.name,
        "npi": a.npi if a else p.npi,
        "specialty": a.specialty if a else "",
        "organization": p.name,
        "address": _address(p.address_line, p.city, p.state, p.postal_code),
        "phone": p.phone or (a.phone if a else ""),
        "fax": p.fax or (a.fax if a else ""),
        "direct": p.direct_address,
        "own_direct": a.direct_address if a and a.direct_address != p.direct_address else "",
        "practice_npi": p.npi,
    }


def _cover(pdf: PacketPDF, ctx: Context, sender: dict, recipient: dict, subject: str):
    pdf.add_page()
    pdf.start_section("Fax cover sheet")
    pdf.set_font(FAMILY, "B", 26)
    pdf.cell(0, 14, "FAX", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FAMILY, "", 10)
    pdf.ln(2)
    pdf.fields([
        ("To", recipient["name"]),
        ("Organization", recipient["organization"]),
        ("Phone", recipient["phone"]),
        ("Fax", recipient["fax"]),
    ], label_width=36, size=11)
    pdf.fields([
        ("From", sender["name"]),
        ("Organization", sender["organization"]),
        ("Phone", sender["phone"]),
        ("Fax", sender["fax"]),
    ], label_width=36, size=11)
    pdf.fields([
        ("Date", _when(ctx.now)),
        ("Pages", "{nb} (including this cover sheet)"),
        ("Subject", subject),
        ("Urgency", ctx.draft.urgency.capitalize()),
    ], label_width=36, size=11)
    if ctx.draft.message.strip():
        pdf.para("Message", bold=True, gap=1)
        pdf.para(ctx.draft.message.strip())
    pdf.ln(6)
    pdf.set_fill_color(*GREY)
    pdf.set_font(FAMILY, "B", 9)
    pdf.multi_cell(0, 4.5, CONFIDENTIAL, border=1, fill=True, align="L", padding=2,
                   new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FAMILY, "", 10)
    pdf.set_fill_color(255, 255, 255)


def _letter(pdf: PacketPDF, ctx: Context, sender: dict, recipient: dict, subject: str):
    draft, patient = ctx.draft, ctx.patient
    pdf.add_page()
    pdf.heading(document_title(draft), size=15)
    pdf.set_font(FAMILY, "B", 11)
    pdf.multi_cell(0, 5.5, clean(sender["organization"]), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FAMILY, "", 9)
    contact_line = "   ".join(part for part in (
        sender["address"], f"Phone {sender['phone']}" if sender["phone"] else "",
        f"Fax {sender['fax']}" if sender["fax"] else "", f"Direct {sender['direct']}" if sender["direct"] else "",
    ) if part)
    pdf.multi_cell(0, 4.5, clean(contact_line), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    pdf.fields([("Date", _date(ctx.now)), ("Subject", subject)])

    pdf.para("Referring clinician", bold=True, size=11, gap=1)
    pdf.fields([
        ("Name", sender["name"]), ("NPI", sender["npi"]), ("Specialty", sender["specialty"]),
        ("Practice", f"{sender['organization']} (NPI {sender['practice_npi']})"),
        ("Phone", sender["phone"]), ("Fax", sender["fax"]), ("Direct address", sender["direct"]),
        ("Clinician Direct", sender["own_direct"]),
    ])
    pdf.para("Referred to", bold=True, size=11, gap=1)
    pdf.fields([
        ("Name", recipient["name"]), ("Specialty", recipient["specialty"]),
        ("Organization", recipient["organization"]), ("Phone", recipient["phone"]), ("Fax", recipient["fax"]),
        ("Direct address", recipient["direct"]),
    ])
    pdf.para("Patient", bold=True, size=11, gap=1)
    payers = list(Payer.select().where(Payer.patient == patient.id).order_by(Payer.id))
    insurance = "\n".join(
        ", ".join(x for x in (p.payer_name, p.payer_type, f"member id {p.member_id}" if p.member_id else "",
                              f"group {p.group_number}" if p.group_number else "") if x) for p in payers)
    pdf.fields([
        ("Name", _full_name(patient)), ("Date of birth", _date(patient.birth_date)), ("MRN", patient.mrn),
        ("Sex", SEXES.get(patient.sex, patient.sex)), ("Phone", patient.phone),
        ("Address", _address(patient.address_line, patient.city, patient.state, patient.postal_code)),
        ("Insurance", insurance or "None on file"),
    ])
    reason = draft.reason.strip() or (ctx.encounter.reason if ctx.encounter is not None else "")
    pdf.para("Referral", bold=True, size=11, gap=1)
    pdf.fields([
        ("Reason", reason or "No reason for referral was given."),
        ("Urgency", draft.urgency.capitalize()),
        ("Diagnosis codes", "\n".join(_diagnoses(ctx)) or "None recorded"),
    ])
    if draft.message.strip():
        pdf.para(draft.message.strip())
    back = " or ".join(x for x in (f"Direct to {sender['direct']}" if sender["direct"] else "",
                                    f"fax to {sender['fax']}" if sender["fax"] else "") if x)
    pdf.para("Please send your consultation report back to us" + (f" by {back}" if back else "") +
             ". Thank you for seeing this patient.")
    pdf.ln(4)
    if pdf.y > pdf.page_break_trigger - 30:
        pdf.add_page()
    pdf.para("Sincerely,", gap=10)
    pdf.set_draw_color(0, 0, 0)
    pdf.line(MARGIN, pdf.y, MARGIN + 70, pdf.y)
    pdf.ln(1)
    signature = [sender["name"], f"NPI {sender['npi']}", sender["organization"]]
    note = ctx.note
    if note is not None and note.signed_at is not None and note.signed_by is not None:
        signature.append(f"Electronically signed by {note.signed_by.display_name} on {_when(note.signed_at)}")
    pdf.para("\n".join(s for s in signature if s))


def _summary(pdf: PacketPDF, sections: list[Section]):
    if not sections:
        return
    pdf.add_page()
    pdf.heading("Clinical summary", size=15)
    for section in sections:
        pdf.heading(section.title, size=12)
        for block in section.blocks:
            if block.kind == "table" and block.rows:
                pdf.grid(block.headers, block.rows)
            elif block.text:
                pdf.para(block.text)


def _note(pdf: PacketPDF, ctx: Context):
    note = ctx.note
    pdf.add_page()
    pdf.heading(f"Encounter note: {note.title or note.type_display}", size=15)
    signed = (f"{note.signed_by.display_name}, {_when(note.signed_at)}"
              if note.signed_at is not None and note.signed_by is not None else "UNSIGNED")
    pdf.fields([("Type", note.type_display), ("Author", note.author.display_name),
                ("Written", _when(note.written_at)), ("Signed", signed)], label_width=24)
    for title, body in note.sections:
        pdf.para(title, bold=True, size=11, gap=1)
        pdf.para(body or "", gap=3)


def _document(ctx: Context, title: str, subject: str) -> PacketPDF:
    patient = ctx.patient
    patient_line = clean(f"{_full_name(patient)}   DOB {_date(patient.birth_date)}   MRN {patient.mrn}")
    pdf = PacketPDF(patient_line, clean(f"{title} · {ctx.practice.name}"))
    pdf.set_title(subject)
    pdf.set_author(clean(ctx.practice.name))
    pdf.set_creator("referdesk")
    pdf.set_creation_date(ctx.now.replace(tzinfo=dt.timezone.utc) if ctx.now.tzinfo is None else ctx.now)
    return pdf


def build_note_pdf(draft: ReferralDraft) -> bytes:
    """The signed encounter note alone, as the PDF a Direct referral attaches beside its C-CDA."""
    ctx = gather(draft, None)
    if ctx.note is None:
        raise ValueError("this referral has no encounter note")
    pdf = _document(ctx, "Encounter note", clean(f"Encounter note {_date(ctx.note.written_at)}"))
    _note(pdf, ctx)
    return bytes(pdf.output())


def build_referral_pdf(draft: ReferralDraft, *, cover_sheet: bool = False) -> bytes:
    """The referral packet for `draft` as PDF bytes: cover sheet (optional), letter, summary, note (if chosen)."""
    ctx = gather(draft, None)
    subject = clean(draft.subject.strip() or default_subject(ctx.patient, draft.direction))
    pdf = _document(ctx, document_title(draft), subject)
    sender, recipient = _sender(ctx), _recipient(ctx)
    if cover_sheet:
        _cover(pdf, ctx, sender, recipient, subject)
    _letter(pdf, ctx, sender, recipient, subject)
    _summary(pdf, summary_sections(ctx))
    if draft.include_note and ctx.note is not None:
        _note(pdf, ctx)
    return bytes(pdf.output())
