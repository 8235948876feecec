"""`referdesk verify` against the seeded address book's Direct world (tests/direct_site.py): each verdict, with
what a receptionist needs to read, on a real DNS server and CRL server on loopback."""

from __future__ import annotations

import json
import sqlite3

import pytest

CASES = {  # state -> the address book's note on the seeded contact whose certificate is published that way
    "verified": "", "expired": "expired", "untrusted": "not trusted", "revoked": "revoked",
    "no-certificate": "no certificate",
}


def seeded_address(data_dir, reason: str) -> str:
    with sqlite3.connect(data_dir / "referdesk.db") as db:
        return db.execute("SELECT direct_address FROM contact WHERE direct_address != '' AND verification = ? "
                          "AND verification_reason LIKE ? ORDER BY id",
                          ("invalid" if reason else "verified", f"%{reason}%")).fetchone()[0]


@pytest.mark.parametrize("state", list(CASES))
def test_each_verdict(cli, data_dir, direct_ready_config, state):
    address = seeded_address(data_dir, CASES[state])
    code, out, err = cli("--config", direct_ready_config.path, "--data-dir", data_dir, "verify", address, "--json")
    verdict = json.loads(out)
    assert (code, verdict["state"], verdict["address"]) == (0 if state == "verified" else 1, state, address)
    assert verdict["reason"].endswith(".") and len(verdict["reason"]) > 30
    if state in ("verified", "expired", "revoked", "untrusted"):
        assert verdict["fingerprint"] and verdict["subject"] and verdict["issuer"]
    if state == "verified":
        assert verdict["binding"] == "address" and verdict["not_after"].startswith("2028-01-01")


def test_the_address_book_remembers_the_verdict_and_certificate(cli, data_dir, direct_ready_config):
    address = seeded_address(data_dir, "")
    cli("--config", direct_ready_config.path, "--data-dir", data_dir, "verify", address)
    with sqlite3.connect(data_dir / "referdesk.db") as db:
        state, fingerprint, when = db.execute("SELECT verification, cert_fingerprint, verified_at FROM contact "
                                              "WHERE direct_address = ?", (address,)).fetchone()
    assert state == "verified" and len(fingerprint) == 64 and when.startswith("2026-11-02")


def test_dns_down_is_its_own_verdict_and_changes_nothing_in_the_address_book(cli, data_dir, direct_ready_config,
                                                                             direct_dns):
    address = seeded_address(data_dir, "")
    direct_dns.stop()
    code, out, err = cli("--config", direct_ready_config.path, "--data-dir", data_dir, "verify", address)
    assert code == 1
    assert out.splitlines()[0] == f"{address}: dns-error"
    assert "try again later" in out
    with sqlite3.connect(data_dir / "referdesk.db") as db:
        assert db.execute("SELECT verification FROM contact WHERE direct_address = ?",
                          (address,)).fetchone() == ("verified",)  # as seeded: an outage proves nothing


def test_a_verified_address_in_words(cli, data_dir, direct_ready_config):
    address = seeded_address(data_dir, "")
    code, out, err = cli("--config", direct_ready_config.path, "--data-dir", data_dir, "verify", address)
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"{address}: verified"
    assert [line.split(":")[0].strip() for line in lines[2:]] == ["certificate", "issuer", "binding", "expires",
                                                                  "sha-256"]
