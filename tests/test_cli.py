"""The command line as scripts use it: JSON only on stdout, messages on stderr, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
import sys

import pytest

from models.config import ConfigError, load_config
from models.db import sqlite_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_search_json_prints_one_list_per_text(data_dir, cli):
    code, out, err = cli("--data-dir", data_dir, "search", "ga", "o'b", "😀", "--json")
    assert code == 0
    lists = json.loads(out)
    assert len(lists) == 3
    assert lists[0] and lists[2] == []
    for hit in lists[0]:
        assert set(hit) >= {"mrn", "last_name", "first_name", "birth_date", "sex"}
        assert len(hit["birth_date"]) == 10 and hit["birth_date"][4] == "-"
    assert all(h["last_name"].lower().startswith("ga") or h["first_name"].lower().startswith("ga")
               for h in lists[0][:3])


def test_search_text_output_and_empty_message(data_dir, cli):
    code, out, err = cli("--data-dir", data_dir, "search", "zzqx")
    assert code == 0 and out == ""
    assert "no patient matches 'zzqx'" in err


def test_notes_json_lists_id_date_type_author_signed(data_dir, cli):
    _, out, _ = cli("--data-dir", data_dir, "search", "1000001", "--json")
    mrn = json.loads(out)[0][0]["mrn"]
    code, out, err = cli("--data-dir", data_dir, "notes", "--patient", mrn, "--json")
    assert code == 0 and err == ""
    notes = json.loads(out)
    assert notes
    for note in notes:
        assert set(note) >= {"id", "date", "type", "author", "signed"}
        assert isinstance(note["signed"], bool)
    assert [n["date"] for n in notes] == sorted((n["date"] for n in notes), reverse=True)


def test_notes_for_an_unknown_patient_fails_clearly(data_dir, cli):
    code, out, err = cli("--data-dir", data_dir, "notes", "--patient", "nope", "--json")
    assert code == 1 and out == ""
    assert "no patient with MRN 'nope'" in err and "referdesk search" in err


def test_seed_command_fills_a_new_folder_and_refuses_a_second_time(tmp_path, cli):
    folder = tmp_path / "new"
    code, out, err = cli("--data-dir", folder, "seed", "--patients", "25")
    assert code == 0 and out == ""
    assert "Seeded 25 patients" in err
    code, _, err = cli("--data-dir", folder, "seed", "--patients", "25")
    assert code == 1 and "already has 25 patients" in err


def test_a_bad_config_file_is_reported_not_raised(tmp_path, cli):
    bad = tmp_path / "config.toml"
    bad.write_text("[database\nurl = 1")
    code, out, err = cli("--config", bad, "search", "ab")
    assert code == 1 and "not valid TOML" in err


def test_help_does_not_import_textual_or_the_models():
    code = ("import sys; from tui.cli import build_parser; build_parser().format_help(); "
            "assert 'textual' not in sys.modules and 'peewee' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_console_script_runs(data_dir):
    result = subprocess.run([sys.executable, "-m", "tui.cli", "--data-dir", str(data_dir), "search", "ng", "--json"],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    assert isinstance(json.loads(result.stdout), list)


# --- configuration precedence ---------------------------------------------------------------------------


def test_precedence_db_over_data_dir_over_env_over_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[database]\nurl = "sqlite:////from/file.db"\n[practice]\nname = "Riverbend"\n')
    env = {"REFERDESK_DATA_DIR": str(tmp_path / "env")}
    assert load_config(config, env={}).database_url == "sqlite:////from/file.db"
    assert load_config(config, env=env).database_url == sqlite_url(tmp_path / "env" / "referdesk.db")
    assert load_config(config, data_dir=tmp_path / "cli", env=env).database_url == sqlite_url(
        tmp_path / "cli" / "referdesk.db")
    assert load_config(config, data_dir=tmp_path / "cli", db_url="sqlite:////x.db", env=env).database_url == \
        "sqlite:////x.db"
    assert load_config(config, env={}).section("practice") == {"name": "Riverbend"}


def test_config_path_from_environment_and_missing_explicit_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[database]\nurl = "sqlite:////env/config.db"\n')
    assert load_config(env={"REFERDESK_CONFIG": str(config)}).database_url == "sqlite:////env/config.db"
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", env={})


def test_no_config_file_uses_the_user_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdgc"))
    config = load_config(env={})
    assert config.path is None
    assert config.database_url == sqlite_url(tmp_path / "xdg" / "referdesk" / "referdesk.db")
    assert not (tmp_path / "xdg").exists()


# --- send and verify ------------------------------------------------------------------------------------


def _contact(data_dir, state: str):
    from models.contacts import Contact
    from models.db import close_database, open_database

    open_database(sqlite_url(data_dir / "referdesk.db"))
    contact = Contact.select().where(Contact.verification == state, Contact.direct_address != "").first()
    close_database()
    return contact


def test_send_queues_a_referral_like_the_message_window(data_dir, cli):
    contact = _contact(data_dir, "verified")
    code, out, err = cli("--data-dir", data_dir, "search", "1000001", "--json")
    mrn = json.loads(out)[0][0]["mrn"]
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", mrn, "--via", "direct", "--to",
                         contact.direct_address, "--reason", "Cardiology evaluation", "--exclude", "goals")
    assert code == 0, err
    referral_id = int(out.strip())
    code, out, _ = cli("--data-dir", data_dir, "referrals", "--status", "queued", "--json")
    (row,) = [r for r in json.loads(out) if r["id"] == referral_id]
    assert row["recipient"] == contact.direct_address and row["channel"] == "direct"
    assert [e["kind"] for e in row["events"]] == ["queued"]


def test_send_refuses_an_unverified_recipient_and_stores_nothing(data_dir, cli):
    bad = _contact(data_dir, "invalid")
    _, before, _ = cli("--data-dir", data_dir, "referrals", "--json")
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", "1000001", "--via", "direct",
                         "--to", bad.direct_address)
    assert code == 1 and out == ""
    assert f"invalid: {bad.verification_reason} (address book)" in err
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", "1000001", "--via", "efax",
                         "--to", "555-0100")
    assert code == 1 and "needs 10 digits" in err
    code, out, err = cli("--data-dir", data_dir, "send", "--patient", "1000001", "--via", "direct",
                         "--to", bad.direct_address, "--exclude", "horoscope")
    assert code == 1 and "unknown section(s) horoscope" in err
    _, after, _ = cli("--data-dir", data_dir, "referrals", "--json")
    assert json.loads(after) == json.loads(before)


def test_verify_reports_the_verdict_and_its_source(data_dir, cli):
    good = _contact(data_dir, "verified")
    code, out, _ = cli("--data-dir", data_dir, "verify", good.direct_address, "--json")
    assert code == 0
    assert json.loads(out) | {"checked_at": None} == {"address": good.direct_address, "state": "verified",
                                                     "reason": "", "source": "address-book", "checked_at": None}
    code, out, _ = cli("--data-dir", data_dir, "verify", "not@an address")
    assert code == 1 and "invalid — malformed" in out


def test_demo_seeds_its_folder_runs_the_app_on_the_sandbox_and_leaves_nothing_running(monkeypatch, cli,
                                                                                     tmp_path):
    """`referdesk demo` with the app replaced by a probe that looks at what it was given while it "runs"."""
    import socket

    import tui.cli as cli_module
    from models import clock
    from models.patients import Patient

    clock.freeze(None)  # the sandbox issues its certificates for today
    seen = {}

    def probe(config, *, demo=False, start="search"):
        listen = config.section("inbound")["smtp_listen"].rsplit(":", 1)[1]
        with socket.create_connection(("127.0.0.1", int(listen)), timeout=2):
            pass  # this practice's listener answers while the app runs
        seen.update(demo=demo, patients=Patient.select().count(), direct=config.section("direct")["address"],
                    in_app=config.section("worker")["in_app"])

    monkeypatch.setattr(cli_module, "_run_app", probe)
    folder = tmp_path / "demo"
    code, out, err = cli("--data-dir", folder, "demo", "--patients", "40")
    assert code == 0, err
    assert seen == {"demo": True, "patients": 40, "direct": "referrals@direct.riverbend-family.example",
                    "in_app": True}
    assert "Seeded 40 synthetic patients" in err and (folder / "config.toml").exists()
    code, out, err = cli("--data-dir", folder, "demo", "--patients", "40")  # a later run keeps the data
    assert code == 0 and "Seeded" not in err
    code, out, err = cli("--data-dir", folder, "demo", "--reset", "--patients", "30")
    assert code == 0 and "Seeded 30 synthetic patients" in err and seen["patients"] == 30
    from sandbox_processes import partner_processes

    assert partner_processes(folder / "sandbox" / "partner") == []


# --- inspect --------------------------------------------------------------------------------------------

SHARED = Path(__file__).resolve().parents[2] / "shared" / "standards" / "cda"


def test_inspect_json_summarises_a_ccd_with_xsd_findings(cli):
    ccd = SHARED / "examples" / "hl7-c-cda-examples" / "Documents" / "CCD" / "CCD 1" / "CCD.XML"
    code, out, err = cli("inspect", ccd, "--json", "--schema", SHARED / "schema")
    assert code == 0, err
    report = json.loads(out)
    assert report["document_type"]["code"] == "34133-9"
    assert report["patient"] == report["patient"] | {"last_name": "Betterhalf", "first_name": "Eve",
                                                      "birth_date": "1975-05-01", "sex": "F"}
    assert any(s["code"] == "48765-2" and s["entries"] for s in report["sections"])
    assert not [f for f in report["findings"] if f.get("source") == "xsd"]


def test_inspect_of_something_that_is_not_xml_is_a_finding_not_an_error(cli, tmp_path):
    junk = tmp_path / "junk.xml"
    junk.write_bytes(b"%PDF-1.4 definitely not xml")
    code, out, err = cli("inspect", junk, "--json")
    assert code == 0
    assert json.loads(out)["findings"][0]["severity"] == "error"
    code, out, err = cli("inspect", tmp_path / "missing.xml")
    assert code == 1 and "cannot read" in err and out == ""


def test_ccda_writes_a_referral_note_that_inspect_reads_back(data_dir, cli, tmp_path):
    out_file = tmp_path / "referral.xml"
    code, out, err = cli("--data-dir", data_dir, "ccda", "--patient", "1000001", "--exclude", "goals",
                         "--recipient-name", "Dr. Ana Ruiz", "-o", out_file)
    assert code == 0, err
    assert oct(out_file.stat().st_mode & 0o777) == "0o600"
    code, out, _ = cli("inspect", out_file, "--json", "--schema", SHARED / "schema")
    report = json.loads(out)
    assert report["document_type"]["code"] == "57133-1"
    assert not [f for f in report["findings"] if f["severity"] == "error"]
    code, out, _ = cli("--data-dir", data_dir, "ccda", "--patient", "1000001", "--direction", "receiving",
                       "--html", "--stylesheet", SHARED / "stylesheet" / "CDA.xsl")
    assert code == 0 and "<html" in out and "Continuity of Care" in out


def test_ccda_errors_say_what_to_do(data_dir, cli):
    code, out, err = cli("--data-dir", data_dir, "ccda", "--patient", "nope")
    assert code == 1 and "referdesk search" in err and out == ""
    code, out, err = cli("--data-dir", data_dir, "ccda", "--patient", "1000001", "--exclude", "tarot")
    assert code == 1 and "unknown section(s) tarot" in err
    code, out, err = cli("--data-dir", data_dir, "ccda", "--patient", "1000001", "--html")
    assert code == 1 and "CDA.xsl" in err


def test_inspect_refuses_documents_over_the_configured_size(cli, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[ccda]\nmax_mb = 0.01\n")
    ccd = SHARED / "examples" / "hl7-c-cda-examples" / "Documents" / "CCD" / "CCD 1" / "CCD.XML"
    code, out, err = cli("--config", config, "inspect", ccd, "--json")
    assert code == 0
    (finding,) = json.loads(out)["findings"]
    assert finding["severity"] == "error" and "the limit is 0.0 MB" in finding["message"]
