"""Two referdesk practices on one machine, each its own process, database and Direct identity, each the other's
HISP edge (`referdesk worker`: outbox + inbound SMTP listener): A refers a patient to B by Direct; B receives
it and acknowledges it (processed, dispatched); B's staff send the consult report back with *Receiving*; A's
referral becomes *report received* with no one touching A. Certificates come from the loopback DNS server of
the seeded Direct world (tests/direct_site.py); everything talks over 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from direct_pki import closed_port, make_ca, make_leaf, write_key, write_p12, write_pem
from direct_pki import Issued
from direct_site import P12_PASSWORD, PRACTICE_ADDRESS
from tests.conftest import FROZEN_NOW

ROOT = Path(__file__).resolve().parents[1]
MRN = "1000001"


def free_port() -> int:
    return closed_port()


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the worker exited early: {process.stderr.read().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {seconds} s")


class Practice:
    """One referdesk installation: a data dir, a config, and its long-running worker process."""

    def __init__(self, name: str, folder: Path, seeded: Path, *, address: str, p12: Path, anchors: Path,
                 dns: str, tls: dict, listen: int, hisp: int) -> None:
        self.name, self.address = name, address
        self.data = folder / name
        self.data.mkdir()
        shutil.copy(seeded, self.data / "referdesk.db")
        self.config = folder / f"{name}.toml"
        self.config.write_text(
            f'[direct]\naddress = "{address}"\ncertificate = "{p12}"\npassword_env = "TEST_P12"\n'
            f'trust_anchors = "{anchors}"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {hisp}\nca_file = "{tls["ca"]}"\ntimeout = 5\n'
            f'[dns]\nnameservers = ["{dns}"]\ntimeout = 0.5\nlifetime = 1.0\n'
            f'[inbound]\nsmtp_listen = "127.0.0.1:{listen}"\ntls_certificate = "{tls["cert"]}"\n'
            f'tls_key = "{tls["key"]}"\n')
        self.listen = listen
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "TEST_P12": P12_PASSWORD,
                    "REFERDESK_FROZEN_TIME": FROZEN_NOW.isoformat()}
        self.process: subprocess.Popen | None = None

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(self.config), "--data-dir",
                               str(self.data), *argv], env=self.env, capture_output=True, text=True, timeout=120,
                              cwd=ROOT)

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(self.config),
                                         "--data-dir", str(self.data), "worker", "--poll", "0.2"],
                                        env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def referral(self, referral_id: int) -> dict:
        done = self.run("referrals", "--json")
        assert done.returncode == 0, done.stderr
        return next(r for r in json.loads(done.stdout) if r["id"] == referral_id)

    def query(self, sql: str, *args):
        with sqlite3.connect(self.data / "referdesk.db") as db:
            return db.execute(sql, args).fetchall()


def wait_until(check, seconds: float = 60, what: str = ""):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def practices(direct_world, direct_dns, seeded_template, tmp_path):
    folder = tmp_path
    ca = make_ca("Loopback HISP TLS CA")
    leaf = make_leaf(ca, dns=["localhost"], ips=["127.0.0.1"], cn="hisp", usage=None)
    tls = {"ca": write_pem(folder / "tls-ca.pem", ca.cert), "cert": write_pem(folder / "tls.pem", leaf.cert),
           "key": write_key(folder / "tls.key", leaf.key)}
    with sqlite3.connect(seeded_template) as db:
        partner = db.execute("SELECT direct_address FROM contact WHERE verification = 'verified' AND "
                             "direct_address != '' ORDER BY id").fetchone()[0]
    partner_p12 = write_p12(folder / "partner.p12", Issued(direct_world.certificates[partner],
                                                           direct_world.partner_key), P12_PASSWORD.encode())
    port_a, port_b = free_port(), free_port()
    a = Practice("a", folder, seeded_template, address=PRACTICE_ADDRESS, p12=direct_world.practice_p12,
                 anchors=direct_world.anchors, dns=direct_dns.nameserver, tls=tls, listen=port_a, hisp=port_b)
    b = Practice("b", folder, seeded_template, address=partner, p12=partner_p12, anchors=direct_world.anchors,
                 dns=direct_dns.nameserver, tls=tls, listen=port_b, hisp=port_a)
    try:
        for practice in (a, b):
            practice.start()
        for practice in (a, b):
            wait_for_port(practice.listen, practice.process)
        yield a, b
    finally:
        for practice in (a, b):
            practice.stop()


def test_a_refers_b_reports_back_and_as_referral_closes_by_itself(practices):
    a, b = practices
    sent = a.run("send", "--patient", MRN, "--via", "direct", "--to", b.address, "--reason", "Consult please")
    assert sent.returncode == 0, sent.stderr
    referral_id = int(sent.stdout.strip())

    # B's listener takes it in, files it to the same patient, and acknowledges it; A sees delivered.
    row = wait_until(lambda: (r := a.referral(referral_id))["status"] == "delivered" and r, what="delivered at A")
    assert [e["kind"] for e in row["events"]][-3:] == ["mdn-processed", "mdn-dispatched", "delivered"]
    [(state, patient_mrn)] = b.query("SELECT m.state, p.mrn FROM inbound_message m JOIN patient p "
                                     "ON p.id = m.patient_id WHERE m.from_address = ?", a.address)
    assert (state, patient_mrn) == ("filed", MRN)
    assert b.query("SELECT COUNT(*) FROM document WHERE inbound_id IS NOT NULL AND owner = 'patient' "
                   "AND kind IN ('ccda', 'report')")[0][0] >= 1

    # B's staff answer with the consult report (Receiving); A's referral closes with no one at A.
    report = b.run("send", "--patient", MRN, "--via", "direct", "--to", a.address, "--direction", "receiving",
                   "--reason", "Consultation report")
    assert report.returncode == 0, report.stderr
    row = wait_until(lambda: (r := a.referral(referral_id))["status"] == "report-received" and r,
                     what="report received at A")
    assert row["report_received_on"] == FROZEN_NOW.date().isoformat()
    back_id = int(report.stdout.strip())
    wait_until(lambda: b.referral(back_id)["status"] == "delivered", what="B's report delivered (A's MDNs)")
