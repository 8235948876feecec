"""Property tests of the inbound parser (hypothesis): whatever arrives, `receive_message` returns an outcome and
never raises; the raw message is stored first (its row exists, whatever happened next); documents exist only
for messages that were filed, never half of a message's documents; MDNs only for messages that passed the trust
check; reasons are one line a terminal cannot be steered by. And the C-CDA reader, on mutated documents, never
raises and says what is wrong.

Bounded and reproducible: `derandomize=True` (the examples follow from the test's code, the same on every run and
in CI), at most 200 examples a test, no deadline (sealing and opening S/MIME take milliseconds each).
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import quopri
import zipfile
from contextlib import ExitStack
from unittest import mock

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from direct_ca import http_server, pki  # noqa: F401 (fixtures)
from direct_pki import NOW
from models.referrals import Document, InboundMessage, OutboxJob
from models.safe_text import has_unsafe
from receiving_kit import EVE_MRN, PARTNER, PRACTICE, ccda, make_parties, make_site, opener_for, seal
from transports.direct.mime import transport_headers
from transports.inbound import MAX_BYTES, receive_message

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])
CRLF = b"\r\n"
EVE_REFERRAL = f"<ref-{EVE_MRN}@direct.riverbend-family.example>"
SERIAL = itertools.count(1)


@pytest.fixture(scope="module")
def parties(pki, tmp_path_factory):  # noqa: F811
    return make_parties(pki, tmp_path_factory.mktemp("fuzz"))


@pytest.fixture
def site(db):
    return make_site()


@pytest.fixture
def opener(parties, pki):  # noqa: F811
    return opener_for(parties, pki)


# --- the invariants -------------------------------------------------------------------------------------------

def last_id(model) -> int:
    row = model.select(model.id).order_by(model.id.desc()).first()
    return row.id if row else 0


def received(raw: bytes, opener) -> tuple[object, InboundMessage | None]:
    """`raw` through the pipeline, with every invariant checked; (outcome, its stored row or None when it was
    a duplicate of an earlier one)."""
    rows, documents = last_id(InboundMessage), last_id(Document)
    outcome = receive_message(raw, opener=opener)  # never raises: an exception here fails the property
    assert outcome.outcome in ("accepted", "rejected", "duplicate")
    assert isinstance(outcome.reason, str) and outcome.reason
    assert "\n" not in outcome.reason and "\r" not in outcome.reason and not has_unsafe(outcome.reason)
    new = list(InboundMessage.select().where(InboundMessage.id > rows))
    if outcome.outcome == "duplicate":
        assert new == [] and last_id(Document) == documents
        return outcome, None
    assert len(new) == 1, "stored first: one row per message, whatever happened next"
    row = new[0]
    assert bytes(row.raw) == (raw if len(raw) <= MAX_BYTES else b"")
    assert row.state in ("filed", "unfiled", "rejected", "failed")
    assert (outcome.outcome == "accepted") == (row.state in ("filed", "unfiled"))
    filed = list(Document.select().where(Document.id > documents))
    if row.state in ("filed", "unfiled"):  # all of its documents (none, for a message without text or files)
        assert {d.inbound_id for d in filed} <= {row.id}
    else:
        assert filed == [], "a message that was not filed left documents behind"
        assert row.error and not has_unsafe(row.error) and "\n" not in row.error
    mdns = list(OutboxJob.select().where(OutboxJob.inbound == row.id))
    if row.processed_at is None:
        assert mdns == [], "an MDN for a message that never passed the trust check"
    for job in mdns:  # nothing the sender wrote can add a field to what we send back
        assert not any(line.lower().startswith((b"bcc:", b"x-injected")) for line in bytes(job.payload).split(CRLF))
    return outcome, row


def all_documents_belong_to_filed_messages() -> None:
    stray = (Document.select().join(InboundMessage, on=(Document.inbound == InboundMessage.id))
             .where(InboundMessage.state.not_in(("filed", "unfiled"))).count())
    assert stray == 0


# --- arbitrary bytes ------------------------------------------------------------------------------------------

HEAD = (f"From: {PARTNER}\r\nTo: {PRACTICE}\r\nSubject: fuzz\r\nMIME-Version: 1.0\r\n").encode()
SMIME = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n" \
        b"Content-Transfer-Encoding: base64\r\n\r\n"


def arbitrary_message(shape: str, junk: bytes) -> bytes:
    """Bytes as they come, or the same behind headers that get them further: a Message-ID, an S/MIME type."""
    head = HEAD + f"Message-ID: <fuzz-{next(SERIAL)}@cardio.example.org>\r\n".encode()
    if shape == "raw":
        return junk
    if shape == "headers":
        return head + junk
    if shape == "smime":
        return head + SMIME + junk
    return head + SMIME + base64.encodebytes(junk).replace(b"\n", CRLF)


@FUZZ
@given(shape=st.sampled_from(["raw", "headers", "smime", "smime-base64"]), junk=st.binary(max_size=3000))
def test_arbitrary_bytes_always_end_in_a_stored_outcome(site, opener, shape, junk):
    outcome, row = received(arbitrary_message(shape, junk), opener)
    event(f"{outcome.outcome}: {outcome.reason[:40]}")
    if row is not None:
        assert row.state in ("rejected", "failed")  # nothing from random bytes is ever filed
    all_documents_belong_to_filed_messages()


# --- structured MIME, sealed by the trusted partner ------------------------------------------------------------

def _xdm(document: bytes, uri: str = "DOC0001.XML", name: str = "IHE_XDM/SUBSET01/DOC0001.XML") -> bytes:
    meta = ('<?xml version="1.0"?><SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0">'
            '<RegistryObjectList xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><ExtrinsicObject id="d">'
            f'<Slot name="URI"><ValueList><Value>{uri}</Value></ValueList></Slot></ExtrinsicObject>'
            '</RegistryObjectList></SubmitObjectsRequest>')
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("IHE_XDM/SUBSET01/METADATA.XML", meta)
        package.writestr(name, document)
    return buffer.getvalue()


EVE = ccda("Betterhalf", "Eve", "19750501")
HOSTILE_SNIPPETS = [b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>', b"&e;", b"\x1b[2J", b"\xc2\x9b31m",
                    b"\xe2\x80\xae", b"\x00", b"]]>", b"<![CDATA[", b"<!--", b"</ClinicalDocument>", b"<section>",
                    b"&#27;", b"&#x9B;", b"\r\nBcc: x@y\r\n", b"[/][link=http://127.0.0.1:1/]", b"\xff\xfe"]


@st.composite
def mutated(draw, document: bytes = EVE) -> bytes:
    """`document` with a few bytes changed, removed, inserted, cut short, or a hostile snippet put in."""
    data = bytearray(document)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "delete", "insert", "snippet", "truncate"]))
        if action == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 40))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=20))
        elif action == "snippet":
            data[at:at] = draw(st.sampled_from(HOSTILE_SNIPPETS))
        elif action == "truncate":
            del data[at:]
    return bytes(data)


def _bodies(kind: str):
    if kind in ("text/xml", "application/xml"):
        return st.one_of(st.just(EVE), mutated())
    if kind == "application/zip":
        return st.one_of(st.just(_xdm(EVE)), mutated().map(_xdm),
                         st.sampled_from([_xdm(EVE, "../../etc/passwd"), _xdm(EVE, "DOC0001.XML", "../evil.xml"),
                                          _xdm(_xdm(EVE), "DOC0001.XML")]),
                         mutated(_xdm(EVE)))
    if kind == "application/pdf":
        return st.builds(lambda tail: b"%PDF-1.4\n" + tail, st.binary(max_size=200))
    return st.one_of(st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
                     st.binary(max_size=200))


HEADER_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
FILENAMES = st.one_of(HEADER_TEXT, st.sampled_from(["report.xml", "../../etc/passwd", "C:\\evil.pdf", "a\x1b[2J.pdf",
                                                    "=?utf-8?q?r=0D=0AX-Injected:_1.xml?=", "", ".", "..", "x" * 300]))
ENCODINGS = ["base64"] * 4 + ["quoted-printable", "7bit", "8bit", "binary", None, "base64-cut", "x-unknown"]


def _encode(data: bytes, encoding: str | None) -> tuple[bytes, str | None]:
    if encoding == "base64":
        return base64.encodebytes(data).replace(b"\n", CRLF), encoding
    if encoding == "base64-cut":
        return base64.encodebytes(data)[:-3].replace(b"\n", CRLF), "base64"
    if encoding == "quoted-printable":
        return quopri.encodestring(data).replace(b"\n", CRLF), encoding
    return data, encoding


def _field(name: str, value: str) -> bytes:
    return f"{name}: {value}".encode("utf-8", "surrogatepass") + CRLF


@st.composite
def leaves(draw) -> bytes:
    kind = draw(st.sampled_from(["text/plain", "text/html", "text/xml", "application/xml", "application/zip",
                                 "application/pdf", "application/octet-stream", "image/png"]))
    body, encoding = _encode(draw(_bodies(kind)), draw(st.sampled_from(ENCODINGS)))
    params = draw(st.sampled_from(["", "; charset=utf-8", "; charset=iso-8859-1", "; charset=x-unknown",
                                   "; charset=utf-16"]))
    head = _field("Content-Type", kind + params)
    if draw(st.booleans()):
        head += _field("Content-Disposition", f'attachment; filename="{draw(FILENAMES)}"')
    if encoding:
        head += _field("Content-Transfer-Encoding", encoding)
    for _ in range(draw(st.integers(0, 2))):
        head += _field(draw(st.sampled_from(["X-Fuzz", "Content-ID", "Content-Description"])), draw(HEADER_TEXT))
    return head + CRLF + body


BCHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'()+_,-./:=?"  # RFC 2046, less space
BOUNDARIES = st.one_of(st.text(st.sampled_from(BCHARS), min_size=1, max_size=70),
                       st.sampled_from(["=_part_0", "----=_NextPart_000_0001", "a b", "\u00e9t\u00e9", "\\", "b "]))


@st.composite
def multiparts(draw, children) -> bytes:
    boundary = draw(BOUNDARIES)
    if draw(st.integers(0, 9)):  # mostly unique: a nested part sharing its parent's boundary cannot be read
        boundary += "=" + hashlib.sha1(b"".join(children)).hexdigest()[:12]
    subtype = draw(st.sampled_from(["mixed", "alternative", "related", "signed", "report"]))
    # damage is rare per part, as a message has several: a wrong or missing boundary, no closing delimiter
    declared = draw(st.sampled_from([f'; boundary="{boundary}"'] * 28 + [f'; boundary="{boundary}x"', ""]))
    used = boundary.encode("utf-8")
    body = b"".join(b"--" + used + CRLF + child + CRLF for child in children)
    if draw(st.integers(0, 29)):
        body += b"--" + used + b"--" + CRLF
    return _field("Content-Type", f"multipart/{subtype}{declared}") + CRLF + body


def _children(inner):
    """Parts of a multipart: one to four, and now and then none (a multipart with no parts)."""
    return st.integers(0, 29).flatmap(lambda n: st.lists(inner, min_size=1, max_size=4) if n else st.just([]))


ENTITIES = st.recursive(leaves(), lambda inner: _children(inner).flatmap(multiparts), max_leaves=8)


@st.composite
def inner_messages(draw) -> bytes:
    """A consultant's message as its system might send it: headers (some hostile), then a MIME entity."""
    number = draw(st.integers(0, 10**9))
    head = _field("From", draw(st.sampled_from([PARTNER, f"Dr Ruiz <{PARTNER}>", f"=?utf-8?q?Dr=0D=0A?= <{PARTNER}>",
                                                f"\x1b[2J <{PARTNER}>"])))
    head += _field("To", PRACTICE) + _field("Message-ID", f"<inner-{number}@cardio.example.org>")
    head += _field("Subject", draw(HEADER_TEXT)) + _field("MIME-Version", "1.0")
    if draw(st.booleans()):
        head += _field("Disposition-Notification-To", PARTNER)
    if draw(st.booleans()):
        head += _field("In-Reply-To", EVE_REFERRAL)
    return head + draw(ENTITIES)


@FUZZ
@given(inner=inner_messages(), fail_at=st.one_of(st.none(), st.integers(1, 6)))
def test_structured_mime_from_a_trusted_sender_is_filed_whole_or_not_at_all(site, parties, opener, inner, fail_at):
    """Sealed for real (signed by the trusted partner, encrypted to the practice), so all of it meets the code
    after the trust check; `fail_at`: the n-th document write fails (the disk filled up), which must roll back
    every document written before it."""
    assume(len(inner) < 200_000)
    message_id = f"<outer-{next(SERIAL)}@cardio.example.org>"  # a new one each run: a replay is no duplicate
    envelope = transport_headers(sender=PARTNER, recipients=[PRACTICE], subject="fuzz", message_id=message_id,
                                 date=NOW)
    raw = seal(inner, parties, signer=parties.partner, headers=envelope)
    with ExitStack() as stack:
        if fail_at is not None:
            from transports import filing

            real, calls = filing.file_document, []

            def failing(*args, **kwargs):
                calls.append(1)
                if len(calls) == fail_at:
                    raise OSError("disk full")
                return real(*args, **kwargs)

            stack.enter_context(mock.patch.object(filing, "file_document", failing))
        outcome, row = received(raw, opener)
    event(f"{row.state if row else 'duplicate'}: {outcome.reason[:90]}")
    if row is not None:
        assert row.processed_at is not None or row.state == "rejected"  # trusted: accepted, failed or refused
        mdns = [bytes(job.payload) for job in OutboxJob.select().where(OutboxJob.inbound == row.id)]
        if row.state == "failed" and mdns:  # processed, then failed (with the reason)
            assert len(mdns) == 2 and b";failed" in mdns[1] and b";processed" in mdns[0]
        if fail_at is not None and row.state == "failed":
            assert "disk full" in row.error or "could not be filed" in row.error or row.error
    all_documents_belong_to_filed_messages()


# --- the C-CDA reader -----------------------------------------------------------------------------------------

@FUZZ
@given(document=mutated())
def test_the_c_cda_reader_never_raises_on_a_mutated_document(document):
    import json

    from documents.ccda_reader import Finding, as_json, read_summary
    from documents.ccda_validate import inspect_bytes
    from documents.ccda_view import CcdaViewError, read_ccda

    summary = read_summary(document)
    assert all(isinstance(f, Finding) and f.severity in ("error", "warning", "info") for f in summary.findings)
    json.dumps(as_json(summary))
    json.dumps(inspect_bytes(document))
    try:
        read_ccda(document)
    except CcdaViewError as error:
        assert str(error)
    if b"<!DOCTYPE" in document.split(b"<ClinicalDocument", 1)[0]:
        assert summary.findings and summary.findings[0].severity == "error"
    text = json.dumps(as_json(summary))
    assert "root:x:0:0" not in text
