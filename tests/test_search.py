"""Patient search: what a user types in 2–3 letters, ranked, and safe for any input."""

from __future__ import annotations

import datetime as dt

import pytest

from models.patients import Patient, PatientNameToken
from models.search import parse_birth_date, search_patients

PEOPLE = [
    # mrn, last, first, birth date, sex
    ("1000001", "Smith", "John", "1961-04-12", "M"),
    ("1000002", "Smithers", "Anna", "1990-07-01", "F"),
    ("1000003", "Smith-Jones", "Mary", "1975-02-28", "F"),
    ("1000004", "O'Brien", "Sean", "1983-11-30", "M"),
    ("1000005", "Garcia-Lopez", "María", "2001-05-05", "F"),
    ("1000006", "Müller", "José", "1958-09-09", "M"),
    ("1000007", "Lopez", "Ana", "1949-12-24", "F"),
    ("1000008", "Nguyen", "Linh", "2015-03-03", "F"),
    ("1000009", "Nguyen", "Minh", "2015-03-03", "M"),  # twins
    ("1000010", "Jones", "Smith", "1970-01-01", "M"),  # a first name that is someone's surname
    ("1000011", "van der Berg", "Pieter", "1966-06-06", "M"),
    ("2000001", "Adeyemi", "Tunde", "1988-08-08", "M"),
]


@pytest.fixture
def people(db):
    for mrn, last, first, born, sex in PEOPLE:
        Patient.create(mrn=mrn, last_name=last, first_name=first, birth_date=born, sex=sex)
    return db


def names(hits):
    return [f"{h.last_name}, {h.first_name}" for h in hits]


def test_two_letters_find_last_name_prefixes_alphabetically(people):
    # Ordered by the search key, where the hyphen does not count: "smithers" < "smithjones".
    assert names(search_patients("sm")) == ["Smith, John", "Smithers, Anna", "Smith-Jones, Mary", "Jones, Smith"]


def test_exact_last_name_ranks_before_prefix_and_first_name_matches(people):
    assert names(search_patients("smith")) == ["Smith, John", "Smithers, Anna", "Smith-Jones, Mary",
                                               "Jones, Smith"]
    assert names(search_patients("jones")) == ["Jones, Smith", "Smith-Jones, Mary"]


def test_case_accents_and_punctuation_do_not_matter(people):
    assert names(search_patients("MUL")) == ["Müller, José"]
    assert names(search_patients("mül")) == ["Müller, José"]
    assert names(search_patients("o'b")) == ["O'Brien, Sean"]
    assert names(search_patients("obr")) == ["O'Brien, Sean"]
    assert names(search_patients("jose")) == ["Müller, José"]


def test_umlauts_can_be_typed_spelled_out(people):
    assert names(search_patients("mue")) == ["Müller, José"]
    assert names(search_patients("mueller")) == ["Müller, José"]


def test_later_parts_of_multi_part_names_rank_after_direct_matches(people):
    assert names(search_patients("lop")) == ["Lopez, Ana", "Garcia-Lopez, María"]
    assert names(search_patients("berg")) == ["van der Berg, Pieter"]
    assert names(search_patients("bri")) == ["O'Brien, Sean"]


def test_last_comma_first_and_first_last(people):
    assert names(search_patients("smith, jo")) == ["Smith, John"]
    assert names(search_patients("Nguyen, M")) == ["Nguyen, Minh"]
    assert names(search_patients("nguyen,")) == ["Nguyen, Linh", "Nguyen, Minh"]
    assert names(search_patients("john smith")) == ["Smith, John"]
    assert names(search_patients("smith john")) == ["Smith, John"]
    assert names(search_patients("van der")) == ["van der Berg, Pieter"]


def test_mrn_exact_and_prefix(people):
    assert names(search_patients("1000004")) == ["O'Brien, Sean"]
    assert [h.mrn for h in search_patients("100001")] == ["1000010", "1000011"]
    assert names(search_patients("2000001")) == ["Adeyemi, Tunde"]


@pytest.mark.parametrize("text", ["2015-03-03", "03/03/2015", "3/3/2015", "03.03.2015", "20150303", "03032015"])
def test_date_of_birth_in_common_formats_finds_the_twins(people, text):
    assert names(search_patients(text)) == ["Nguyen, Linh", "Nguyen, Minh"]


def test_results_carry_what_the_list_shows(people):
    (hit,) = search_patients("o'brien")
    assert (hit.mrn, hit.birth_date, hit.sex) == ("1000004", dt.date(1983, 11, 30), "M")
    assert hit.as_json() == {"id": hit.id, "mrn": "1000004", "last_name": "O'Brien", "first_name": "Sean",
                             "birth_date": "1983-11-30", "sex": "M"}


@pytest.mark.parametrize("text", [
    "", " ", "'", '"', "o''brien", "*", "%", "_", "\\", "sm*", "sm%", "a' OR '1'='1", "'; DROP TABLE patient; --",
    "😀", "😀😀😀", "\x00", "NEAR(a b)", "\"smith\"", "a" * 500, "é" * 500, "\u202e", "--", "((", "[", ",", ", ,",
    "0" * 500, "99/99/9999", "2015-02-30",
])
def test_hostile_input_gives_a_list_never_an_error(people, text):
    hits = search_patients(text)
    assert isinstance(hits, list)
    assert Patient.select().count() == len(PEOPLE)


def test_hostile_input_that_still_contains_a_name_finds_it(people):
    assert names(search_patients("sm*")) == names(search_patients("sm"))
    assert names(search_patients("'; smith")) == names(search_patients("smith"))


def test_limit_caps_results(people):
    assert len(search_patients("n", limit=1)) <= 1
    assert len(search_patients("sm", limit=2)) == 2


def test_renaming_a_patient_updates_search(people):
    patient = Patient.get(Patient.mrn == "1000004")
    patient.last_name = "Brennan-Walsh"
    patient.save()
    assert names(search_patients("o'b")) == []
    assert names(search_patients("walsh")) == ["Brennan-Walsh, Sean"]
    assert PatientNameToken.select().where(PatientNameToken.patient == patient.id).count() == 2


def test_parse_birth_date():
    assert parse_birth_date("12/24/1949") == dt.date(1949, 12, 24)
    assert parse_birth_date("12/24/49") == dt.date(1949, 12, 24)
    assert parse_birth_date("smith") is None
    assert parse_birth_date("1000004") is None


def test_search_on_seeded_data_is_ranked_and_complete(seeded):
    hits = search_patients("ng")
    assert hits and all(h.last_name.lower().startswith("ng") or h.first_name.lower().startswith("ng")
                        or "ng" in h.last_name.lower() for h in hits)
    last_prefix = [h for h in hits if h.last_name.lower().startswith("ng")]
    assert hits[: len(last_prefix)] == last_prefix


def test_bench_seed_writes_the_same_patient_rows_searchable(db):
    from models.seed import SeedError, seed_patients
    from models.text import name_tokens, normalize

    report = seed_patients(400)
    assert (report.patients, Patient.select().count()) == (400, 400)
    mrns = [p.mrn for p in Patient.select().order_by(Patient.id)]
    assert mrns == [str(1_000_000 + n) for n in range(1, 401)]
    for patient in Patient.select():
        assert (patient.last_norm, patient.first_norm) == (normalize(patient.last_name), normalize(patient.first_name))
        tokens = {t.token for t in PatientNameToken.select().where(PatientNameToken.patient == patient.id)}
        assert tokens == name_tokens(patient.first_name, patient.last_name)
    some = Patient.get_by_id(123)
    assert some.id in [h.id for h in search_patients(some.mrn)]
    assert some.id in [h.id for h in search_patients(f"{some.last_name}, {some.first_name}")]
    with pytest.raises(SeedError):
        seed_patients(1)
