"""Small lxml helpers for CDA: every value goes through lxml, so escaping is never hand-made."""

from __future__ import annotations

import datetime as dt
import uuid

from lxml import etree

V3 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SDTC = "urn:hl7-org:sdtc"
NSMAP = {None: V3, "xsi": XSI, "sdtc": SDTC}
XSI_TYPE = f"{{{XSI}}}type"

# Code systems (OIDs) and their names
LOINC = ("2.16.840.1.113883.6.1", "LOINC")
SNOMED = ("2.16.840.1.113883.6.96", "SNOMED CT")
ICD10 = ("2.16.840.1.113883.6.90", "ICD-10-CM")
RXNORM = ("2.16.840.1.113883.6.88", "RxNorm")
CVX = ("2.16.840.1.113883.12.292", "CVX")
CPT = ("2.16.840.1.113883.6.12", "CPT")
NCI = ("2.16.840.1.113883.3.26.1.1", "NCI Thesaurus")
NUCC = ("2.16.840.1.113883.6.101", "NUCC")
UNII = ("2.16.840.1.113883.4.9", "UNII")
ACT_CLASS = ("2.16.840.1.113883.5.6", "HL7ActClass")
ACT_CODE = ("2.16.840.1.113883.5.4", "ActCode")
INTERPRETATION = ("2.16.840.1.113883.5.83", "ObservationInterpretation")
CDC_RACE = ("2.16.840.1.113883.6.238", "CDC Race and Ethnicity")
SOP = ("2.16.840.1.113883.3.221.5", "Source of Payment Typology")
NPI_ROOT = "2.16.840.1.113883.4.6"
SYSTEMS = {"SNOMED CT": SNOMED, "LOINC": LOINC, "RxNorm": RXNORM, "CPT": CPT, "ICD-10-CM": ICD10,
           "UNII": UNII, "CVX": CVX}


def el(parent, tag: str, attrib: dict | None = None, text: str | None = None, **kw):
    """A child in the v3 namespace; attribute values that are None are dropped."""
    attrs = {k: str(v) for k, v in {**(attrib or {}), **kw}.items() if v is not None}
    node = etree.SubElement(parent, f"{{{V3}}}{tag}", attrs)
    if text is not None:
        node.text = text
    return node


def sdtc(parent, tag: str, **attrs):
    return etree.SubElement(parent, f"{{{SDTC}}}{tag}", {k: str(v) for k, v in attrs.items() if v is not None})


def template(parent, root: str, extension: str | None = None):
    return el(parent, "templateId", root=root, extension=extension)


def code(parent, tag: str, value: str, system: tuple[str, str], display: str | None = None, *,
         xsi_type: str | None = None, ref: str | None = None):
    """A coded element (code, value, routeCode…), with originalText pointing at the narrative when given."""
    node = el(parent, tag, code=value, codeSystem=system[0], codeSystemName=system[1], displayName=display or None)
    if xsi_type:
        node.set(XSI_TYPE, xsi_type)
    if ref:
        reference(el(node, "originalText"), ref)
    return node


def reference(parent, ref: str):
    return el(parent, "reference", value=f"#{ref}")


def text_ref(parent, ref: str):
    """The entry's text, pointing at its narrative (text/reference/@value = #id)."""
    reference(el(parent, "text"), ref)


def ts(value: dt.date | dt.datetime | None) -> str | None:
    """HL7 TS: dates as YYYYMMDD, times (stored as naive UTC) with seconds and an explicit +0000."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.strftime("%Y%m%d%H%M%S") + "+0000"
    return value.strftime("%Y%m%d")


def time_el(parent, tag: str, value, *, xsi_type: str | None = None):
    node = el(parent, tag)
    if xsi_type:
        node.set(XSI_TYPE, xsi_type)
    if value is None:
        node.set("nullFlavor", "UNK")
    else:
        node.set("value", ts(value))
    return node


def ivl(parent, tag: str, low, high=None, *, with_high: bool = False):
    """An IVL_TS with low (UNK when unknown) and, when asked, high."""
    node = el(parent, tag)
    time_el(node, "low", low)
    if high is not None or with_high:
        time_el(node, "high", high)
    return node


def identifier(parent, root: str, extension: str | None = None, tag: str = "id"):
    return el(parent, tag, root=root, extension=extension)


def local_root(practice_npi: str) -> str:
    """An OID of our own (2.25 arc, from a UUID of the practice's NPI) under which local ids are issued."""
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:referdesk:practice:{practice_npi}").int)


def telecom(parent, phone: str = "", email: str = "", use: str = "WP", *, required: bool = False):
    """tel:/mailto: telecoms; a nullFlavor telecom when none is known and the template needs one."""
    made = False
    if phone:
        digits = "".join(c for c in phone if c.isdigit() or c == "+")
        if digits and not digits.startswith("+"):
            digits = "+1" + digits if len(digits) == 10 else digits
        el(parent, "telecom", use=use, value=f"tel:{digits}")
        made = True
    if email:
        el(parent, "telecom", use=use, value=f"mailto:{email}")
        made = True
    if not made and required:
        el(parent, "telecom", nullFlavor="UNK")


def address(parent, line: str, city: str, state: str, postal: str, use: str = "WP"):
    """US Realm address: street, city, state, postal code, country (nullFlavor parts when unknown)."""
    addr = el(parent, "addr", use=use)
    for tag, value in (("streetAddressLine", line), ("city", city), ("state", state), ("postalCode", postal)):
        node = el(addr, tag)
        if value:
            node.text = value
        else:
            node.set("nullFlavor", "UNK")
    el(addr, "country", text="US")
    return addr


def person_name(parent, given: str, family: str, suffix: str = "", *, use: str | None = None):
    name = el(parent, "name", use=use)
    for part in given.split():
        el(name, "given", text=part)
    el(name, "family", text=family)
    if suffix:
        el(name, "suffix", text=suffix)
    return name
