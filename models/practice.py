"""The practice itself, its users, and providers (ours and the ones we refer to)."""

from __future__ import annotations

import peewee as pw

from models.db import BaseModel


class Practice(BaseModel):
    name = pw.CharField()
    npi = pw.CharField(max_length=10)
    address_line = pw.CharField(default="")
    city = pw.CharField(default="")
    state = pw.CharField(max_length=2, default="")
    postal_code = pw.CharField(max_length=10, default="")
    phone = pw.CharField(default="")
    fax = pw.CharField(default="")
    direct_address = pw.CharField(default="")


class Provider(BaseModel):
    """A clinician identified by NPI; `in_practice` marks our own clinicians (note authors, care team)."""

    npi = pw.CharField(max_length=10, unique=True)
    first_name = pw.CharField()
    last_name = pw.CharField()
    credentials = pw.CharField(default="")
    specialty_code = pw.CharField(default="")  # NUCC provider taxonomy code
    specialty = pw.CharField(default="")
    organization = pw.CharField(default="")
    address_line = pw.CharField(default="")
    city = pw.CharField(default="")
    state = pw.CharField(max_length=2, default="")
    postal_code = pw.CharField(max_length=10, default="")
    phone = pw.CharField(default="")
    fax = pw.CharField(default="")
    direct_address = pw.CharField(default="")
    in_practice = pw.BooleanField(default=False)

    @property
    def display_name(self) -> str:
        suffix = f", {self.credentials}" if self.credentials else ""
        return f"{self.first_name} {self.last_name}{suffix}"


class User(BaseModel):
    """Someone who signs in to referdesk; clinicians are linked to their Provider record. Accounts, sign-in and
    passwords are models/users.py's; what each role may do is models/access.py's."""

    username = pw.CharField(unique=True)
    display_name = pw.CharField()
    role = pw.CharField(default="front-desk")  # front-desk | clinician | admin
    provider = pw.ForeignKeyField(Provider, null=True, backref="users", on_delete="SET NULL")
    active = pw.BooleanField(default=True)
    os_user = pw.CharField(default="")  # the operating-system login that is this account ("": same as username)
    password_hash = pw.CharField(default="")  # scrypt$n$r$p$salt$hash (models.users); "": no password set
