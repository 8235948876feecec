"""HTML rendering through HL7's CDA.xsl, with the parser and stylesheet locked down."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import html

from documents.ccda_html import RenderError, render_html

CDA = Path(__file__).resolve().parents[2] / "shared" / "standards" / "cda"
STYLESHEET = CDA / "stylesheet" / "CDA.xsl"
CCD = CDA / "examples" / "hl7-c-cda-examples" / "Documents" / "CCD" / "CCD 1" / "CCD.XML"


def test_ccd_renders_with_its_sections_and_patient():
    page = html.document_fromstring(render_html(CCD.read_bytes(), STYLESHEET))
    text = page.text_content()
    assert "Patient Chart Summary" in text and "Eve" in text and "ALLERGIES" in text.upper()
    assert page.xpath("//*[local-name()='table']")


def test_markup_in_narrative_stays_text():
    doc = CCD.read_bytes().replace(b"Patient Chart Summary", b"Chart &lt;script&gt;alert(1)&lt;/script&gt;", 1)
    out = render_html(doc, STYLESHEET)
    assert b"<script>alert(1)</script>" not in out
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in out


def test_doctype_and_a_missing_stylesheet_are_refused_with_a_reason(tmp_path):
    with pytest.raises(RenderError, match="DOCTYPE"):
        render_html(b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><ClinicalDocument '
                    b'xmlns="urn:hl7-org:v3">&e;</ClinicalDocument>', STYLESHEET)
    with pytest.raises(RenderError, match="cannot read the CDA stylesheet"):
        render_html(CCD.read_bytes(), tmp_path / "missing.xsl")


def test_a_stylesheet_that_writes_files_is_stopped(tmp_path):
    evil = tmp_path / "evil.xsl"
    target = tmp_path / "written.txt"
    evil.write_text(
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" '
        'xmlns:exsl="http://exslt.org/common" extension-element-prefixes="exsl">'
        f'<xsl:template match="/"><exsl:document href="{target}">x</exsl:document><html/></xsl:template>'
        '</xsl:stylesheet>')
    with pytest.raises(RenderError, match="failed on this document"):
        render_html(CCD.read_bytes(), evil)
    assert not target.exists()
