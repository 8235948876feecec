"""What the receiving tests share: the practice and a consultant partner with certificates from the session's
test PKI (tests/direct_ca.py: CRLs served over loopback HTTP), a small practice database with patients and
referrals waiting for their reports, and ways to make the messages a consultant's system sends — with
referdesk's own sign/encrypt (as a partner running referdesk would) or with the real `openssl cms`. Not a test
module.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import subprocess
from dataclasses import dataclass
from pathlib import Path

from direct_ca import make_leaf
from direct_pki import NOW, Issued, rsa_key, write_key, write_pem
from models.referrals import Document, InboundMessage, OutboxJob, Referral
from transports.direct.identity import Identity
from transports.direct.mime import Part, compose_message, transport_headers, wrap_rfc822
from transports.direct.notifications import parse_notification, read_message
from transports.direct.receiving import make_opener
from transports.direct.recipient import DirectSettings
from transports.direct.smime import encrypt, sign

PRACTICE = "referrals@direct.riverbend-family.example"
PARTNER = "ruiz@cardio.example.org"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "standards"
DIRECT = SHARED / "direct"
CONSULT_NOTE = (SHARED / "cda" / "examples" / "hl7-c-cda-examples" / "Documents" / "Consultation Note"
                / "Consultation_Note.xml")  # HL7's example consultation note: patient Eve Betterhalf, 1975-05-01
EVE_MRN, ALICE_MRN, MYRA_MRN, ALICE_TWIN_MRN, ZOE_MRN = "2000001", "2000002", "2000003", "2000004", "2000005"
TODAY = dt.date(2026, 11, 2)  # the frozen clock's day (TZ is UTC in the tests)


@dataclass
class Parties:
    folder: Path
    practice: Issued
    partner: Issued
    expired: Issued  # the partner's old certificate (expired last month)
    stranger: Issued  # for the partner's address, from a CA nobody trusts
    revoked: Issued  # for the partner's address, revoked by the trusted CA

    def identity(self, leaf: Issued) -> Identity:
        return Identity(leaf.cert, leaf.key)


def make_parties(pki, folder: Path) -> Parties:
    crl = pki.root_crl_url
    practice = make_leaf(pki.root, emails=[PRACTICE], key=rsa_key(slot="recv-practice"), cn="practice", crl_url=crl)
    partner = make_leaf(pki.root, emails=[PARTNER], key=rsa_key(slot="recv-partner"), cn="Dr Ruiz", crl_url=crl)
    expired = make_leaf(pki.root, emails=[PARTNER], key=rsa_key(slot="recv-partner"), cn="Dr Ruiz (old)",
                        crl_url=crl, start=NOW - dt.timedelta(days=800), end=NOW - dt.timedelta(days=30))
    stranger = make_leaf(pki.other_root, emails=[PARTNER], key=rsa_key(slot="recv-stranger"), cn="Not Dr Ruiz")
    revoked = make_leaf(pki.root, emails=[PARTNER], key=rsa_key(slot="recv-revoked"), cn="Dr Ruiz (lost laptop)",
                        crl_url=crl)
    pki.revoke(revoked.cert)
    parties = Parties(folder, practice, partner, expired, stranger, revoked)
    for name in ("practice", "partner", "expired", "stranger", "revoked"):
        leaf = getattr(parties, name)
        write_pem(folder / f"{name}.pem", leaf.cert)
        write_key(folder / f"{name}.key", leaf.key)
    return parties


def opener_for(parties: Parties, pki):
    settings = DirectSettings(anchors=(pki.root.cert,), fetch_timeout=2.0)
    return make_opener(parties.identity(parties.practice), settings, address=PRACTICE)


# --- the practice's database ------------------------------------------------------------------------------

@dataclass
class Site:
    referrals: dict[str, int]  # mrn -> the open referral sent to PARTNER


def make_site() -> Site:
    from models.patients import Patient
    from models.practice import Practice

    Practice.create(name="Riverbend Family Medicine", npi="1234567893", direct_address=PRACTICE)
    people = [(EVE_MRN, "Betterhalf", "Eve", dt.date(1975, 5, 1), "F"),
              (ALICE_MRN, "Newman", "Alice", dt.date(1970, 5, 1), "F"),
              (MYRA_MRN, "Jones", "Myra", dt.date(1947, 5, 1), "F"),
              (ALICE_TWIN_MRN, "Newman", "Alice", dt.date(1971, 5, 1), "F"),  # same name, another birthday
              (ZOE_MRN, "Ångström", "Zoë", dt.date(1961, 4, 9), "F")]
    referrals = {}
    for mrn, last, first, born, sex in people:
        patient = Patient.create(mrn=mrn, last_name=last, first_name=first, birth_date=born, sex=sex)
        recipient = "Ruiz@Cardio.Example.org" if mrn == ALICE_MRN else PARTNER  # typed with capitals once
        referrals[mrn] = Referral.create(
            patient=patient, channel="direct", recipient=recipient, recipient_name="Dr Ruiz", status="delivered",
            message_id=f"<ref-{mrn}@direct.riverbend-family.example>", created_at=NOW - dt.timedelta(days=12),
            sent_at=NOW - dt.timedelta(days=12), delivered_at=NOW - dt.timedelta(days=12)).id
    return Site(referrals)


# --- messages ------------------------------------------------------------------------------------------------

def ccda(last: str, first: str, born: str, *, title: str = "Consultation Note", doctype: str = "") -> bytes:
    """A small C-CDA naming a patient (enough for read_summary's header and the matching)."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}'
            '<ClinicalDocument xmlns="urn:hl7-org:v3">'
            '<templateId root="2.16.840.1.113883.10.20.22.1.1" extension="2015-08-01"/>'
            '<templateId root="2.16.840.1.113883.10.20.22.1.4" extension="2015-08-01"/>'
            '<code code="11488-4" codeSystem="2.16.840.1.113883.6.1" displayName="Consult note"/>'
            f'<title>{title}</title><effectiveTime value="20261101"/>'
            '<recordTarget><patientRole><id root="2.16.840.1.113883.19.5" extension="cardio-77"/><patient>'
            f'<name><given>{first}</given><family>{last}</family></name>'
            '<administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>'
            f'<birthTime value="{born}"/></patient></patientRole></recordTarget>'
            '<component><structuredBody><component><section><title>Assessment</title>'
            '<text>Stable.</text></section></component></structuredBody></component>'
            '</ClinicalDocument>\n').encode()


def inner_message(*, message_id: str, attachments: list[Part], text: str = "Dear colleague,\nmy report is "
                  "attached.\n", in_reply_to: str | None = None, subject: str = "Consultation report",
                  sender: str = PARTNER, request_mdn: bool = True, notify_to: str | None = None,
                  final_delivery: bool = True) -> bytes:
    """The RFC 5322 message a consultant's system sends back (CRLF), optionally answering one of ours."""
    inner = compose_message(sender=sender, recipients=[PRACTICE], subject=subject, text=text,
                            attachments=attachments, message_id=message_id, date=NOW - dt.timedelta(hours=1),
                            request_mdn=request_mdn)
    extra = b""
    if in_reply_to:
        extra += f"In-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\n".encode()
    if notify_to:
        inner = inner.replace(f"Disposition-Notification-To: {sender}".encode(),
                              f"Disposition-Notification-To: {notify_to}".encode())
    if request_mdn and not final_delivery:
        inner = inner.replace(b"Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY="
                              b"optional,true\r\n", b"")
    return extra + inner


def envelope(inner: bytes, *, sender: str = PARTNER, message_id: str | None = None,
             subject: str = "Consultation report") -> bytes:
    """The transport headers a HISP routes by."""
    if message_id is None:
        message_id = read_message(inner)["Message-ID"]
    return transport_headers(sender=sender, recipients=[PRACTICE], subject=subject, message_id=message_id,
                             date=NOW - dt.timedelta(hours=1))


def body_entity(inner: bytes) -> bytes:
    """An unwrapped message's signed entity: the body with its Content-Type (folded lines included) only; the
    message's other headers ride outside, in the envelope."""
    head, body = inner.split(b"\r\n\r\n", 1)
    lines, keep = [], False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if keep:
                lines.append(line)
            continue
        keep = line.lower().startswith(b"content-type:")
        if keep:
            lines.append(line)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def seal(inner: bytes, parties: Parties, *, signer: Issued | None = None, wrap: bool = True,
         encrypt_to: bool = True, headers: bytes | None = None) -> bytes:
    """As referdesk's sealing does it: sign (the whole message when wrapped, else its body entity), encrypt to
    the practice, under transport headers. `signer` None: not signed; `encrypt_to` False: not encrypted."""
    entity = wrap_rfc822(inner) if wrap else body_entity(inner)
    if signer is not None:
        entity = sign(entity, Identity(signer.cert, signer.key), signing_time=NOW - dt.timedelta(hours=1))
    if encrypt_to:
        entity = encrypt(entity, [parties.practice.cert])
    return (envelope_for(inner, wrap) if headers is None else headers) + entity


def envelope_for(inner: bytes, wrap: bool) -> bytes:
    """Transport headers; for an unwrapped message also the message's own (MDN request, In-Reply-To), which
    have nowhere else to go."""
    headers = envelope(inner)
    if not wrap:
        head = inner.split(b"\r\n\r\n", 1)[0]
        keep = [line for line in head.split(b"\r\n")
                if line.split(b":", 1)[0].lower() in (b"disposition-notification-to",
                                                      b"disposition-notification-options", b"in-reply-to",
                                                      b"references")]
        headers += b"".join(line + b"\r\n" for line in keep)
    return headers


def openssl(folder: Path, *args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], cwd=folder, input=data, capture_output=True)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def openssl_seal(inner: bytes, parties: Parties, *, signers=("partner",), cipher: str = "-aes256",
                 wrap: bool = True) -> bytes:
    """The same message made by the real `openssl cms`: signed by each of `signers` (SHA-256), encrypted."""
    entity = wrap_rfc822(inner) if wrap else body_entity(inner)
    signer_args = [arg for name in signers for arg in ("-signer", f"{name}.pem", "-inkey", f"{name}.key")]
    signed = openssl(parties.folder, "cms", "-sign", *signer_args, "-md", "sha256", data=entity)
    enveloped = openssl(parties.folder, "cms", "-encrypt", cipher, "-recip", "practice.pem", data=signed)
    return envelope_for(inner, wrap) + enveloped.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# --- what happened ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueuedMdn:
    disposition: str
    original_message_id: str
    final_destination: bool
    recipient: str
    state: str
    asks_for_mdn: bool  # an MDN must never carry Disposition-Notification-To
    failure: str


def mdns(inbound_id: int | None = None) -> list[QueuedMdn]:
    query = OutboxJob.select().where(OutboxJob.kind == "mdn").order_by(OutboxJob.id)
    if inbound_id is not None:
        query = query.where(OutboxJob.inbound == inbound_id)
    found = []
    for job in query:
        message = email.message_from_bytes(bytes(job.payload), policy=email.policy.compat32)
        notification = parse_notification(message)
        report = next(p for p in message.walk() if p.get_content_type() == "message/disposition-notification")
        fields = report.get_payload()[0] if report.is_multipart() else None
        failure = str(fields.get("Failure", "")) if fields is not None else ""
        found.append(QueuedMdn(notification.kind, notification.original_message_id, notification.final_destination,
                               job.recipient, job.state, message["Disposition-Notification-To"] is not None,
                               failure))
    return found


def inbound(message_id: str) -> InboundMessage:
    return InboundMessage.select().where(InboundMessage.message_id == message_id).order_by(
        InboundMessage.id.desc()).first()


def documents_of(inbound_id: int, owner: str | None = None) -> list[Document]:
    query = Document.select().where(Document.inbound == inbound_id, Document.kind != "findings")
    if owner:
        query = query.where(Document.owner == owner)
    return list(query.order_by(Document.id))
