"""The sandbox's email-to-fax gateway: it takes mail for `<number>@<domain>`, "dials" by writing the attached PDF
to a folder (the far end's fax machine), and mails back a delivery report through the sandbox HISP, in the
format transports.efax.gateway_report reads:

    From: reports@<domain>              To: <the fax email's From>
    In-Reply-To / References: <the fax email's Message-ID>
    Subject: Fax delivery report: Success | Failed

    Status: Success | Failed
    Number: 15551230001
    Pages: 2
    Reason: Busy                        (only when failed)
    Message-ID: <the fax email's Message-ID>

The report comes `report_delay` seconds later, as a real gateway's does after dialling, so the demo shows the
fax "in progress" first. `script(number, outcomes)` makes the next dials of a number fail (busy, bad number...)
to show referdesk's retries. A PDF is written only for a fax that "went through" (files 0600, folder 0700):
the folder is what the recipient would hold. Nothing about a fax is logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import email.utils
import os
import re
import secrets
import ssl
import zlib
from collections import deque
from email.message import EmailMessage, Message
from pathlib import Path
from typing import NamedTuple

from models import clock
from transports.direct.smtp_check import client_context
from transports.sandbox.hisp import DEFAULT_MAX_BYTES, SmtpHandler, SmtpService, relay, reply_code

# outcome -> (Status line, Reason line); "" reason for success.
OUTCOMES = {
    "success": ("Success", ""),
    "busy": ("Failed", "Busy"),
    "no-answer": ("Failed", "No answer"),
    "line-error": ("Failed", "Line error"),
    "bad-number": ("Failed", "Invalid number"),
    "conversion": ("Failed", "Document conversion failed"),
    "no-attachment": ("Failed", "No attachment to fax"),
}
RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds before the 2nd, 3rd and 4th try at relaying a report
_NUMBER = re.compile(r"[0-9]{7,15}")
_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_STREAM = re.compile(rb"stream\r?\n(.*?)endstream", re.S)


class Fax(NamedTuple):
    digits: str
    path: Path | None  # the PDF as "received" at the far end; None when the fax did not go through
    message_id: str  # the fax email's Message-ID, which the report refers to
    outcome: str  # a key of OUTCOMES


def count_pages(pdf: bytes) -> int:
    """Page objects (`/Type /Page`, not `/Pages`); a PDF that keeps them in compressed object streams is
    searched inside its Flate streams too. Enough for the sandbox; no PDF library needed."""
    pages = len(_PAGE.findall(pdf))
    if pages:
        return pages
    for stream in _STREAM.findall(pdf):
        try:
            pages += len(_PAGE.findall(zlib.decompressobj().decompress(stream.strip(b"\r\n"), 10 * 1024 * 1024)))
        except zlib.error:
            continue
    return pages


def _pdf_of(message: Message) -> bytes | None:
    """The first PDF in the message: by type, or an octet-stream whose file name ends in .pdf."""
    for part in message.walk():
        if part.is_multipart():
            continue
        kind, name = part.get_content_type(), (part.get_filename() or "").lower()
        if kind == "application/pdf" or (kind == "application/octet-stream" and name.endswith(".pdf")):
            data = part.get_payload(decode=True)
            return bytes(data) if data else None
    return None


class _GatewayHandler(SmtpHandler):
    service: "DemoFaxGateway"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local, _, domain = address.rpartition("@")
        if domain.strip().lower().rstrip(".") != self.service.domain:
            return f"550 5.7.1 relaying denied: this gateway only faxes to <number>@{self.service.domain}"
        if not _NUMBER.fullmatch(local):
            return "550 5.1.1 not a fax number: give 7 to 15 digits, e.g. 15551230001@" + self.service.domain
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = bytes(envelope.original_content or b"")
        numbers = [address.rpartition("@")[0] for address in envelope.rcpt_tos]
        try:
            await self.service.take(raw, envelope.mail_from or "", numbers)
        except OSError as exc:  # the out folder cannot be written: the sender keeps the fax and retries
            self.service.last_error = f"a fax could not be written to {self.service.out_folder} ({exc.strerror})"
            return "451 4.3.0 the fax could not be queued; try again later"
        return "250 2.0.0 queued for faxing"


class DemoFaxGateway(SmtpService):
    """`relay` is the (host, port) of the HISP the reports go out through; `ca_file` the trust anchor its
    certificate chains to. `faxes` lists every fax taken; `last_error` says why the latest report (or fax)
    could not be handled; `await settled()` waits until every report so far is sent or given up."""

    def __init__(self, domain: str, tls: ssl.SSLContext, out_folder: Path, *, relay: tuple[str, int],
                 ca_file: str, report_delay: float = 1.0, host: str = "127.0.0.1", port: int = 0,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.domain = domain.strip().lower().rstrip(".")
        super().__init__(tls, host=host, port=port, max_bytes=max_bytes, hostname=self.domain)
        self.out_folder = Path(out_folder)
        self.relay, self.ca_file, self.report_delay = relay, ca_file, report_delay
        self.client_tls = client_context(ca_file)
        self.retry_delays: tuple[float, ...] = RETRY_DELAYS
        self.faxes: list[Fax] = []
        self.reports_sent = 0
        self._scripts: dict[str, deque[str]] = {}
        self._pending: set[asyncio.Task] = set()
        self._count = 0

    def handler(self) -> SmtpHandler:
        return _GatewayHandler(self)

    def script(self, digits: str, outcomes: list[str]) -> None:
        """The next dials of `digits` go as `outcomes` say, in order ("busy", "success"...); then success."""
        unknown = [o for o in outcomes if o not in OUTCOMES]
        if unknown:
            raise ValueError(f"unknown fax outcomes {unknown}; known: {sorted(OUTCOMES)}")
        self._scripts.setdefault(digits, deque()).extend(outcomes)

    async def take(self, raw: bytes, mail_from: str, numbers: list[str]) -> None:
        """Dial each number (write the PDF when it goes through) and schedule its report."""
        message = await asyncio.to_thread(email.message_from_bytes, raw, policy=email.policy.default)
        pdf = await asyncio.to_thread(_pdf_of, message)
        pages = await asyncio.to_thread(count_pages, pdf) if pdf else 0
        message_id = str(message.get("Message-ID", "") or "").strip()
        reply_to = "" if mail_from in ("", "<>") else mail_from
        to_header = str(message.get("From", "") or "").strip() or reply_to
        for digits in numbers:
            queue = self._scripts.get(digits)
            outcome = queue.popleft() if queue else "success"
            if pdf is None:
                outcome = "no-attachment"
            path = await asyncio.to_thread(self._write, digits, pdf) if outcome == "success" else None
            self.faxes.append(Fax(digits, path, message_id, outcome))
            report = self._report(digits, message_id, to_header, outcome, pages if outcome == "success" else 0)
            task = asyncio.get_running_loop().create_task(self._send_report(report, reply_to, digits))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _write(self, digits: str, pdf: bytes) -> Path:
        """`fax-<digits>-<YYYYmmdd-HHMMSS>-<n>.pdf`, created 0600 and never over an existing file."""
        self.out_folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.out_folder, 0o700)
        stamp = clock.now().strftime("%Y%m%d-%H%M%S")
        while True:
            self._count += 1
            path = self.out_folder / f"fax-{digits}-{stamp}-{self._count}.pdf"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as file:
                file.write(pdf)
            os.chmod(path, 0o600)  # whatever the umask
            return path

    def _report(self, digits: str, fax_id: str, to: str, outcome: str, pages: int) -> bytes:
        status, reason = OUTCOMES[outcome]
        report = EmailMessage()
        report["From"] = f"reports@{self.domain}"
        if to:
            report["To"] = to
        report["Subject"] = f"Fax delivery report: {status}"
        report["Date"] = email.utils.format_datetime(clock.now().replace(tzinfo=dt.timezone.utc))
        report["Message-ID"] = f"<report-{secrets.token_hex(8)}@{self.domain}>"
        if fax_id:
            report["In-Reply-To"] = fax_id
            report["References"] = fax_id
        lines = [f"Status: {status}", f"Number: {digits}", f"Pages: {pages}"]
        lines += [f"Reason: {reason}"] if reason else []
        lines += [f"Message-ID: {fax_id}"] if fax_id else []
        report.set_content("\n".join(lines) + "\n")
        return report.as_bytes(policy=email.policy.SMTP)

    async def _send_report(self, report: bytes, rcpt: str, digits: str) -> None:
        """After the "dialling", through the HISP; a 4xx or an unreachable HISP is retried a few times, a 5xx is
        final. Either way the gateway gives up quietly: the sender's fax just stays in progress."""
        await asyncio.sleep(self.report_delay)
        if not rcpt:  # the fax came with a null sender: nobody to report to (and never reply to <>)
            self.last_error = f"the report for fax {digits} has no one to go to (empty MAIL FROM)"
            return
        reply = ""
        for delay in (*self.retry_delays, None):
            reply = await relay(report, f"reports@{self.domain}", [rcpt], self.relay, self.client_tls,
                                label="the sandbox HISP", timeout=10)
            code = reply_code(reply)
            if code == 250:
                self.reports_sent += 1
                return
            if code >= 500 or delay is None:
                break
            await asyncio.sleep(delay)
        self.last_error = f"the report for fax {digits} could not be relayed: {reply}"

    async def settled(self) -> None:
        """Wait until every report scheduled so far has been sent or given up."""
        while self._pending:
            await asyncio.wait(list(self._pending))

    async def stop(self) -> None:
        """Close the port and sessions; reports not yet sent are dropped (as a gateway switched off would)."""
        await super().stop()
        tasks = list(self._pending)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
