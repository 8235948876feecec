"""build_ccda: the Transition of Care document for a referral, as UTF-8 XML bytes.

"transferring" gives a C-CDA R2.1 Referral Note, "receiving" a Continuity of Care Document, and "receiving" with
`extra["document"] == "consultation"` the consultant's report back, a Consultation Note. Built with lxml so every
value is escaped by the serializer, never by hand."""

from __future__ import annotations

from lxml import etree

from documents.ccda import header
from documents.ccda.context import gather
from documents.ccda.header import build_header
from documents.ccda.sections import add_sections
from documents.ccda.xml import el
from models.referring import ReferralDraft


def build_ccda(draft: ReferralDraft, *, document_id: str | None = None) -> bytes:
    """The C-CDA for `draft`; `document_id` (a UUID, or any string) keeps the id stable per referral."""
    ctx = gather(draft, document_id)
    root = build_header(ctx)
    body = el(el(root, "component"), "structuredBody")
    add_sections(body, ctx)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def document_title(draft: ReferralDraft) -> str:
    """The attachment's title: "Referral Note", "Continuity of Care Document" or "Consultation Note"."""
    return header.document_title(draft)
