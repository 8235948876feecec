"""Who we send to: the practice's address book, and the provider directory it is filled from."""

from __future__ import annotations

import peewee as pw

from models.db import BaseModel
from models.practice import Provider


class Contact(BaseModel):
    """An address-book entry. Verification state is remembered so the To: field can show it at once; a
    Direct send still re-verifies the certificate."""

    name = pw.CharField()
    organization = pw.CharField(default="")
    specialty = pw.CharField(default="")
    npi = pw.CharField(default="")
    direct_address = pw.CharField(default="", index=True)
    fax = pw.CharField(default="")
    phone = pw.CharField(default="")
    provider = pw.ForeignKeyField(Provider, null=True, backref="contacts", on_delete="SET NULL")
    verification = pw.CharField(default="unverified")  # unverified | verified | invalid
    verification_reason = pw.CharField(default="")
    verified_at = pw.DateTimeField(null=True)
    cert_fingerprint = pw.CharField(default="")  # SHA-256 of the recipient certificate last trusted
    name_norm = pw.CharField(default="", index=True)


class DirectoryEntry(BaseModel):
    """A provider endpoint from a directory (NPPES Endpoint Reference File, a FHIR Bundle, or seed data)."""

    npi = pw.CharField(default="", index=True)
    name = pw.CharField()
    organization = pw.CharField(default="")
    specialty = pw.CharField(default="")
    endpoint_type = pw.CharField(default="DIRECT")
    endpoint = pw.CharField()  # the Direct address (no mailto:) or other endpoint
    use_code = pw.CharField(default="")
    address_line = pw.CharField(default="")
    city = pw.CharField(default="")
    state = pw.CharField(default="")
    postal_code = pw.CharField(default="")
    country = pw.CharField(default="")
    source = pw.CharField(default="")  # nppes | fhir | seed
    name_norm = pw.CharField(default="", index=True)
    organization_norm = pw.CharField(default="", index=True)
    city_norm = pw.CharField(default="", index=True)

    class Meta:
        indexes = ((("endpoint", "npi"), True),)
