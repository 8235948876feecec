"""A C-CDA as HTML, through HL7's own CDA.xsl when the site has it (config `[ccda] stylesheet`).

The document is parsed as the viewer parses it (no entities, DTDs or network); the stylesheet may read files
beside itself (its localisation table) but may not write files or touch the network. The stylesheet's own
escaping keeps narrative text inert; referdesk adds nothing to the HTML.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from documents.ccda_view import CcdaViewError, parse_xml

_ACCESS = etree.XSLTAccessControl(read_file=True, write_file=False, create_dir=False, read_network=False,
                                  write_network=False)
_compiled: dict[Path, etree.XSLT] = {}


class RenderError(Exception):
    """The document or the stylesheet cannot be used; the message says which and why."""


def _stylesheet(path: Path) -> etree.XSLT:
    path = path.resolve()
    if path not in _compiled:
        try:
            parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
            _compiled[path] = etree.XSLT(etree.parse(str(path), parser), access_control=_ACCESS)
        except OSError as exc:
            raise RenderError(f"cannot read the CDA stylesheet {path}: {exc}") from exc
        except (etree.XMLSyntaxError, etree.XSLTParseError) as exc:
            raise RenderError(f"{path} is not a usable XSLT stylesheet: {exc}") from exc
    return _compiled[path]


def render_html(data: bytes, stylesheet: Path | str) -> bytes:
    """The document rendered to HTML by `stylesheet` (HL7's CDA.xsl, loaded from its own folder)."""
    try:
        root = parse_xml(data)
    except CcdaViewError as exc:
        raise RenderError(str(exc)) from exc
    transform = _stylesheet(Path(stylesheet))
    try:
        result = transform(root.getroottree())
    except etree.XSLTApplyError as exc:
        raise RenderError(f"the stylesheet failed on this document: {exc}") from exc
    return etree.tostring(result, method="html", encoding="UTF-8")
