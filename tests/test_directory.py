"""Provider directory: NPPES and FHIR import against a real SQLite database, and directory search."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.contacts import DirectoryEntry
from models.directory import DirectoryImportError, ImportReport, import_directory_file, search_directory
from models.search import normalize
from models.seed import npi_with_check_digit

DATA = Path(__file__).parent / "data" / "directory"
NPPES_HEADER = (DATA / "endpoints_good.csv").read_text(encoding="utf-8").splitlines()[0]


def entry(endpoint: str) -> DirectoryEntry:
    return DirectoryEntry.get(DirectoryEntry.endpoint == endpoint)


def endpoints(entries) -> list[str]:
    return [e.endpoint for e in entries]


def nppes_line(npi: str, endpoint: str, *, kind: str = "DIRECT", business: str = "Test Clinic",
               city: str = "Testville", postal: str = "00001") -> list[str]:
    return [npi, kind, "", endpoint, "Y", "", business, "HIE", "", "", "", "", "", "1 Test St", "", city, "ZZ", "US",
            postal]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(NPPES_HEADER + "\n")
        csv.writer(out).writerows(rows)
    return path


def write_bundle(path: Path, *resources: dict) -> Path:
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                "entry": [{"resource": r} for r in resources]}), encoding="utf-8")
    return path


DIRECT = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "direct-project"}


# --- NPPES -----------------------------------------------------------------------------------------------


def test_nppes_good_file_imports_every_row_with_its_fields(db):
    report = import_directory_file(DATA / "endpoints_good.csv")

    assert report == ImportReport(imported=5, updated=0, skipped=[], format="nppes")
    assert DirectoryEntry.select().count() == 5
    ana = entry("ana.ruiz@direct.lakeshore-cardio.example")  # "mailto:" stripped
    assert (ana.npi, ana.name, ana.organization, ana.endpoint_type, ana.use_code) == (
        "1555000011", "Lakeshore Cardiology Associates", "Lakeshore Cardiology Associates", "DIRECT", "HIE")
    assert (ana.address_line, ana.city, ana.state, ana.postal_code, ana.country, ana.source) == (
        "1200 Harbor Blvd, Suite 300", "Port Alder", "WA", "98101", "US", "nppes")
    assert (ana.name_norm, ana.organization_norm, ana.city_norm) == (
        "lakeshorecardiologyassociates", "lakeshorecardiologyassociates", "portalder")


def test_nppes_name_falls_back_to_description_then_endpoint_and_keeps_other_types(db):
    import_directory_file(DATA / "endpoints_good.csv")

    inbox = entry("b.okafor@direct.pinecrest-ortho.example")
    assert (inbox.name, inbox.organization, inbox.address_line) == ("Pinecrest Orthopedics referrals inbox", "", "77 Quarry Rd")
    fhir = entry("https://fhir.northgate-health.example/r4")
    assert (fhir.name, fhir.endpoint_type, fhir.npi, fhir.city) == (
        "https://fhir.northgate-health.example/r4", "FHIR", "1555000037", "Eastvale")
    connect = entry("https://connect.quarry-hill.example/gateway")
    assert (connect.name, connect.endpoint_type, connect.use_code) == ("Quarry Hill Medical Group", "CONNECT", "OTHER")
    obrien = entry("s.obrien@direct.obrien-family.example")
    assert (obrien.name, obrien.name_norm) == ("Siobhán O'Brien, DO", "siobhanobriendo")


def test_nppes_bad_rows_are_reported_by_physical_line_and_the_rest_imports(db):
    report = import_directory_file(DATA / "endpoints_mixed.csv")

    assert (report.imported, report.updated, report.format) == (2, 0, "nppes")
    assert [line for line, _ in report.skipped] == [3, 4, 5, 6, 10, 11, 12]
    reasons = dict(report.skipped)
    assert reasons[3] == "invalid NPI '1555000053': wrong check digit"
    assert reasons[4].startswith("invalid Direct address 'not an address'")
    assert reasons[5] == "5 columns where the header has 19"
    assert reasons[6] == "empty endpoint"
    assert reasons[10] == "invalid NPI '12345': an NPI is 10 digits"
    assert reasons[11].startswith("invalid Direct address 'nodot@localhost'")
    assert reasons[12] == "same endpoint and NPI as line 2"
    assert sorted(endpoints(DirectoryEntry.select())) == [
        "https://fhir.birchwood-neuro.example/r4",  # lines 8-9: a quoted field holds a line break
        "lena.voss@direct.birchwood-neuro.example",
    ]
    # Header names matched with case and surrounding spaces ignored (" npi ", " endpoint ").
    assert entry("lena.voss@direct.birchwood-neuro.example").city == "Kestrel Bay"


def test_nppes_utf8_bom_crlf_and_quoted_commas(db):
    report = import_directory_file(DATA / "endpoints_bom.csv")

    assert (report.imported, report.skipped) == (2, [])
    harbor = entry("intake@direct.harbor-heart.example")
    assert (harbor.npi, harbor.name, harbor.organization, harbor.address_line, harbor.postal_code) == (
        "1655000051", "Harbor Heart, Lung & Vascular, PLLC", "Harbor Heart, Lung & Vascular, PLLC",
        "1 Main St, Bldg 2", "02903")
    clinica = entry("sjose@direct.clinica-sao-jose.example")
    assert (clinica.organization, clinica.organization_norm, clinica.country) == (
        "Clínica São José, Ltda", "clinicasaojoseltda", "US")


def test_nppes_reimport_updates_in_place_instead_of_duplicating(db, tmp_path):
    import_directory_file(DATA / "endpoints_good.csv")
    before = {e.endpoint: e.id for e in DirectoryEntry.select()}

    again = import_directory_file(DATA / "endpoints_good.csv")
    assert (again.imported, again.updated, again.skipped) == (0, 5, [])

    changed = tmp_path / "changed.csv"
    changed.write_text((DATA / "endpoints_good.csv").read_text(encoding="utf-8").replace("Port Alder", "New Alder"),
                       encoding="utf-8")
    third = import_directory_file(changed)
    assert (third.imported, third.updated) == (0, 5)
    assert {e.endpoint: e.id for e in DirectoryEntry.select()} == before
    ana = entry("ana.ruiz@direct.lakeshore-cardio.example")
    assert (ana.city, ana.city_norm) == ("New Alder", "newalder")


def test_nppes_row_matching_a_seeded_entry_updates_it(seeded, tmp_path):
    seed_entry = DirectoryEntry.select().where(DirectoryEntry.source == "seed").order_by(DirectoryEntry.id).get()
    total = DirectoryEntry.select().count()
    path = write_csv(tmp_path / "one.csv", [
        nppes_line(seed_entry.npi, f"mailto:{seed_entry.endpoint}", business="Renamed Clinic"),
        nppes_line(npi_with_check_digit("177700001"), "new.inbox@direct.new-clinic.example"),
    ])

    report = import_directory_file(path)

    assert (report.imported, report.updated, report.skipped) == (1, 1, [])
    assert DirectoryEntry.select().count() == total + 1
    updated = DirectoryEntry.get_by_id(seed_entry.id)
    assert (updated.name, updated.organization, updated.source) == ("Renamed Clinic", "Renamed Clinic", "nppes")


def test_nppes_unbalanced_quote_is_reported_not_swallowed_silently(db, tmp_path):
    path = tmp_path / "quote.csv"
    good = ",".join(nppes_line(npi_with_check_digit("177700002"), "good@direct.quote.example"))
    broken = ",".join(nppes_line(npi_with_check_digit("177700003"), "broken@direct.quote.example", postal='"0000'))
    lost = ",".join(nppes_line(npi_with_check_digit("177700004"), "lost@direct.quote.example"))
    path.write_text("\n".join([NPPES_HEADER, good, broken, lost]) + "\n", encoding="utf-8")

    report = import_directory_file(path)

    assert report.imported == 1
    assert len(report.skipped) == 1
    line, reason = report.skipped[0]
    assert line == 3
    assert "line 3 to 4" in reason and "unbalanced quote" in reason
    assert endpoints(DirectoryEntry.select()) == ["good@direct.quote.example"]


def test_a_failure_late_in_the_file_rolls_back_the_whole_import(db, tmp_path):
    rows = [nppes_line(npi_with_check_digit(f"18880{i:04d}"), f"doc{i}@direct.bulk.example") for i in range(600)]
    rows.append(nppes_line(npi_with_check_digit("188899999"), "huge@direct.bulk.example", business="x" * 200_000))
    path = write_csv(tmp_path / "late.csv", rows)

    with pytest.raises(DirectoryImportError, match="line 602"):
        import_directory_file(path)
    assert DirectoryEntry.select().count() == 0  # the first 500-row chunk was written, then rolled back


def test_a_file_spanning_many_chunks_imports_then_updates_every_row(db, tmp_path):
    rows = [nppes_line(npi_with_check_digit(f"19{i:07d}"), f"doc{i}@direct.org{i % 300}.example",
                       business=f"Organization {i % 300}", city=f"City {i % 50}") for i in range(3_000)]
    path = write_csv(tmp_path / "big.csv", rows)

    first = import_directory_file(path)
    second = import_directory_file(path)

    assert (first.imported, first.updated, second.imported, second.updated) == (3_000, 0, 0, 3_000)
    assert DirectoryEntry.select().count() == 3_000


# --- FHIR ------------------------------------------------------------------------------------------------


def test_fhir_bundle_imports_roles_org_endpoint_and_lone_endpoint(db):
    report = import_directory_file(DATA / "bundle.json")

    assert (report.imported, report.updated, report.format) == (4, 0, "fhir")
    ana = entry("ana.ruiz@direct.marigold-heart.example")  # R4 Coding, "mailto:" address
    assert (ana.name, ana.npi, ana.organization, ana.specialty, ana.endpoint_type, ana.source) == (
        "Ana Ruiz, MD", "1655000028", "Marigold Heart Institute", "Cardiovascular Disease", "DIRECT", "fhir")
    assert (ana.address_line, ana.city, ana.state, ana.postal_code, ana.country) == (
        "400 Marigold Way, Floor 2", "Fernhollow", "VT", "05401", "US")
    # R5 list of CodeableConcepts, plain address, references by fullUrl, official name chosen, "Dr." dropped.
    kwame = entry("kwame.mensah@direct.marigold-heart.example")
    assert (kwame.name, kwame.npi, kwame.organization, kwame.specialty) == (
        "Kwame A. Mensah", "1655000036", "Marigold Heart Institute", "Electrophysiology")
    assert DirectoryEntry.select().where(DirectoryEntry.npi == "1655000010").count() == 1  # ep1 is the role's
    org = entry("referrals@direct.marigold-heart.example")  # referenced only by Organization.endpoint
    assert (org.name, org.organization, org.npi, org.city) == (
        "Marigold Heart Institute", "Marigold Heart Institute", "1655000010", "Fernhollow")
    lone = entry("sleep@direct.fernhollow-sleep.example")  # referenced by nothing
    assert (lone.name, lone.organization, lone.npi, lone.postal_code) == (
        "Fernhollow Sleep Lab Inbox", "Fernhollow Sleep Center", "1655000044", "05402")


def test_fhir_bad_entries_are_skipped_with_their_entry_number(db):
    report = import_directory_file(DATA / "bundle.json")

    assert report.skipped == [
        (6, "Practitioner reference 'Practitioner/missing' matches no Practitioner in the bundle"),
        (9, "not a Direct endpoint (connection type 'hl7-fhir-rest', expected 'direct-project')"),
        (14, "Direct endpoint has no address"),
        (15, "invalid Direct address 'not an address': expected name@domain.example"),
        (16, "entry has no resource with a resourceType"),
        (17, "Endpoint reference 'Endpoint/nowhere' matches no Endpoint in the bundle"),
    ]
    stored = set(endpoints(DirectoryEntry.select()))
    assert "ghost@direct.marigold-heart.example" not in stored  # its only role is broken
    assert "https://fhir.marigold-heart.example/r4" not in stored


def test_fhir_reimport_updates(db):
    import_directory_file(DATA / "bundle.json")
    again = import_directory_file(DATA / "bundle.json")
    assert (again.imported, again.updated, len(again.skipped)) == (0, 4, 6)
    assert DirectoryEntry.select().count() == 4


def test_fhir_invalid_npi_off_endpoint_foreign_system_and_duplicates(db, tmp_path):
    path = write_bundle(
        tmp_path / "more.json",
        {"resourceType": "Practitioner", "id": "bad", "name": [{"given": ["Lee"], "family": "Stone"}],
         "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567890"}]},
        {"resourceType": "PractitionerRole", "practitioner": {"reference": "Practitioner/bad"},
         "endpoint": [{"reference": "Endpoint/a"}]},
        {"resourceType": "Endpoint", "id": "a", "connectionType": DIRECT, "address": "lee@direct.stone.example"},
        {"resourceType": "Endpoint", "id": "off", "status": "off", "connectionType": DIRECT,
         "address": "old@direct.stone.example"},
        {"resourceType": "Endpoint", "id": "other", "address": "x@direct.stone.example",
         "connectionType": {"system": "http://example.org/other", "code": "direct-project"}},
        {"resourceType": "PractitionerRole", "practitioner": {"display": "Dr. Pat Doe"},
         "endpoint": [{"reference": "Endpoint/shared"}]},
        {"resourceType": "PractitionerRole", "practitioner": {"display": "Pat Doe"},
         "endpoint": [{"reference": "Endpoint/shared"}]},
        {"resourceType": "Endpoint", "id": "shared", "connectionType": [{"coding": [DIRECT]}],
         "address": "MAILTO:pat@direct.doe.example"},
    )

    report = import_directory_file(path)

    assert report.skipped == [
        (2, "invalid NPI '1234567890': wrong check digit"),
        (4, "endpoint status is 'off'"),
        (5, "not a Direct endpoint (connection type 'direct-project', expected 'direct-project')"),
        (7, "same endpoint and NPI as entry 6"),
    ]
    assert report.imported == 1
    shared = entry("pat@direct.doe.example")
    assert (shared.name, shared.npi) == ("Dr. Pat Doe", "")


# --- file-level errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"  \n\n ", "the file is empty"),
    (b"hello there\nthis is not a directory\n", "header has the columns \"NPI\" and \"Endpoint\""),
    (b"name,address\nAna,1 Main St\n", "the first line has 'name', 'address'"),
    (b'{"resourceType": "Bundle", "entry": [', "malformed JSON at line 1, column 38"),
    (b'{"resourceType": "Bundle",\n "entry": [}', "malformed JSON at line 2, column 12"),
    (b'{"resourceType": "Patient", "id": "x"}', "not a FHIR Bundle (resourceType 'Patient')"),
    (b"[1, 2, 3]", "not a FHIR Bundle (no resourceType)"),
    (b'{"resourceType": "Bundle", "entry": {}}', "Bundle.entry must be a list"),
    (b"NPI,Endpoint\n1555000011,caf\xe9@x.example\n", "not UTF-8 text (byte 0xe9 on line 2"),
])
def test_unusable_files_raise_a_helpful_error_and_import_nothing(db, tmp_path, content, message):
    path = tmp_path / "input.dat"
    path.write_bytes(content)
    with pytest.raises(DirectoryImportError) as raised:
        import_directory_file(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)
    assert DirectoryEntry.select().count() == 0


def test_neither_format_names_both_expected_formats(db, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\n", encoding="utf-8")
    with pytest.raises(DirectoryImportError, match='"resourceType": "Bundle"') as raised:
        import_directory_file(path)
    assert "NPPES Endpoint Reference File" in str(raised.value)


def test_missing_folder_and_oversized_files_are_refused(db, tmp_path):
    with pytest.raises(DirectoryImportError, match="no such file"):
        import_directory_file(tmp_path / "absent.csv")
    with pytest.raises(DirectoryImportError, match="is a folder"):
        import_directory_file(tmp_path)
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as out:
        out.truncate(201 * 1024 * 1024)  # sparse: takes no disk space
    with pytest.raises(DirectoryImportError, match="201 MB; files over 200 MB are refused"):
        import_directory_file(huge)
    assert DirectoryEntry.select().count() == 0


def test_a_path_through_a_file_is_refused(db, tmp_path):
    with pytest.raises(DirectoryImportError, match="cannot read .*Not a directory"):
        import_directory_file(DATA / "endpoints_good.csv" / "inside.csv")


# --- search ----------------------------------------------------------------------------------------------


@pytest.fixture
def directory(db):
    for name in ("endpoints_good.csv", "endpoints_mixed.csv", "endpoints_bom.csv", "bundle.json"):
        import_directory_file(DATA / name)
    return db


def test_search_by_name_prefix(directory):
    assert endpoints(search_directory("Ana Ru")) == ["ana.ruiz@direct.marigold-heart.example"]
    assert endpoints(search_directory("siobh")) == ["s.obrien@direct.obrien-family.example"]


def test_search_by_npi_exact_and_prefix(directory):
    assert endpoints(search_directory("1655000036")) == ["kwame.mensah@direct.marigold-heart.example"]
    assert endpoints(search_directory("1655-000-036")) == ["kwame.mensah@direct.marigold-heart.example"]
    assert [e.npi for e in search_directory("1655000")] == [
        "1655000028", "1655000044", "1655000051", "1655000036", "1655000010"]  # by name within the rank
    assert search_directory("1655000037") == []


def test_search_ranks_name_then_organization_then_city(directory):
    assert [e.name for e in search_directory("fernhollow")] == [
        "Fernhollow Sleep Lab Inbox",  # name prefix
        "Ana Ruiz, MD", "Kwame A. Mensah", "Marigold Heart Institute",  # city prefix
    ]
    assert [e.name for e in search_directory("marigold heart")] == [
        "Marigold Heart Institute",  # name prefix
        "Ana Ruiz, MD", "Kwame A. Mensah",  # organization prefix
    ]


def test_search_by_organization_and_city(directory):
    assert endpoints(search_directory("quarry hill")) == ["https://connect.quarry-hill.example/gateway"]
    assert sorted(endpoints(search_directory("Gullhaven"))) == [
        "intake@direct.harbor-heart.example", "sjose@direct.clinica-sao-jose.example"]
    assert [e.city for e in search_directory("kestrel b")] == ["Kestrel Bay", "Kestrel Bay"]


def test_search_every_word_matches_name_organization_or_city(directory):
    assert endpoints(search_directory("quarry eastvale")) == ["https://connect.quarry-hill.example/gateway"]
    assert endpoints(search_directory("eastvale quarry")) == ["https://connect.quarry-hill.example/gateway"]
    assert endpoints(search_directory("clinica gull")) == ["sjose@direct.clinica-sao-jose.example"]
    assert search_directory("quarry millbrook") == []
    # A word inside a name is the last resort: "cardio" in "Lakeshore Cardiology Associates".
    assert endpoints(search_directory("cardio port")) == ["ana.ruiz@direct.lakeshore-cardio.example"]


def test_search_apostrophes_and_accents(directory):
    assert endpoints(search_directory("o'brien")) == ["s.obrien@direct.obrien-family.example"]
    assert endpoints(search_directory("CLÍNICA são")) == ["sjose@direct.clinica-sao-jose.example"]


@pytest.mark.parametrize("text", ['"', "*", "😀", "%", "_", "x" * 500, "' OR 1=1 --", "\x00", "a%b_c*'\"😀" * 60,
                                  "Robert'); DROP TABLE directory_entry;--"])
def test_search_hostile_input_returns_an_empty_list(seeded, text):
    total = DirectoryEntry.select().count()
    assert search_directory(text) == []
    assert DirectoryEntry.select().count() == total


@pytest.mark.parametrize("text", ["", "   ", None])
def test_search_blank_lists_the_first_entries_by_name(seeded, text):
    found = search_directory(text, limit=20)
    everything = sorted(DirectoryEntry.select(), key=lambda e: (e.name_norm, e.id))
    assert [e.id for e in found] == [e.id for e in everything[:20]]


def test_search_limit_and_seeded_npi(seeded):
    seed_entry = DirectoryEntry.select().order_by(DirectoryEntry.id.desc()).get()
    assert search_directory(seed_entry.npi)[0].npi == seed_entry.npi
    assert len(search_directory("", limit=7)) == 7
    assert search_directory("a", limit=0) == []
    first = seed_entry.name.split()[0]
    hits = search_directory(first)
    assert hits and hits[0].name_norm.startswith(normalize(first))


def test_directory_module_does_not_import_the_ui_or_transports():
    code = ("import sys, models.directory; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui', 'transports', 'documents')); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
