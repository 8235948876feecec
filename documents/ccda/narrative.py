"""Section narrative (the human-readable text block): tables and paragraphs whose cells carry the IDs the
coded entries reference."""

from __future__ import annotations

from documents.ccda.xml import el


def table(text, headers: list[str], rows: list[tuple[str | None, list[str]]]):
    """A table; each row is (id of its first cell or None, cell texts). The id goes on a <content> so a
    reference resolves to the item's own words."""
    tbl = el(text, "table", border="1", width="100%")
    head = el(el(tbl, "thead"), "tr")
    for h in headers:
        el(head, "th", text=h)
    body = el(tbl, "tbody")
    for ref, cells in rows:
        tr = el(body, "tr")
        for i, cell in enumerate(cells):
            td = el(tr, "td")
            if i == 0 and ref:
                el(td, "content", ID=ref, text=cell)
            else:
                td.text = cell
    return tbl


def paragraph(text, words: str, ref: str | None = None):
    return el(text, "paragraph", ID=ref, text=words)
