"""The Transition of Care C-CDA builder: every variant a user can send is XSD- and schematron-clean (one run of
../shared/tools/ccda_check.py over all of them), and the header/section rules hold."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from documents.ccda import build_ccda
from documents.ccda.sections import WITHHELD
from documents.packet import build_attachments
from models import clock
from models.clinical import CLINICAL_MODELS, Allergy, CareTeamMember, Problem
from models.contacts import Contact
from models.db import close_database, open_database, sqlite_url
from models.patients import Encounter, Note, Patient
from models.practice import Provider
from models.referring import SUMMARY_OF_CARE, ReferralDraft
from tests.conftest import FROZEN_NOW

CHECKER = Path(__file__).resolve().parents[2] / "shared" / "tools" / "ccda_check.py"
NS = {"v3": "urn:hl7-org:v3", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
ITEMS = [key for key, _ in SUMMARY_OF_CARE]
VARIANTS = ["none", *ITEMS, "all"]
DIRECTIONS = ["transferring", "receiving"]
KINDS = ["allergic", "no_allergies", "many_problems", "escaping", "empty_chart", "no_note"]
FULL = ("allergic", "no_allergies", "many_problems")
# Each patient of the spread x both directions x (all sent, each item unticked alone, all unticked); the
# renamed "escaping" patient, a patient with an empty chart and a referral without a note (by eFax) in their
# full form only.
CASES = [(kind, direction, variant) for kind in KINDS for direction in DIRECTIONS
         for variant in (VARIANTS if kind in FULL else ["none"])]
NASTY = "O'Brien <&> \"Zoë\""
LONG_NOTE = ("Line with <tags> & 'quotes' \"double\" — café ✓\n" * 500)[:20_000]


def signed_note(patient_id: int) -> Note | None:
    return (Note.select().where(Note.patient == patient_id, Note.signed_at.is_null(False))
            .order_by(Note.written_at.desc()).first())


def pick_patients() -> dict[str, Patient]:
    """A spread of seeded patients: with allergies, without, the most problems, one renamed to test escaping,
    one whose chart is emptied, and one sent without a note."""
    with_note = [p for p in Patient.select().order_by(Patient.id).limit(80) if signed_note(p.id)]
    allergic = next(p for p in with_note if p.allergies.count() >= 2)
    no_allergies = next(p for p in with_note if p.allergies.count() == 0 and p.problems.count() > 0)
    many = max(with_note, key=lambda p: (p.problems.count(), -p.id))
    nasty = next(p for p in with_note if p.id not in {allergic.id, no_allergies.id, many.id})
    nasty.first_name, nasty.last_name = "Zoë \"Z\" <&>", NASTY
    nasty.save()
    note = signed_note(nasty.id)
    note.sections = [("Plan", LONG_NOTE)]
    note.save()
    taken = {allergic.id, no_allergies.id, many.id, nasty.id}
    empty, no_note = [p for p in with_note if p.id not in taken][:2]
    for model in CLINICAL_MODELS:
        model.delete().where(model.patient == empty.id).execute()
    Note.delete().where(Note.patient == empty.id).execute()
    Encounter.delete().where(Encounter.patient == empty.id).execute()
    return {"allergic": allergic, "no_allergies": no_allergies, "many_problems": many, "escaping": nasty,
            "empty_chart": empty, "no_note": no_note}


def case_draft(patients: dict[str, Patient], kind: str, direction: str, variant: str) -> ReferralDraft:
    if kind == "no_note":
        return make_draft(patients[kind], direction, variant, note_id=None, channel="efax",
                          recipient="(555) 123-4567", recipient_name="")
    return make_draft(patients[kind], direction, variant)


def make_draft(patient: Patient, direction: str, variant: str = "none", **changes) -> ReferralDraft:
    note = signed_note(patient.id)
    excluded = () if variant == "none" else tuple(ITEMS) if variant == "all" else (variant,)
    values = dict(patient_id=patient.id, note_id=note.id if note else None, channel="direct",
                  direction=direction, excluded_sections=excluded, recipient="cardio@direct.valley-cardio.example",
                  recipient_name="Dr. Ana Ruiz", reason="Chest pain on exertion & dyspnea <2 weeks>")
    values.update(changes)
    return ReferralDraft(**values)


@pytest.fixture(scope="module")
def checked(seeded_template, tmp_path_factory):
    """Build every variant for the spread of patients, then check them all in one checker run."""
    assert CHECKER.exists(), f"{CHECKER} is missing: ../shared must sit beside the checkout"
    folder = tmp_path_factory.mktemp("ccda")
    db_file = folder / "referdesk.db"
    shutil.copy(seeded_template, db_file)
    clock.freeze(FROZEN_NOW)
    open_database(sqlite_url(db_file))
    try:
        patients = pick_patients()
        counts = {k: (p.problems.count(), p.allergies.count()) for k, p in patients.items()}
        files = {}
        for kind, direction, variant in CASES:
            path = folder / f"{kind}-{direction}-{variant}.xml"
            path.write_bytes(build_ccda(case_draft(patients, kind, direction, variant)))
            files[(kind, direction, variant)] = path
    finally:
        close_database()
        clock.freeze(None)
    run = subprocess.run([sys.executable, str(CHECKER), *map(str, files.values()), "--json"],
                         capture_output=True, text=True, timeout=600)
    results = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            results[item["file"]] = item
    return {"files": files, "results": results, "counts": counts, "stderr": run.stderr}


def test_the_spread_covers_allergies_none_and_many_problems(checked):
    counts = checked["counts"]
    assert counts["allergic"][1] >= 2 and counts["no_allergies"][1] == 0
    assert counts["many_problems"][0] >= 3


@pytest.mark.parametrize("kind, direction, variant", CASES)
def test_every_variant_passes_xsd_and_schematron(checked, kind, direction, variant):
    key = (kind, direction, variant)
    result = checked["results"].get(str(checked["files"][key]))
    assert result is not None, checked["stderr"][-2000:]
    assert "not_well_formed" not in result
    assert result["xsd_errors"] == []
    assert result["sch2.1_errors"] == []
    assert result["sch3.0_errors"] == []
    assert result["sch2.1_warnings"] <= 45
    assert result["sch3.0_warnings"] <= 40


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True))


def section(doc, loinc: str):
    found = doc.xpath(f"//v3:section[v3:code/@code='{loinc}']", namespaces=NS)
    return found[0] if found else None


@pytest.fixture
def spread(seeded):
    return pick_patients()


def test_names_and_a_20000_character_note_round_trip(spread):
    patient = spread["escaping"]
    data = build_ccda(make_draft(patient, "transferring"))
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    doc = parse(data)
    name = doc.find("v3:recordTarget/v3:patientRole/v3:patient/v3:name", NS)
    assert name.findtext("v3:family", namespaces=NS) == NASTY
    assert [g.text for g in name.findall("v3:given", NS)] == ["Zoë", "\"Z\"", "<&>"]
    note = doc.xpath("//v3:section[v3:templateId/@root='2.16.840.1.113883.10.20.22.2.65']", namespaces=NS)[0]
    paragraph = note.find("v3:text/v3:paragraph", NS)
    assert len(LONG_NOTE) == 20_000
    # every character kept, in order; the note's line breaks became <br/>
    assert "".join(LONG_NOTE.splitlines()) in "".join(paragraph.itertext())
    assert len(paragraph.findall("v3:br", NS)) >= LONG_NOTE.count("\n")
    reason = section(doc, "42349-1").findtext("v3:text/v3:paragraph", namespaces=NS)
    assert reason == "Chest pain on exertion & dyspnea <2 weeks>"


def recipients(doc):
    return doc.findall("v3:informationRecipient", NS)


def test_a_referral_note_has_exactly_one_named_recipient(spread):
    patient = spread["allergic"]
    doc = parse(build_ccda(make_draft(patient, "transferring")))
    (only,) = recipients(doc)
    assert only.findtext("v3:intendedRecipient/v3:informationRecipient/v3:name", namespaces=NS) == "Dr. Ana Ruiz"
    assert doc.find("v3:code", NS).get("code") == "57133-1"
    contact = Contact.create(name="Valley Cardiology Group", direct_address="cardio@direct.valley-cardio.example")
    doc = parse(build_ccda(make_draft(patient, "transferring", recipient_name="", contact_id=contact.id)))
    assert [r.findtext(".//v3:name", namespaces=NS) for r in recipients(doc)] == ["Valley Cardiology Group"]
    doc = parse(build_ccda(make_draft(patient, "transferring", recipient_name="")))
    assert [r.findtext(".//v3:name", namespaces=NS) for r in recipients(doc)] == ["cardio@direct.valley-cardio.example"]


def test_a_ccd_has_a_pcpr_service_event_with_low_and_high(spread):
    doc = parse(build_ccda(make_draft(spread["many_problems"], "receiving")))
    assert doc.find("v3:code", NS).get("code") == "34133-9"
    event = doc.find("v3:documentationOf/v3:serviceEvent", NS)
    assert event.get("classCode") == "PCPR"
    assert event.find("v3:effectiveTime/v3:low", NS).get("value")
    assert event.find("v3:effectiveTime/v3:high", NS).get("value")


def test_an_unticked_required_section_is_sent_empty_with_nullflavor_and_says_why(spread):
    doc = parse(build_ccda(make_draft(spread["many_problems"], "transferring", "problems")))
    problems = section(doc, "11450-4")
    assert problems.get("nullFlavor") == "NI"
    assert problems.find("v3:entry", NS) is None
    assert problems.findtext("v3:text/v3:paragraph", namespaces=NS) == WITHHELD


def test_an_unticked_optional_section_is_left_out(spread):
    patient = spread["many_problems"]
    full = parse(build_ccda(make_draft(patient, "transferring")))
    assert section(full, "29762-2") is not None  # social history (smoking status) is there when ticked
    doc = parse(build_ccda(make_draft(patient, "transferring", "smoking_status")))
    assert section(doc, "29762-2") is None


@pytest.mark.parametrize("direction, required", [
    ("transferring", ["11450-4", "10160-0"]), ("receiving", ["11450-4", "10160-0", "30954-2", "8716-3"])])
def test_an_empty_chart_says_so_in_each_required_section(spread, direction, required):
    doc = parse(build_ccda(make_draft(spread["empty_chart"], direction)))
    for loinc in required:
        found = section(doc, loinc)
        assert found.get("nullFlavor") == "NI" and found.find("v3:entry", NS) is None
        assert found.findtext("v3:text/v3:paragraph", namespaces=NS).startswith("No ")
    assert section(doc, "11369-6") is None  # optional and empty: left out
    assert doc.find("v3:componentOf", NS) is None  # no encounter to point at


def test_no_known_allergies_uses_the_negation_pattern(spread):
    doc = parse(build_ccda(make_draft(spread["no_allergies"], "transferring")))
    allergies = section(doc, "48765-2")
    assert allergies.get("nullFlavor") is None
    obs = allergies.find(".//v3:observation", NS)
    assert obs.get("negationInd") == "true"
    assert "No known allergies" in "".join(allergies.find("v3:text", NS).itertext())


def test_allergies_are_coded_with_reactions(spread):
    patient = spread["allergic"]
    doc = parse(build_ccda(make_draft(patient, "transferring")))
    allergens = doc.xpath("//v3:section[v3:code/@code='48765-2']//v3:playingEntity/v3:code/@code", namespaces=NS)
    assert sorted(allergens) == sorted(a.substance_code for a in Allergy.select().where(Allergy.patient == patient.id))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_every_entry_reference_points_at_an_existing_narrative_id(spread, direction):
    for patient in spread.values():
        doc = parse(build_ccda(make_draft(patient, direction)))
        ids = set(doc.xpath("//v3:section/v3:text//@ID", namespaces=NS))
        refs = doc.xpath("//v3:entry//v3:reference/@value", namespaces=NS)
        assert refs and all(ref.startswith("#") and ref[1:] in ids for ref in refs)
        for entry in doc.xpath("//v3:entry/*", namespaces=NS):
            assert entry.find("v3:text/v3:reference", NS) is not None or entry.tag.endswith("organizer")
        codes = doc.xpath("//v3:section[v3:code/@code='11450-4']//v3:value/v3:translation/@code", namespaces=NS)
        icd = {p.icd10_code for p in Problem.select().where(Problem.patient == patient.id) if p.icd10_code}
        assert icd <= set(codes)


def test_the_document_id_is_stable_per_referral_and_can_be_given(spread):
    draft = make_draft(spread["allergic"], "transferring")
    first, again = parse(build_ccda(draft)), parse(build_ccda(draft))
    assert first.find("v3:id", NS).attrib == again.find("v3:id", NS).attrib
    given = parse(build_ccda(draft, document_id="3f2504e0-4f89-11d3-9a0c-0305e82c3301"))
    assert given.find("v3:id", NS).get("root") == "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
    other = parse(build_ccda(make_draft(spread["allergic"], "receiving")))
    assert other.find("v3:id", NS).attrib != first.find("v3:id", NS).attrib


def test_the_packet_carries_the_ccda_next_to_the_note(spread):
    patient = spread["allergic"]
    attachments = build_attachments(make_draft(patient, "transferring"))
    assert [a.kind for a in attachments] == ["note", "ccda", "xdm"]  # Direct also carries the XDM package
    ccda = attachments[1]
    assert ccda.media_type == "application/xml" and ccda.title == "Referral Note"
    assert ccda.filename == f"referral-{patient.mrn}-20261102.xml"
    assert parse(ccda.content).find("v3:title", NS).text == "Referral Note"
    summary = build_attachments(make_draft(patient, "receiving", include_note=False))
    assert [(a.kind, a.title) for a in summary] == [("ccda", "Continuity of Care Document"),
                                                    ("xdm", "Continuity of Care Document (XDM package)")]


CARE_TEAMS = "2.16.840.1.113883.10.20.22.2.500"


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_care_team_section_lists_the_patients_care_team_and_is_left_out_when_unticked(spread, direction):
    patient = spread["many_problems"]
    pcp = CareTeamMember.get(CareTeamMember.patient == patient.id).provider
    extra = Provider.select().where(Provider.id != pcp.id).order_by(Provider.id).first()
    CareTeamMember.create(patient=patient.id, provider=extra, role_code="22731001", role="Orthopedic surgeon")
    members = list(CareTeamMember.select().where(CareTeamMember.patient == patient.id).order_by(CareTeamMember.id))
    assert len(members) >= 2
    doc = parse(build_ccda(make_draft(patient, direction)))
    care = section(doc, "85847-2")
    assert care is not None and care.get("nullFlavor") is None
    assert [(t.get("root"), t.get("extension")) for t in care.findall("v3:templateId", NS)] == [
        (CARE_TEAMS, "2019-07-01"), (CARE_TEAMS, "2022-06-01")]
    (organizer,) = care.findall("v3:entry/v3:organizer", NS)
    assert "2019-07-01" in organizer.xpath(
        "v3:templateId[@root='2.16.840.1.113883.10.20.22.4.500']/@extension", namespaces=NS)
    assert organizer.find("v3:code", NS).get("code") == "86744-0"
    acts = organizer.findall("v3:component/v3:act", NS)
    assert len(acts) == len(members)
    narrative = {c.get("ID"): "".join(c.itertext()) for c in care.iterfind("v3:text//v3:content[@ID]", NS)}
    for member, act in zip(members, acts):
        assert "2019-07-01" in act.xpath(
            "v3:templateId[@root='2.16.840.1.113883.10.20.22.4.500.1']/@extension", namespaces=NS)
        entity = act.find("v3:performer/v3:assignedEntity", NS)
        npi = entity.find("v3:id", NS)
        assert (npi.get("root"), npi.get("extension")) == ("2.16.840.1.113883.4.6", member.provider.npi)
        assert entity.findtext("v3:assignedPerson/v3:name/v3:family", namespaces=NS) == member.provider.last_name
        assert entity.find("v3:addr", NS) is not None and entity.find("v3:telecom", NS) is not None
        function = act.find("v3:performer/{urn:hl7-org:sdtc}functionCode", NS)
        assert function.get("code") == member.role_code
        ref = act.find("v3:text/v3:reference", NS).get("value")
        assert member.provider.last_name in narrative[ref[1:]]
    unticked = parse(build_ccda(make_draft(patient, direction, "care_team")))
    assert section(unticked, "85847-2") is None
    assert not unticked.xpath("//v3:organizer[v3:templateId/@root='2.16.840.1.113883.10.20.22.4.500']",
                              namespaces=NS)


SEX_OBS, GENDER_IDENTITY, SEXUAL_ORIENTATION = ("2.16.840.1.113883.10.20.22.4.507", "2.16.840.1.113883.10.20.34.3.45",
                                                "2.16.840.1.113883.10.20.22.4.501")


def sogi_observations(doc) -> dict[str, etree._Element]:
    """The Social History section's sex / gender identity / sexual orientation observations, by template root."""
    social = section(doc, "29762-2")
    found = {}
    for obs in ([] if social is None else social.findall("v3:entry/v3:observation", NS)):
        for root in {t.get("root") for t in obs.findall("v3:templateId", NS)} & {SEX_OBS, GENDER_IDENTITY,
                                                                                 SEXUAL_ORIENTATION}:
            assert root not in found, f"{root} twice"
            found[root] = obs
    return found


def record_sogi(patient: Patient, sex=("248153007", "Male"),
                identity=("33791000087105", "Identifies as nonbinary gender"), orientation=("42035005", "Bisexual"),
                on="2026-03-04") -> None:
    patient.recorded_sex_code, patient.recorded_sex = sex
    patient.gender_identity_code, patient.gender_identity = identity
    patient.sexual_orientation_code, patient.sexual_orientation = orientation
    patient.sogi_recorded_on = on
    patient.save()


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_recorded_sex_gender_identity_and_sexual_orientation_are_social_history_observations(spread, direction):
    patient = spread["allergic"]
    record_sogi(patient)
    doc = parse(build_ccda(make_draft(patient, direction)))
    found = sogi_observations(doc)
    assert set(found) == {SEX_OBS, GENDER_IDENTITY, SEXUAL_ORIENTATION}
    narrative = {c.get("ID"): c.getparent().getparent() for c in section(doc, "29762-2").iterfind(
        "v3:text//v3:content[@ID]", NS)}
    for root, (extensions, loinc, value, words) in {
        SEX_OBS: ({"2023-06-28", "2023-07-01"}, "46098-0", "248153007", "Male"),
        GENDER_IDENTITY: ({"2023-05-01"}, "76691-5", "33791000087105", "Identifies as nonbinary gender"),
        SEXUAL_ORIENTATION: ({"2023-05-01"}, "76690-7", "42035005", "Bisexual"),
    }.items():
        obs = found[root]
        assert set(obs.xpath("v3:templateId[@root=$r]/@extension", r=root, namespaces=NS)) == extensions
        if root != SEX_OBS:  # both are Social History Observations too
            assert obs.find("v3:templateId[@root='2.16.840.1.113883.10.20.22.4.38'][@extension='2022-06-01']",
                            NS) is not None
            assert obs.find("v3:effectiveTime/v3:low", NS).get("value") == "20260304"
        else:  # a point in time: the template forbids low / high
            assert obs.find("v3:effectiveTime", NS).get("value") == "20260304"
        assert (obs.find("v3:code", NS).get("code"), obs.find("v3:code", NS).get("codeSystem")) == (
            loinc, "2.16.840.1.113883.6.1")
        result = obs.find("v3:value", NS)
        assert (result.get("code"), result.get("codeSystem")) == (value, "2.16.840.1.113883.6.96")
        assert result.get(f"{{{NS['xsi']}}}type") == "CD"
        ref = obs.find("v3:text/v3:reference", NS).get("value")
        assert words in "".join(narrative[ref[1:]].itertext())
        assert obs.find("v3:author", NS) is not None


def test_declined_answers_are_null_flavors_except_where_sex_observation_forbids_them(spread):
    patient = spread["allergic"]
    record_sogi(patient, sex=("ASKU", "Asked but declined"), identity=("ASKU", "Asked but declined"),
                orientation=("UNK", "Unknown"))
    found = sogi_observations(parse(build_ccda(make_draft(patient, "transferring"))))
    sex = found[SEX_OBS].find("v3:value", NS)
    assert (sex.get("code"), sex.get("codeSystem"), sex.get("nullFlavor")) == (
        "asked-declined", "2.16.840.1.113883.4.642.4.1048", None)
    assert found[GENDER_IDENTITY].find("v3:value", NS).attrib.get("nullFlavor") == "ASKU"
    assert found[SEXUAL_ORIENTATION].find("v3:value", NS).attrib.get("nullFlavor") == "UNK"
    assert found[GENDER_IDENTITY].find("v3:value", NS).get("code") is None


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_nothing_recorded_sends_no_sogi_observation_and_only_what_is_recorded_is_sent(spread, direction):
    patient = spread["no_allergies"]
    record_sogi(patient, sex=("", ""), identity=("", ""), orientation=("", ""), on=None)
    doc = parse(build_ccda(make_draft(patient, direction)))
    assert section(doc, "29762-2") is not None and sogi_observations(doc) == {}
    assert not doc.xpath("//v3:code[@code='46098-0' or @code='76691-5' or @code='76690-7']", namespaces=NS)
    record_sogi(patient, identity=("", ""), orientation=("", ""))  # a child: asked about sex only
    assert set(sogi_observations(parse(build_ccda(make_draft(patient, direction))))) == {SEX_OBS}


def test_sogi_without_smoking_status_still_gets_a_social_history_section_and_unticking_withholds_it(spread):
    patient = spread["empty_chart"]  # no smoking status: the section says so and still carries them
    record_sogi(patient)
    doc = parse(build_ccda(make_draft(patient, "transferring")))
    assert len(sogi_observations(doc)) == 3
    assert "No smoking status recorded." in "".join(section(doc, "29762-2").find("v3:text", NS).itertext())
    # The Social History section goes with its Summary of Care item: left out, or sent empty when required.
    assert section(parse(build_ccda(make_draft(patient, "transferring", "smoking_status"))), "29762-2") is None
    withheld = parse(build_ccda(make_draft(patient, "receiving", "smoking_status")))
    assert section(withheld, "29762-2").get("nullFlavor") == "NI" and sogi_observations(withheld) == {}


def test_the_reader_reads_them_back_into_the_patient_summary(spread):
    from documents.ccda_reader import read_summary

    patient = spread["allergic"]
    record_sogi(patient, orientation=("ASKU", "Asked but declined"))
    read = read_summary(build_ccda(make_draft(patient, "receiving"))).patient
    assert (read.recorded_sex, read.gender_identity, read.sexual_orientation) == (
        "Male", "Identifies as nonbinary gender", "Asked but declined")
    record_sogi(patient, sex=("", ""), identity=("", ""), orientation=("", ""), on=None)
    read = read_summary(build_ccda(make_draft(patient, "receiving"))).patient
    assert (read.recorded_sex, read.gender_identity, read.sexual_orientation) == ("", "", "")
