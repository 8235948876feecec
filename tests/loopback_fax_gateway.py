"""An email-to-fax gateway on 127.0.0.1 for the eFax tests: aiosmtpd with STARTTLS (direct_pki.LoopbackSmtp's
thread and loop) that takes mail for `<digits>@<domain>`, "dials" by a script per number, and mails back a
delivery report in the format transports.efax.gateway_report reads:

    From: reports@<domain>            To: <the fax's From>
    In-Reply-To / References: <the fax's Message-ID>
    Subject: Fax delivery report: Success | Failed

    Status: Success | Failed
    Number: 15551230001
    Pages: 2
    Reason: Busy                      (only when failed)
    Message-ID: <the fax's Message-ID>

Reports go to `report_to` (an async callable taking the report bytes, run on the gateway's loop), by default
collected in `reports`; `await gateway.settled()` waits until every report so far has been handed over.

Not a test module: imported by test_efax_gateway.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import re
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage

from direct_pki import LoopbackSmtp

# outcome -> (Status line, Reason line); "" reason for success.
OUTCOMES = {
    "success": ("Success", ""),
    "busy": ("Failed", "Busy"),
    "no-answer": ("Failed", "No answer"),
    "line-error": ("Failed", "Line error"),
    "bad-number": ("Failed", "Invalid number"),
    "conversion": ("Failed", "Document conversion failed"),
}
_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")


@dataclass(frozen=True)
class Fax:
    number: str
    pdf: bytes | None  # the attachment's decoded bytes; None when the email carried no PDF
    message_id: str
    mail_from: str
    header_from: str
    raw: bytes  # the email as it arrived
    tls_version: str | None  # e.g. "TLSv1.3"; None in the clear


class FaxGateway(LoopbackSmtp):
    """`script(number, outcomes)` sets what the next dials of a number do; `refuse(number, reply)` makes its RCPT
    fail with `reply`. Mail for any other domain gets "550 5.7.1 relaying denied"."""

    def __init__(self, domain: str, *, tls_context: ssl.SSLContext | None = None,
                 report_to: Callable[[bytes], Awaitable[None]] | None = None) -> None:
        super().__init__(tls_context=tls_context)
        self.domain = domain.lower()
        self.report_to = report_to or self._collect
        self.faxes: list[Fax] = []
        self.reports: list[bytes] = []
        self.refusals: dict[str, str] = {}
        self._scripts: dict[str, deque[str]] = {}
        self._pending: set[asyncio.Task] = set()
        self._count = 0

    def script(self, number: str, outcomes: list[str]) -> None:
        unknown = [o for o in outcomes if o not in OUTCOMES]
        if unknown:
            raise ValueError(f"unknown outcomes {unknown}; known: {sorted(OUTCOMES)}")
        self._scripts.setdefault(number, deque()).extend(outcomes)

    def refuse(self, number: str, reply: str = "550 5.1.1 not a fax number") -> None:
        self.refusals[number] = reply

    async def _collect(self, report: bytes) -> None:
        self.reports.append(report)

    async def settled(self) -> None:
        """Wait (from any loop) until the reports of every fax taken so far have been handed to report_to."""
        async def drain() -> None:
            while self._pending:
                await asyncio.gather(*list(self._pending))

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(drain(), self.loop))

    def _rcpt_reply(self, address: str) -> str | None:
        local, _, domain = address.rpartition("@")
        if domain.lower() != self.domain:
            return "550 5.7.1 relaying denied: this gateway only faxes to <number>@" + self.domain
        if not re.fullmatch(r"\d{7,15}", local):
            return "550 5.1.1 not a fax number"
        return self.refusals.get(local)

    def _take(self, envelope, tls_version: str | None) -> None:
        raw = bytes(envelope.original_content)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        pdf = next((part.get_content() for part in message.iter_attachments()
                    if part.get_content_type() == "application/pdf"), None)
        for address in envelope.rcpt_tos:
            number = address.rpartition("@")[0]
            fax = Fax(number, pdf, str(message.get("Message-ID", "")), envelope.mail_from,
                      str(message.get("From", "")), raw, tls_version)
            self.faxes.append(fax)
            queue = self._scripts.get(number)
            outcome = queue.popleft() if queue else "success"
            task = self.loop.create_task(self.report_to(self._report(fax, outcome)))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _report(self, fax: Fax, outcome: str) -> bytes:
        status, reason = OUTCOMES[outcome]
        if fax.pdf is None:
            status, reason = "Failed", "No attachment to fax"
        pages = len(_PAGE.findall(fax.pdf or b"")) if status == "Success" else 0
        self._count += 1
        report = EmailMessage()
        report["From"] = f"reports@{self.domain}"
        report["To"] = fax.mail_from
        report["Subject"] = f"Fax delivery report: {status}"
        report["Date"] = email.utils.formatdate(usegmt=True)
        report["Message-ID"] = f"<report-{self._count}@{self.domain}>"
        if fax.message_id:
            report["In-Reply-To"] = fax.message_id
            report["References"] = fax.message_id
        lines = [f"Status: {status}", f"Number: {fax.number}", f"Pages: {pages}"]
        lines += [f"Reason: {reason}"] if reason else []
        lines += [f"Message-ID: {fax.message_id}", "", "This report was generated automatically."]
        report.set_content("\n".join(lines) + "\n")
        return report.as_bytes(policy=email.policy.SMTP)

    async def _start(self):
        from aiosmtpd.smtp import SMTP

        gateway = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                reply = gateway._rcpt_reply(address)
                if reply:
                    return reply
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                ssl_object = server.transport.get_extra_info("ssl_object")
                gateway._take(envelope, ssl_object.version() if ssl_object else None)
                return "250 2.0.0 queued for faxing"

        class QuietSMTP(SMTP):
            def connection_lost(self, error):
                super().connection_lost(error)
                closed = getattr(self, "_closed", None)  # see direct_pki.LoopbackSmtp
                if closed is not None and closed.done() and not closed.cancelled():
                    closed.exception()

        return await self.loop.create_server(
            lambda: QuietSMTP(Handler(), hostname=self.domain, tls_context=self.tls_context, require_starttls=True),
            "127.0.0.1", 0)
