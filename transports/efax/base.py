"""What every fax provider offers the outbox: send a PDF, ask how it went, cancel it.

Providers differ in how they learn the outcome: Phaxio is polled (`status`), an email-to-fax gateway mails a
report back (its `status` only says "still waiting", and the inbound pipeline hands the report over). The
worker (transports/efax/runner.py) decides retries from `FaxStatus.transient`, never from provider words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Provider-neutral states. `queued` and `in-progress` are not final; the other three are.
QUEUED, IN_PROGRESS, SUCCESS, FAILURE, PARTIAL = "queued", "in-progress", "success", "failure", "partial"
FINAL_STATES = frozenset({SUCCESS, FAILURE, PARTIAL})


class FaxError(Exception):
    """The provider refused or could not be reached. `transient`: trying again later may work (network down,
    5xx, rate limit); otherwise a person must act (bad number, wrong credentials, file refused)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class FaxRequest:
    """One fax to send: the stored PDF bytes, exactly as filed with the referral."""

    to: str  # E.164, e.g. "+15551234567"
    pdf: bytes
    filename: str  # e.g. "referral-MRN000123-20261126.pdf"
    header_text: str  # printed by the provider at the top of every page (sender name and number)
    subject: str  # for the gateway email / our own records; never PHI-free, so never logged
    reference: str  # our id for this attempt, unique per send (the gateway's Message-ID; a Phaxio tag)


@dataclass(frozen=True)
class FaxStatus:
    state: str  # one of QUEUED, IN_PROGRESS, SUCCESS, FAILURE, PARTIAL
    reason: str = ""  # the provider's words for a failure ("Busy", "No answer", "Invalid number")
    transient: bool = False  # for FAILURE/PARTIAL: a resend may succeed (busy, no answer, line error)
    pages: int | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class FaxProvider(Protocol):
    """`send` returns the provider's id for the fax; `status` and `cancel` take that id. All raise FaxError."""

    name: str

    async def send(self, request: FaxRequest) -> str: ...

    async def status(self, fax_id: str) -> FaxStatus: ...

    async def cancel(self, fax_id: str) -> None: ...
