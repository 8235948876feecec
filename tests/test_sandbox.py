"""The demo sandbox end to end: `referdesk sandbox --json` in its own process (DNS, CRL, HISP, fax gateway, the
partner practice as a third process, this practice's workers), driven from the command line like a second
shell would; and the same loop through the app, by keys, with the sandbox behind it. Real time: the sandbox's
certificates are issued for today, so these tests unfreeze the clock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models import clock
from sandbox_processes import partner_processes

ROOT = Path(__file__).resolve().parents[1]
PARTNER = "ruiz@direct.valley-cardio.example"
MRN = "1000001"


def wait_until(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@pytest.fixture
def sandbox_dir(seeded_template, tmp_path):
    """A data folder holding a copy of the seeded database (the sandbox seeds only an empty one)."""
    folder = tmp_path / "sandbox-data"
    folder.mkdir()
    shutil.copy(seeded_template, folder / "referdesk.db")
    return folder


@pytest.fixture
def sandbox(sandbox_dir):
    """`referdesk sandbox --json` running; yields (its first stdout line as JSON, the process)."""
    env = {k: v for k, v in os.environ.items() if k != "REFERDESK_FROZEN_TIME"}
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen([sys.executable, "-m", "tui.cli", "--data-dir", str(sandbox_dir), "sandbox",
                                "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        yield json.loads(line), process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def real_time():
    clock.freeze(None)
    yield


def referral(cli, folder: Path, referral_id: int) -> dict:
    code, out, err = cli("--data-dir", folder, "referrals", "--json")
    assert code == 0, err
    return next(r for r in json.loads(out) if r["id"] == referral_id)


def test_a_referral_sent_from_another_shell_comes_back_as_report_received(sandbox, sandbox_dir, cli, real_time):
    info, process = sandbox
    assert info["direct"]["partners"] == [PARTNER] and set(info["direct"]["invalid"]) == {
        "expired", "revoked", "untrusted", "not-direct"}
    assert {"smtp", "dns", "fax"} <= set(info) and (sandbox_dir / "config.toml").exists()
    started = time.monotonic()
    code, out, err = cli("--data-dir", sandbox_dir, "send", "--patient", MRN, "--via", "direct", "--to", PARTNER,
                         "--reason", "Palpitations")
    assert code == 0, err
    referral_id = int(out)

    def settled():
        row = referral(cli, sandbox_dir, referral_id)
        return row if row["status"] == "report-received" else None

    row = wait_until(settled, 30, "the partner's report")
    kinds = [event["kind"] for event in row["events"]]
    assert {"sent", "mdn-processed", "mdn-dispatched"} <= set(kinds), kinds
    assert kinds.index("mdn-processed") < kinds.index("mdn-dispatched")
    assert time.monotonic() - started < 30
    process.send_signal(signal.SIGINT)
    assert process.wait(20) == 0
    assert partner_processes(sandbox_dir / "sandbox" / "partner") == []


@pytest.mark.parametrize("kind, state", [("expired", "expired"), ("revoked", "revoked"),
                                         ("untrusted", "untrusted"), ("not-direct", "no-certificate")])
def test_each_invalid_example_gives_its_reason(sandbox, sandbox_dir, cli, real_time, kind, state):
    info, _ = sandbox
    code, out, err = cli("--data-dir", sandbox_dir, "verify", info["direct"]["invalid"][kind], "--json")
    assert code == 1 and json.loads(out)["state"] == state
    code, out, err = cli("--data-dir", sandbox_dir, "verify", PARTNER, "--json")
    assert code == 0 and json.loads(out)["state"] == "verified"


def test_a_fax_is_delivered_by_the_sandbox_gateway_and_written_to_the_demo_folder(sandbox, sandbox_dir, cli,
                                                                                  real_time):
    info, _ = sandbox
    number = info["fax"]["number"]
    code, out, err = cli("--data-dir", sandbox_dir, "send", "--patient", MRN, "--via", "efax", "--to", number,
                         "--recipient-name", "Dr. Ana Ruiz", "--confirm-number", number)
    assert code == 0, err
    referral_id = int(out)
    row = wait_until(lambda: (r := referral(cli, sandbox_dir, referral_id))["status"] == "delivered" and r,
                     30, "the fax gateway's report")
    assert any(e["kind"] == "delivered" and "fax delivered" in e["detail"] for e in row["events"])
    faxes = list(Path(info["fax"]["folder"]).glob("*.pdf"))
    assert len(faxes) == 1 and faxes[0].read_bytes().startswith(b"%PDF-")
    assert oct(faxes[0].stat().st_mode & 0o777) == "0o600"


async def test_the_whole_loop_through_the_app_by_keys(sandbox_dir, real_time):
    """The sandbox in this process (as `referdesk demo` runs it), the app on its configuration: send by Direct
    to the partner, watch the banner turn Successfully Sent, and the referral become report received."""
    from models.config import load_config
    from models.db import close_database, open_database, sqlite_url
    from models.patients import Note
    from models.referrals import Referral, ReferralEvent
    from referral_nav import settle, to_compose, type_text
    from transports.sandbox.sandbox import BackgroundSandbox, Sandbox
    from tui.app import ReferdeskApp

    open_database(sqlite_url(sandbox_dir / "referdesk.db"))
    sandbox = BackgroundSandbox(Sandbox(sandbox_dir, practice_outbox=False, consult_delay=1.0))
    try:
        sandbox.start()
        note = (Note.select().where(Note.signed_at.is_null(False)).order_by(Note.patient, Note.written_at.desc())
                .first())
        app = ReferdeskApp(config=load_config(data_dir=sandbox_dir))
        async with app.run_test(size=(80, 24)) as pilot:
            await to_compose(pilot, note, "d")
            await type_text(pilot, PARTNER, by_keys=True)
            await pilot.press("enter")
            await settle(pilot)
            assert "verified" in str(app.screen.query_one("#verdict").content)
            await pilot.press("ctrl+s")
            await settle(pilot)
            for _ in range(150):
                if str(app.screen.query_one("#outcome").content).startswith("Successfully Sent"):
                    break
                await pilot.pause(0.1)
            assert str(app.screen.query_one("#outcome").content).startswith("Successfully Sent")
            made = Referral.select().where(Referral.note == note.id).order_by(Referral.id.desc()).first()
            for _ in range(300):
                if Referral.get_by_id(made.id).status == "report-received":
                    break
                await pilot.pause(0.1)
        assert Referral.get_by_id(made.id).status == "report-received"
        kinds = [e.kind for e in ReferralEvent.select().where(ReferralEvent.referral == made.id)]
        assert "mdn-processed" in kinds and "mdn-dispatched" in kinds
    finally:
        sandbox.stop()
        close_database()
    assert partner_processes(sandbox_dir / "sandbox" / "partner") == []
