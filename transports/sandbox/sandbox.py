"""Everything the demo needs, started together on 127.0.0.1: the demo PKI (transports/sandbox/pki.py), a DNS
server publishing its CERT records, the CRL server, an SMTP HISP routing by domain, the eFax gateway, the
partner practice (its own process and database) and this practice's own receiving listener (and outbox, unless
the app runs it). The practice's configuration is written into the data folder, so `referdesk --data-dir DIR
<verb>` works against the sandbox from another shell.

Layout of the data folder: referdesk.db and config.toml (the practice), sandbox/pki (keys kept, certificates
re-issued each start because the CRL's port is chosen then), sandbox/partner (its database and configuration),
sandbox/faxes (what the fax gateway "delivered"), downloads (Download/Print), sandbox.json (the last start).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import tomli_w

from models.config import CONFIG_FILENAME, DB_FILENAME, Config, load_config
from transports.sandbox.partner import Consultant

PASSWORD_ENV = "REFERDESK_SANDBOX_P12_PASSWORD"
PASSPHRASE = "referdesk sandbox"  # throw-away demo keys; still read from the environment like any other
PRACTICE_ADDRESS = "referrals@direct.riverbend-family.example"
FAX_DOMAIN = "fax.sandbox.example"
INVALID = {
    "expired": "records@direct.old-clinic.example",
    "revoked": "intake@direct.closed-clinic.example",
    "untrusted": "someone@direct.untrusted-hisp.example",
    "not-direct": "frontdesk@not-direct.example",
}
INVALID_NAMES = {
    "expired": ("Old Town Clinic", "its certificate expired last month"),
    "revoked": ("Closed Street Clinic", "its certificate was revoked"),
    "untrusted": ("Untrusted HISP Clinic", "its certificate comes from an anchor you do not trust"),
    "not-direct": ("Not-Direct Front Desk", "an ordinary e-mail address, no Direct certificate"),
}
ROOT = Path(__file__).resolve().parents[2]


class SandboxError(Exception):
    """The sandbox could not start; the message says which part and why."""


@dataclass
class SandboxInfo:
    data_dir: Path
    practice: str
    partners: list[str]
    invalid: dict[str, str]
    smtp: int
    dns: int
    crl: int
    fax: dict = field(default_factory=dict)
    listeners: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"direct": {"practice": self.practice, "partners": self.partners, "invalid": self.invalid},
                "smtp": self.smtp, "dns": self.dns, "crl": self.crl, "fax": self.fax,
                "listeners": self.listeners, "data_dir": str(self.data_dir),
                "config": str(self.data_dir / CONFIG_FILENAME)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_tls(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (WAL included), owner-only."""
    from models.db import private_folder

    private_folder(target.parent)
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))  # 0600 before the first byte of it is written
    os.chmod(target, 0o600)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    os.chmod(target, 0o600)


def write_private(path: Path, text: str) -> None:
    """`text` into `path`, replaced whole, readable by its owner only from the moment it exists."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
    os.replace(temporary, path)


class Sandbox:
    """`await start()` brings every part up (returns SandboxInfo once all listen); `await stop()` takes them
    all down, the partner process included. `practice_outbox`: also send this practice's outbox here (the
    `referdesk sandbox` command); the app runs its own while it is open."""

    def __init__(self, data_dir: Path, *, practice_outbox: bool, report: Callable[[str], None] | None = None,
                 consult_delay: float = 3.0, poll: float = 0.5) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.practice_outbox = practice_outbox
        self.report = report or (lambda line: None)
        self.consult_delay, self.poll = consult_delay, poll
        self.folder = self.data_dir / "sandbox"
        self.partner = Consultant()
        self._servers: list = []
        self._process: subprocess.Popen | None = None
        self._stop = asyncio.Event()
        self._service_task: asyncio.Task | None = None
        self.service = None
        self.config: Config | None = None

    # --- start ------------------------------------------------------------------------------------------

    async def start(self) -> SandboxInfo:
        from transports.sandbox.crl_server import DemoCrlServer
        from transports.sandbox.dns_server import DemoDns
        from transports.sandbox.fax_gateway import DemoFaxGateway
        from transports.sandbox.hisp import DemoHisp
        from transports.sandbox.pki import DemoPki, Party

        from models.db import private_folder

        os.environ.setdefault(PASSWORD_ENV, PASSPHRASE)
        private_folder(self.data_dir)
        private_folder(self.folder)
        pki_box: dict = {}
        crl = DemoCrlServer(lambda: pki_box["pki"].crl_der())
        await self._up(crl)
        pki = await asyncio.to_thread(
            DemoPki.load_or_create, self.folder / "pki", crl_url=crl.url_for("/anchor.crl"),
            practice=Party(PRACTICE_ADDRESS, "Riverbend Family Medicine", "Riverbend Family Medicine"),
            partners=[Party(self.partner.address, f"{self.partner.first_name} {self.partner.last_name}, "
                                                  f"{self.partner.credentials}", self.partner.practice)],
            invalid=INVALID, passphrase=os.environ[PASSWORD_ENV].encode())
        pki_box["pki"] = pki
        dns = DemoDns(pki.records, pki.zones)
        await self._up(dns)
        tls = server_tls(pki.tls_cert, pki.tls_key)
        practice_port, partner_port = free_port(), free_port()
        domain = lambda address: address.split("@", 1)[1]  # noqa: E731
        hisp = DemoHisp(tls, str(pki.tls_ca), {domain(PRACTICE_ADDRESS): ("127.0.0.1", practice_port),
                                               domain(self.partner.address): ("127.0.0.1", partner_port)})
        await self._up(hisp)
        faxes = self.folder / "faxes"
        gateway = DemoFaxGateway(FAX_DOMAIN, tls, faxes, relay=("127.0.0.1", hisp.port), ca_file=str(pki.tls_ca))
        await self._up(gateway)
        hisp.set_route(FAX_DOMAIN, "127.0.0.1", gateway.port)
        self.config = self._write_practice_config(pki, dns.port, hisp.port, practice_port)
        await asyncio.to_thread(self._prepare_practice)
        partner_dir = await asyncio.to_thread(self._write_partner, pki, dns.port, hisp.port, partner_port)
        await self._start_practice_service()
        self._start_partner(partner_dir)
        await self._wait_listening(practice_port, "this practice's inbound listener")
        await self._wait_listening(partner_port, "the partner practice", process=self._process)
        info = SandboxInfo(
            data_dir=self.data_dir, practice=PRACTICE_ADDRESS, partners=[self.partner.address],
            invalid=dict(INVALID), smtp=hisp.port, dns=dns.port, crl=crl.port,
            fax={"gateway_domain": FAX_DOMAIN, "port": gateway.port, "folder": str(faxes),
                 "number": self.partner.fax},
            listeners={"practice": practice_port, "partner": partner_port})
        write_private(self.data_dir / "sandbox.json", json.dumps(info.as_json(), indent=2))
        return info

    async def _up(self, server) -> None:
        try:
            await server.start()
        except OSError as exc:
            await self.stop()
            raise SandboxError(f"{type(server).__name__}: cannot listen on 127.0.0.1 ({exc})") from exc
        self._servers.append(server)

    def _write_practice_config(self, pki, dns_port: int, hisp_port: int, listen_port: int) -> Config:
        values = {
            "direct": {"address": PRACTICE_ADDRESS, "certificate": str(pki.practice_p12),
                       "password_env": PASSWORD_ENV, "trust_anchors": str(pki.anchors_dir),
                       "mdn_timeout_minutes": 10},
            "smtp": {"host": "127.0.0.1", "port": hisp_port, "ca_file": str(pki.tls_ca), "timeout": 10},
            "dns": {"nameservers": [f"127.0.0.1:{dns_port}"], "timeout": 1.0, "lifetime": 2.0},
            "inbound": {"smtp_listen": f"127.0.0.1:{listen_port}", "tls_certificate": str(pki.tls_cert),
                        "tls_key": str(pki.tls_key)},
            "efax": {"provider": "smtp-gateway", "gateway_domain": FAX_DOMAIN, "retry_delays": [5, 15],
                     "poll_seconds": 2, "report_timeout_minutes": 5},
            "print": {"folder": str(self.data_dir / "downloads")},
            "worker": {"in_app": not self.practice_outbox, "poll_seconds": 1},
        }
        path = self.data_dir / CONFIG_FILENAME
        write_private(path, "# Written by the referdesk sandbox at each start (ports change): edits are lost.\n"
                      + tomli_w.dumps(values))
        return load_config(path, data_dir=self.data_dir)

    def _prepare_practice(self) -> None:
        """The address book entries the demo walks through: the partner, its fax, and one of each bad case."""
        from models.address_book import ensure_contact
        from models.db import database

        with database.connection_context():
            name = f"{self.partner.first_name} {self.partner.last_name}, {self.partner.credentials}"
            ensure_contact(name, organization=self.partner.practice, specialty="Cardiology",
                           direct_address=self.partner.address, fax=self.partner.fax, phone=self.partner.phone)
            for kind, address in INVALID.items():
                who, why = INVALID_NAMES[kind]
                ensure_contact(who, organization=f"sandbox example: {why}", direct_address=address)

    def _write_partner(self, pki, dns_port: int, hisp_port: int, listen_port: int) -> Path:
        folder = self.folder / "partner"
        database = folder / DB_FILENAME
        if not database.exists():  # the same synthetic patients, as if both practices saw them
            copy_database(self.data_dir / DB_FILENAME, database)
        values = {
            "direct": {"address": self.partner.address, "certificate": str(pki.partner_p12(self.partner.address)),
                       "password_env": PASSWORD_ENV, "trust_anchors": str(pki.anchors_dir)},
            "smtp": {"host": "127.0.0.1", "port": hisp_port, "ca_file": str(pki.tls_ca), "timeout": 10},
            "dns": {"nameservers": [f"127.0.0.1:{dns_port}"], "timeout": 1.0, "lifetime": 2.0},
            "inbound": {"smtp_listen": f"127.0.0.1:{listen_port}", "tls_certificate": str(pki.tls_cert),
                        "tls_key": str(pki.tls_key)},
            "worker": {"in_app": False, "poll_seconds": self.poll},
        }
        write_private(folder / CONFIG_FILENAME, tomli_w.dumps(values))
        return folder

    async def _start_practice_service(self) -> None:
        from transports.service import Service

        self.service = Service(self.config, poll=self.poll, outbox=self.practice_outbox, report=self.report)
        self._service_task = asyncio.ensure_future(self.service.run(self._stop))

    def _start_partner(self, folder: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        log = os.fdopen(os.open(self.folder / "partner.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        os.fchmod(log.fileno(), 0o600)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "transports.sandbox.partner", "--data-dir", str(folder),
                 "--delay", str(self.consult_delay), "--poll", str(self.poll)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(ROOT),
                preexec_fn=_die_with_parent)
        finally:
            log.close()

    async def _wait_listening(self, port: int, what: str, *, process: subprocess.Popen | None = None,
                              seconds: float = 15) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise SandboxError(f"{what} stopped at start (exit {process.returncode}); see "
                                   f"{self.folder / 'partner.log'}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise SandboxError(f"{what} is not listening on 127.0.0.1:{port} after {seconds:g} s")

    # --- stop -------------------------------------------------------------------------------------------

    async def stop(self) -> None:
        self._stop.set()
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self._process.wait, 10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                await asyncio.to_thread(self._process.wait)
        if self._service_task is not None:
            try:
                await asyncio.wait_for(self._service_task, 10)
            except Exception:  # noqa: BLE001 - stopping: whatever it raised, it is over
                pass
        for server in reversed(self._servers):
            try:
                await server.stop()
            except Exception:  # noqa: BLE001 - stop every part even if one fails to
                pass
        self._servers.clear()


def _die_with_parent() -> None:
    """The partner process gets SIGTERM if this one dies, even by SIGKILL: no process is left behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def reset(data_dir: Path) -> None:
    """Start over: the demo database, keys, partner and faxes all go."""
    if data_dir.exists():
        shutil.rmtree(data_dir)


class BackgroundSandbox:
    """The sandbox on its own thread and event loop, for the app (whose main loop is Textual's)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.info: SandboxInfo | None = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._done: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="referdesk-sandbox", daemon=True)

    def start(self, timeout: float = 30) -> SandboxInfo:
        self._thread.start()
        self._ready.wait(timeout)
        if self.error is not None:
            raise self.error
        if self.info is None:
            raise SandboxError(f"the sandbox did not start within {timeout:g} s")
        return self.info

    def _main(self) -> None:
        from models.db import database

        async def body() -> None:
            self._loop = asyncio.get_running_loop()
            self._done = asyncio.Event()
            try:
                self.info = await self.sandbox.start()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller of start()
                self.error = exc
                self._ready.set()
                return
            self._ready.set()
            await self._done.wait()
            await self.sandbox.stop()

        try:
            asyncio.run(body())
        finally:
            if not database.is_closed():
                database.close()

    def stop(self, timeout: float = 20) -> None:
        if self._loop is not None and self._done is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._done.set)
            self._thread.join(timeout)
