"""The hostile-input corpus (tests/hostile/): every file through the entry point that meets it in practice, and
each one rejected or neutralised with a reason a person can read — nothing fetched, nothing written outside its
folder, nothing half-filed, no control character reaching the terminal.

- C-CDAs (*.xml): the reader (`read_summary`), the display reader (`read_ccda`), `referdesk inspect`
  (`inspect_file`) and, attached to a consultant's sealed reply, `receive_message`.
- XDM packages (*.zip): the receiver's unpacker (`unpack`), `inspect_file` and `receive_message`.
- Messages (*.eml): `receive_message`, sealed by the trusted partner and as they are (unencrypted).
- hostile_names.json: patients and notes stored with those names, searched, and shown (stored as given, but
  for NUL, which neither engine keeps; shown with every control character visible, never obeyed).
- sql_search.json: `search_patients`.
Inputs too big to keep in the repository are made here (GENERATED). Any URL in the corpus is
http://127.0.0.1:1/…, pointed at a loopback server (tests/loopback_http.py) that must see no request.

The damage test_receiving_malformed covers for the pipeline (broken MIME, size limits) is not repeated.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from direct_ca import http_server, pki  # noqa: F401 (fixtures)
from loopback_http import LoopbackHttp
from models.referrals import Document, InboundMessage, OutboxJob
from models.safe_text import UNSAFE, display_text, has_unsafe, one_line, storable
from receiving_kit import EVE_MRN, PARTNER, envelope, inner_message, make_parties, make_site, opener_for, seal
from transports.direct.mime import Part
from transports.inbound import receive_message
from transports.mime_parts import read_headers

HOSTILE = Path(__file__).resolve().parent / "hostile"
TRIP = "http://127.0.0.1:1"
MID = "<hostile@cardio.example.org>"
PASSWD = b"root:x:0:0"  # what /etc/passwd would have put into a document or a finding

# --- the corpus, classified ---------------------------------------------------------------------------------------

#: C-CDA -> the word the reader's error finding must contain, or None: read, and the hostile part made harmless.
XML = {
    "xxe_file_passwd.xml": "DOCTYPE",
    "xxe_http_loopback.xml": "DOCTYPE",
    "xxe_parameter_entity_http.xml": "DOCTYPE",
    "external_dtd_http.xml": "DOCTYPE",
    "dtd_internal_entities.xml": "DOCTYPE",
    "billion_laughs.xml": "DOCTYPE",
    "quadratic_blowup.xml": "DOCTYPE",
    "doctype_utf16_billion_laughs.xml": "DOCTYPE",
    "doctype_after_comment_and_pi.xml": "DOCTYPE",
    "deep_sections_200.xml": "Excessive depth",  # 200 nested sections are 400 elements deep: refused at 256
    "name_escape_char_ref.xml": "not well-formed",  # &#27; is not an XML character
    "name_escape_raw.xml": "not well-formed",
    "name_nul_byte.xml": "not well-formed",
    "xinclude_file_and_http.xml": None,  # read; the xi:include is never processed
    "xml_stylesheet_pi_http.xml": None,
    "schema_location_http.xml": None,
    "deep_nesting_200.xml": None,  # 200 levels of <content>: within the parser's depth limit, read
    "name_c1_and_bidi.xml": None,  # legal XML: kept as the document says, shown neutralised
    "name_crlf_header_injection.xml": None,  # line breaks in names are whitespace: one line
    "name_markup_injection.xml": None,  # "[/]" and "[link=…]" are text, never markup
}

#: XDM package -> words the unpacker's problems must contain (the receiver refuses the whole message), or
#: None: filed.
ZIPS = {
    "xdm_dotdot_traversal.zip": ["unsafe name", "'../../../../tmp/referdesk-escape.xml'"],
    "xdm_absolute_paths.zip": ["unsafe name", "'/tmp/referdesk-absolute.xml'", "'C:/referdesk-drive.xml'"],
    "xdm_symlink_entry.zip": ["symbolic link"],
    "xdm_metadata_xxe.zip": ["METADATA.XML", "DOCTYPE"],
    "xdm_control_chars_in_names.zip": ["unsafe name", r"\x1b[2J", r"\r\nX-Injected"],
    "xdm_zip_bomb_30mb.zip": ["inflates to more than 20.0 MB", "possibly a zip bomb"],
    "xdm_nested_zip.zip": None,  # the package inside is filed as it is, never inflated
}

#: Message -> what the stored row must show of it (neutralised), sealed by the trusted partner.
MESSAGES = {"mime_header_injection.eml", "mime_ansi_escapes.eml"}
DATA = {"hostile_names.json", "sql_search.json"}


def corpus(name: str, url: str = TRIP) -> bytes:
    """A corpus file with its URLs pointed at `url` (inside zips too: members are rewritten, names kept)."""
    data = (HOSTILE / name).read_bytes()
    if url == TRIP:
        return data
    if name.endswith(".zip"):
        return _retarget_zip(data, url)
    if name == "doctype_utf16_billion_laughs.xml":
        return data.decode("utf-16").replace(TRIP, url).encode("utf-16")
    return data.replace(TRIP.encode(), url.encode())


def _retarget_zip(data: bytes, url: str) -> bytes:
    source, buffer = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            if info.file_size > 1024 * 1024:  # the bomb: no URL in it, and not worth inflating here
                return data
            target.writestr(info, source.read(info).replace(TRIP.encode(), url.encode()))
    return buffer.getvalue()


def test_every_corpus_file_is_classified_and_small():
    files = {p.name for p in HOSTILE.iterdir() if p.is_file() and p.name != "README.md"}
    assert files == set(XML) | set(ZIPS) | MESSAGES | DATA
    assert all((HOSTILE / name).stat().st_size < 100 * 1024 for name in files)


# --- fixtures -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tripwire():
    """A loopback HTTP server every URL in the corpus points at: any request to it is a fetch that must not be."""
    with LoopbackHttp() as server:
        yield server


@pytest.fixture
def no_fetch(tripwire):
    before = sum(tripwire.hits.values())
    yield tripwire.url("").rstrip("/")
    assert sum(tripwire.hits.values()) == before, f"fetched: {dict(tripwire.hits)}"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty current directory that must stay empty (nothing extracted, nothing written)."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    yield folder
    assert list(folder.rglob("*")) == []
    for escaped in ("/tmp/referdesk-escape.xml", "/tmp/referdesk-absolute.xml", "/escape2.xml"):
        assert not os.path.exists(escaped)


@pytest.fixture(scope="module")
def parties(pki, tmp_path_factory):  # noqa: F811
    return make_parties(pki, tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def site(db):
    return make_site()


@pytest.fixture
def opener(parties, pki):  # noqa: F811
    return opener_for(parties, pki)


def sealed_reply(parties, *attachments: Part, inner: bytes | None = None) -> bytes:
    """A reply to Eve's referral carrying `attachments` (or the whole `inner` message), signed by the trusted
    partner and encrypted to the practice."""
    if inner is None:
        inner = inner_message(message_id=MID, attachments=list(attachments), subject="Report",
                              in_reply_to=f"<ref-{EVE_MRN}@direct.riverbend-family.example>")
    message_id = read_headers(inner)["Message-ID"]
    return seal(inner, parties, signer=parties.partner, headers=envelope(inner, message_id=message_id,
                                                                         subject="Report"))


def the_row() -> InboundMessage:
    rows = list(InboundMessage.select())
    assert len(rows) == 1, "one message, one stored row"
    return rows[0]


def assert_whole_or_nothing(outcome, raw: bytes) -> InboundMessage:
    """Stored raw first; then either filed completely (accepted: documents, processed and dispatched MDNs) or
    not at all (no document; a trusted message's failure is told back in a failed MDN)."""
    row = the_row()
    assert bytes(row.raw) == raw
    documents = list(Document.select())
    if outcome.outcome == "accepted":
        assert row.state in ("filed", "unfiled") and documents
        assert {d.inbound_id for d in documents} == {row.id}
    else:
        assert row.state in ("failed", "rejected") and row.error and row.error in outcome.reason
        assert documents == []
    for text in (row.error, row.subject, row.from_address, outcome.reason):
        assert "\n" not in text and "\r" not in text and not has_unsafe(text), text
    return row


def mdn_payloads(row: InboundMessage) -> list[bytes]:
    return [bytes(job.payload) for job in OutboxJob.select().where(OutboxJob.kind == "mdn",
                                                                    OutboxJob.inbound == row.id)]


def assert_no_injected_fields(payload: bytes) -> None:
    lines = payload.split(b"\r\n")
    assert not any(line.lower().startswith((b"bcc:", b"x-injected:")) for line in lines), payload
    assert not UNSAFE.search(payload.decode("ascii", "replace").replace("\r\n", "")), payload


# --- C-CDAs -------------------------------------------------------------------------------------------------------

def _summary_text(summary) -> str:
    from documents.ccda_reader import as_json

    return json.dumps(as_json(summary), ensure_ascii=False)


@pytest.mark.parametrize("name", list(XML))
def test_a_hostile_c_cda_is_refused_or_read_harmlessly_by_every_reader(name, no_fetch, workdir):
    from documents.ccda_reader import read_summary
    from documents.ccda_validate import inspect_file
    from documents.ccda_view import CcdaViewError, read_ccda

    data, refused = corpus(name, no_fetch), XML[name]
    summary = read_summary(data)
    text = _summary_text(summary)
    assert PASSWD.decode() not in text and "lollol" not in text and "aaaaaaaaaa" not in text
    (workdir.parent / name).write_bytes(data)  # `referdesk inspect FILE`, from outside the watched folder
    inspected = inspect_file(workdir.parent / name)
    if refused:
        errors = [f.message for f in summary.findings if f.severity == "error"]
        assert errors and refused in errors[0], errors
        assert not summary.sections and not summary.patient.last_name
        assert refused in inspected["findings"][0]["message"]
        with pytest.raises(CcdaViewError, match=refused):
            read_ccda(data)
        return
    view = read_ccda(data)
    assert summary.patient.birth_date == "1975-05-01" and summary.sections  # the rest of it is read
    shown = [view.patient.name, view.title, summary.title, summary.patient.first_name, summary.patient.last_name]
    for value in shown:
        assert "\n" not in value and "\r" not in value  # names and titles are one line whatever the document says
        assert not has_unsafe(one_line(value))  # … and show harmless
    assert "root:" not in json.dumps(inspected)


def test_what_the_harmless_ones_keep():
    """Read as the document says it (the record is not rewritten), for display to neutralise."""
    from documents.ccda_reader import read_summary

    c1 = read_summary(corpus("name_c1_and_bidi.xml")).patient
    assert "\x9b" in c1.first_name and "\u202e" in c1.last_name
    assert one_line(c1.first_name) == "Eve\ufffd2J\ufffd52;c;ZXZpbA==\ufffd"
    crlf = read_summary(corpus("name_crlf_header_injection.xml"))
    assert (crlf.patient.first_name, crlf.title) == ("Eve X-Injected: 1", "Note Bcc: evil@example.org")
    markup = read_summary(corpus("name_markup_injection.xml"))
    assert markup.patient.first_name.startswith("[/][link=") and markup.title == "[bold red]Consult[/]"


@pytest.mark.parametrize("name", list(XML))
def test_a_hostile_c_cda_in_a_trusted_reply_is_filed_whole_with_its_findings(name, site, parties, opener,
                                                                              no_fetch, workdir):
    raw = sealed_reply(parties, Part("note.xml", "text/xml", corpus(name, no_fetch)))
    outcome = receive_message(raw, opener=opener)
    row = assert_whole_or_nothing(outcome, raw)
    # A C-CDA the reader refuses is still the consultant's report: filed (to Eve's referral, which it answers),
    # what is wrong with it kept as findings, never resolved.
    assert outcome.outcome == "accepted", outcome.reason
    kinds = sorted(d.kind for d in Document.select().where(Document.owner == "practice"))
    assert kinds == ["ccda", "findings", "message"]
    findings = json.loads(bytes(Document.get(Document.kind == "findings").content))
    if XML[name]:
        assert any(XML[name] in f["message"] for f in findings["findings"])
    assert not any(PASSWD in bytes(d.content) for d in Document.select())
    assert [b"processed" in p for p in mdn_payloads(row)] == [True, False]  # processed, then dispatched


@pytest.mark.parametrize("name", ["name_c1_and_bidi.xml", "name_crlf_header_injection.xml",
                                  "name_markup_injection.xml", "xdm_control_chars_in_names.zip"])
def test_referdesk_inspect_prints_what_a_document_says_without_its_controls(name, cli, tmp_path):
    path = tmp_path / name
    path.write_bytes(corpus(name))
    code, out, _ = cli("inspect", path)
    assert code == 0 and not has_unsafe(out) and "Patient:" in out
    code, out, _ = cli("inspect", path, "--json")
    assert code == 0 and not has_unsafe(out)  # C1 and bidi controls as \u escapes: the same JSON
    if name == "name_c1_and_bidi.xml":
        assert json.loads(out)["patient"]["first_name"] == "Eve\x9b2J\x9d52;c;ZXZpbA==\x9c"


# --- XDM packages -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(ZIPS))
def test_a_hostile_package_is_refused_by_the_unpacker_and_the_inspector(name, no_fetch, workdir):
    from documents.ccda_validate import inspect_file
    from documents.xdm_read import unpack

    data, words = corpus(name, no_fetch), ZIPS[name]
    unpacked = unpack(data)
    (workdir.parent / name).write_bytes(data)
    inspected = inspect_file(workdir.parent / name)
    messages = " | ".join(f["message"] for f in inspected["findings"])
    if words is None:  # the nested package: handed on whole, not opened
        assert [(d.filename, d.media_type) for d in unpacked.documents] == [("INNER.ZIP", "application/zip")]
        assert unpacked.problems == [] and unpacked.documents[0].content.startswith(b"PK\x03\x04")
        assert "a zip inside the package; not opened" in messages
        return
    assert unpacked.documents == []
    problems = " | ".join(unpacked.problems)
    for word in words:
        assert word in problems, problems
    assert not has_unsafe(problems) and "\n" not in problems
    assert words[-1] in messages  # `referdesk inspect` says the same (and may still summarise a readable document)
    assert not has_unsafe(messages) and "\n" not in messages and "root:" not in json.dumps(inspected)


@pytest.mark.parametrize("name", list(ZIPS))
def test_a_hostile_package_in_a_trusted_reply_fails_whole_and_tells_the_sender(name, site, parties, opener,
                                                                                 no_fetch, workdir):
    raw = sealed_reply(parties, Part("package.zip", "application/zip", corpus(name, no_fetch)))
    outcome = receive_message(raw, opener=opener)
    row = assert_whole_or_nothing(outcome, raw)
    if ZIPS[name] is None:
        assert outcome.outcome == "accepted", outcome.reason
        inner = Document.get(Document.owner == "patient", Document.filename == "INNER.ZIP")
        assert (inner.kind, bytes(inner.content)[:4]) == ("report", b"PK\x03\x04")
        return
    assert outcome.outcome == "rejected" and row.state == "failed"
    assert "package.zip cannot be filed completely" in row.error
    for word in ZIPS[name][:1]:
        assert word in row.error
    payloads = mdn_payloads(row)
    assert len(payloads) == 2 and b"failed" in payloads[1]
    for payload in payloads:
        assert_no_injected_fields(payload)


# --- messages -----------------------------------------------------------------------------------------------------

STORED = {  # what the row keeps of the headers: one line, escapes shown (␛), never obeyed
    "mime_header_injection.eml": ("Report Bcc: evil@attacker.example", "r X-Injected: 1.xml"),
    "mime_ansi_escapes.eml": ("Report ␛[2J␛[H␛]52;c;ZXZpbA==␇ ␛]0;pwned␇ \ufffd31m \ufffd", "note␛[2J\ufffd.xml"),
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_a_hostile_message_is_stored_neutralised_and_answered_without_injection(name, site, parties, opener,
                                                                               workdir):
    inner = corpus(name)
    raw = sealed_reply(parties, inner=inner)
    outcome = receive_message(raw, opener=opener)
    row = assert_whole_or_nothing(outcome, raw)
    assert outcome.outcome == "accepted", outcome.reason
    subject, filename = STORED[name]
    assert (row.subject, row.from_address) == (subject, PARTNER)
    assert filename in {d.filename for d in Document.select()}
    for document in Document.select():
        assert not has_unsafe(document.filename) and not has_unsafe(document.title)
    for payload in mdn_payloads(row):
        assert_no_injected_fields(payload)
    # the message text is kept as it came; it is shown through display_text
    text = bytes(Document.get(Document.kind == "message", Document.owner == "practice").content).decode()
    if name == "mime_ansi_escapes.eml":
        assert "\x1b[2J" in text and not has_unsafe(display_text(text))


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_a_hostile_message_unencrypted_is_quarantined_with_its_headers_neutralised(name, site, opener):
    raw = corpus(name)
    outcome = receive_message(raw, opener=opener)
    row = assert_whole_or_nothing(outcome, raw)
    assert row.state == "rejected" and "not encrypted" in row.error
    assert row.subject == STORED[name][0] and OutboxJob.select().count() == 0


# --- generated: too big for the repository ------------------------------------------------------------------------

def _head(message_id: str) -> bytes:
    return (f"From: {PARTNER}\r\nTo: referrals@direct.riverbend-family.example\r\nSubject: Report\r\n"
            f"Message-ID: {message_id}\r\nDisposition-Notification-To: {PARTNER}\r\nMIME-Version: 1.0\r\n").encode()


def _ten_thousand_attachments() -> bytes:
    parts = b"".join(f'--s\r\nContent-Type: application/pdf; name="p{i}.pdf"\r\nContent-Transfer-Encoding: '
                     f"base64\r\n\r\nJVBERi0xLjQK\r\n".encode() for i in range(10_000))
    return _head(MID) + b'Content-Type: multipart/mixed; boundary="s"\r\n\r\n' + parts + b"--s--\r\n"


def _nested_rfc822(levels: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nhello\r\n"
    for level in range(levels):
        body = b"Content-Type: message/rfc822\r\n\r\n" + f"Subject: level {level}\r\n".encode() + body
    return _head(MID) + body


def _package(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        for name, data in members.items():
            package.writestr(name, data)
    return buffer.getvalue()


GENERATED = {  # name -> (make, sealed?, words in the reason)
    "MIME with 10,000 attachments": (_ten_thousand_attachments, True, "more than 200 MIME parts"),
    "5,000 nested message/rfc822": (lambda: _nested_rfc822(5000), True, "nested"),
    "header bomb (40,000 header lines)": (
        lambda: _head(MID) + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"x" * 60) for i in range(40_000)) + b"\r\nhi",
        False, "not encrypted"),
    "package over the 100 MB budget (6 x 19 MB)": (
        lambda: _package({f"scan{i}.txt": b"\x00" * (19 * 1024 * 1024) for i in range(6)}), True,
        "scan5.txt: inflates to more than 5.0 MB"),  # 95 MB read: what is left of the budget is the limit
    "package of 1,001 members": (lambda: _package({f"f{i}.xml": b"" for i in range(1001)}), True,
                                 "has 1001 members"),
}


@pytest.mark.parametrize("case", list(GENERATED))
def test_generated_bombs_are_refused_whole(case, site, parties, opener, workdir):
    make, sealed, words = GENERATED[case]
    data = make()
    if case.startswith("package"):
        assert len(data) < 1024 * 1024  # what arrives is small; what it would inflate to is not
        raw = sealed_reply(parties, Part("package.zip", "application/zip", data))
    else:
        raw = sealed_reply(parties, inner=data) if sealed else data
    outcome = receive_message(raw, opener=opener)
    row = assert_whole_or_nothing(outcome, raw)
    assert outcome.outcome == "rejected" and words in row.error, row.error
    assert (row.state, len(mdn_payloads(row))) == (("failed", 2) if sealed else ("rejected", 0))


# --- names and notes ----------------------------------------------------------------------------------------------

NAMES = json.loads((HOSTILE / "hostile_names.json").read_text())


@pytest.mark.parametrize("entry", NAMES, ids=[n["label"] for n in NAMES])
def test_a_hostile_name_is_stored_as_given_found_and_shown_neutralised(entry, db):
    from models.patients import Patient
    from models.search import search_patients
    from tui.screens.chart import patient_banner
    from tui.screens.patient_search import result_line

    text = entry["text"]
    patient = Patient.create(mrn="3000001", last_name=text, first_name="Zelda", birth_date="1975-05-01", sex="F")
    stored = Patient.get_by_id(patient.id)
    # the record keeps what it was given, but for a NUL: dropped on the way in, on SQLite as on PostgreSQL
    # (whose text cannot hold one), so the two engines keep and show the same name
    assert stored.last_name == storable(text) and "\x00" not in stored.last_name
    if "\x00" in text:
        assert stored.last_name == text.replace("\x00", "") == "EveMallory"
    hits = search_patients("zelda")
    assert [h.id for h in hits] == [patient.id]
    for shown in (one_line(text), result_line(hits[0], 40), patient_banner(stored)):
        assert not has_unsafe(shown) and "\n" not in shown and "\r" not in shown, repr(shown)
    if "\x1b" in text:
        assert "␛" in one_line(text)  # visible, so staff can see the name is not what it seems


def test_a_nul_never_reaches_the_database_whatever_writes_or_looks_up_the_text(seeded):
    """NUL is dropped from every text value a statement carries (models/db.py), on SQLite and PostgreSQL alike:
    PostgreSQL text cannot hold one, and SQLite is made to keep what PostgreSQL keeps."""
    from models.contacts import Contact
    from models.patients import Note, Patient

    patient = Patient.select().order_by(Patient.id).first()
    Patient.update(first_name="Ze\x00lda", city="\x00").where(Patient.id == patient.id).execute()
    contact = Contact.create(name="Dr\x00 Nul", organization="Null\x00 Clinic", direct_address="nul@x.example")
    note = Note.select().order_by(Note.id).first()
    note.title, note.sections = "Consult\x00", [("Plan\x00", "rest\x00 and fluids")]
    note.save()
    fresh = Patient.get_by_id(patient.id)
    assert (fresh.first_name, fresh.city) == ("Zelda", "")
    assert (Contact.get_by_id(contact.id).name, Contact.get_by_id(contact.id).organization) == ("Dr Nul", "Null Clinic")
    stored = Note.get_by_id(note.id)
    assert stored.title == "Consult" and stored.sections == [("Plan", "rest and fluids")]
    assert "\x00" not in stored.sections_json and "\\u0000" not in stored.sections_json
    # looked up with a NUL: the same as without it, never an error
    assert Patient.get_or_none(Patient.first_name == "Zel\x00da").id == patient.id
    assert Contact.select().where(Contact.name.contains("\x00")).count() == Contact.select().count()


# --- search -------------------------------------------------------------------------------------------------------

SEARCHES = json.loads((HOSTILE / "sql_search.json").read_text())


@pytest.fixture
def people(db):
    from models.patients import Patient

    for mrn, last, first in (("4000001", "Smith", "Ann"), ("4000002", "Smyth", "Bob"), ("4000003", "O'Brien", "Sean"),
                             ("4000004", "Patient", "Table"), ("4000005", "Drop", "Bobby")):
        Patient.create(mrn=mrn, last_name=last, first_name=first, birth_date="1970-01-01", sex="F")
    return db


def store_is_intact() -> bool:
    """The engine's own check that nothing is damaged: SQLite's integrity_check; on PostgreSQL (which has none
    in SQL) every table can still be read whole and the patient table's indexes are still there and valid."""
    from models.db import database, is_sqlite

    if is_sqlite():
        return database.execute_sql("PRAGMA integrity_check").fetchone()[0] == "ok"
    for table in database.get_tables():
        database.execute_sql(f'SELECT count(*) FROM "{table}"').fetchone()
    indexes = database.execute_sql(
        "SELECT count(*), bool_and(i.indisvalid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "WHERE c.relname = 'patient'").fetchone()
    return indexes[0] > 0 and indexes[1]


@pytest.mark.parametrize("text", SEARCHES)
def test_sql_ish_search_text_is_only_text(text, people):
    from models.db import database
    from models.patients import Patient
    from models.search import search_patients
    from models.text import normalize

    tables = sorted(database.get_tables())
    rows = {table: database.execute_sql(f"SELECT count(*) FROM {database.quote[0]}{table}{database.quote[1]}")
            .fetchone()[0] for table in tables}
    hits = search_patients(text)
    assert isinstance(hits, list)
    # quotes, %, _ and backslashes are neither SQL nor wildcards: the same as the letters and digits alone
    key = normalize(text)
    assert [h.id for h in hits] == ([h.id for h in search_patients(key)] if key else [])
    if key in ("", "smth", "a"):
        assert hits == [] or key == "a"
    assert sorted(database.get_tables()) == tables and Patient.select().count() == 5
    assert {table: database.execute_sql(f"SELECT count(*) FROM {database.quote[0]}{table}{database.quote[1]}")
            .fetchone()[0] for table in tables} == rows  # no table dropped, no row deleted or added
    assert store_is_intact()


# --- the terminal -------------------------------------------------------------------------------------------------

def rendered_segments(app):
    """Every segment of the screen as the driver would write it: (text, style)."""
    for strip in app.screen._compositor.render_strips():
        for segment in strip:
            if not segment.control:
                yield segment.text, segment.style


def assert_screen_is_safe(app) -> str:
    """Nothing the terminal would obey in any text on screen, and no hyperlink planted by markup; the text."""
    text = []
    for chunk, style in rendered_segments(app):
        assert not has_unsafe(chunk), repr(chunk)
        assert style is None or not style.link, (chunk, style.link)
        text.append(chunk)
    return "".join(text)


HOSTILE_LAST = "Zed\x1b[2J\x1b]52;c;ZXZpbA==\x07\x9b31m\u202e[/][link=http://evil.example]x[/link]"
HOSTILE_NOTE = "Plan \x1b[2J\x1b[H\x1b]8;;http://evil.example\x07click\x1b]8;;\x07 \x9b31m\u202e done"


async def test_a_patient_with_escape_sequences_in_the_name_renders_without_them(seeded):
    from models.patients import Note, Patient
    from models.referrals import Referral
    from models.referring import ReferralDraft, create_referral
    from tui.app import ReferdeskApp
    from tui.screens.chart import ChartScreen
    from tui.screens.note_view import NoteViewScreen

    note = Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).first()
    patient = note.patient
    patient.last_name, patient.first_name = HOSTILE_LAST, "Zoe\x00\r\nX-Injected: 1"
    patient.save()
    note.title = "Consult \x1b]0;pwned\x07[/]"
    note.sections = [("Plan\x1b[2J", HOSTILE_NOTE)]
    note.save()
    referral = create_referral(ReferralDraft(patient_id=patient.id, note_id=note.id, channel="print",
                                             recipient="/tmp/referdesk-not-written", recipient_name="Dr \x1b[5mBlink"),
                               [])
    subject = Referral.get_by_id(referral.id).subject  # a mail header: one line, its controls made visible …
    assert "Zed␛[2J" in subject and not has_unsafe(subject) and "\n" not in subject

    app = ReferdeskApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press(*"'; DROP TABLE patient; --")  # typed into the search box: only text, and said so
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert str(app.screen.query_one("#status").content) == "No patient matches “'; DROP TABLE patient; --”."
        assert Patient.select().count() > 0
        await pilot.press("escape", "z", "e", "d")
        await app.workers.wait_for_complete()
        await pilot.pause()
        shown = assert_screen_is_safe(app)  # … and shown without its controls: in the search results
        assert "Zed␛[2J" in shown
        app.open_patient(patient.mrn, section="notes")
        await pilot.pause()
        assert isinstance(app.screen, ChartScreen)
        shown = assert_screen_is_safe(app)  # the banner (markup: "[/]" neither crashes it nor links)
        assert "Zed␛[2J␛]52;c;ZXZpbA==␇\ufffd31m\ufffd[/][link=http://evil.example]x[/link]" in shown
        app.screen.action_show("referrals")
        await pilot.pause()
        shown = assert_screen_is_safe(app)  # the referral's patient and recipient cells
        assert "Dr ␛[5mBlink" in shown
        app.open_note(note.id)
        await pilot.pause()
        assert isinstance(app.screen, NoteViewScreen)
        shown = assert_screen_is_safe(app)  # the note's title and text
        assert "Plan" in shown and "done" in shown


async def test_hostile_messages_and_c_cdas_render_without_controls_in_the_inbox_and_the_viewer(
        site, parties, opener):
    from models import clock
    from tui.app import ReferdeskApp
    from tui.screens.document_view import DocumentViewScreen
    from tui.screens.inbox import InboxScreen
    from tui.screens.inbox_detail import InboxDetailScreen

    receive_message(sealed_reply(parties, inner=corpus("mime_ansi_escapes.eml")), opener=opener)
    raw = sealed_reply(parties, Part("c1.xml", "text/xml", corpus("name_c1_and_bidi.xml")),
                       Part("markup.xml", "text/xml", corpus("name_markup_injection.xml")))
    assert receive_message(raw, opener=opener).outcome == "accepted"
    # a row as an older referdesk stored it, before headers were neutralised on the way in
    InboundMessage.create(message_id="<old@x>", subject="Old \x1b]52;c;ZXZpbA==\x07\x9b2J row",
                          received_at=clock.now(), from_address="a@b.example", raw=b"", channel="file",
                          state="rejected", error="quarantined \x1b[2J")
    documents = {d.filename: d.id for d in Document.select().where(Document.owner == "practice")}

    app = ReferdeskApp()
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        app.action_inbox()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, InboxScreen)
        await pilot.press("s", "enter", "end", "enter")  # show: all messages
        await app.workers.wait_for_complete()
        await pilot.pause()
        shown = assert_screen_is_safe(app)
        assert "Report ␛[2J" in shown and "Old " in shown
        for inbound in InboundMessage.select():
            app.push_screen(InboxDetailScreen(inbound.id))
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert_screen_is_safe(app)
            app.pop_screen()
        for filename in ("c1.xml", "markup.xml"):
            app.push_screen(DocumentViewScreen(documents[filename]))
            await app.workers.wait_for_complete()
            await pilot.pause()
            shown = assert_screen_is_safe(app)
            assert ("Eve\ufffd2J" in shown) if filename == "c1.xml" else ("[/][link=" in shown)
            app.pop_screen()
