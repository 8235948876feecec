"""An email-to-fax gateway's emailed report, handed in by the inbound pipeline and applied to the fax job it
is about, exactly as a polled status would be (transports/efax/fax_job.settle)."""

from __future__ import annotations

from dataclasses import dataclass

from models.config import Config
from models.outbox import claim_by_external_id
from transports.efax.fax_job import FaxPolicy, settle
from transports.mime_parts import address


@dataclass(frozen=True)
class FaxReports:
    """Reports are taken only from the configured gateway's domain, and only about a fax we sent that still
    waits for one (its reference is unguessable), so a forged email cannot mark a fax delivered."""

    gateway_domain: str
    policy: FaxPolicy
    worker: str = "inbound"  # the name the job is claimed under
    actor: str = "inbound"  # who the audit log names as learning the fax's final result (see apply)

    @classmethod
    def from_config(cls, config: Config | None) -> "FaxReports | None":
        section = config.section("efax") if config is not None else {}
        if section.get("provider") != "smtp-gateway" or not section.get("gateway_domain"):
            return None
        try:
            policy = FaxPolicy.from_config(section)
        except ValueError:
            policy = FaxPolicy()
        return cls(str(section["gateway_domain"]).strip().lower().rstrip("."), policy)

    def from_gateway(self, message) -> bool:
        sender = address(message, "From").lower()
        return sender.endswith("@" + self.gateway_domain) or sender.endswith("." + self.gateway_domain)

    def apply(self, raw: bytes, actor: str = "") -> tuple[str, int | None] | None:
        """(what happened, referral id) for a report about one of our waiting faxes; None when `raw` is not
        such a report (the caller then treats it as any other message). A final result (delivered, failed) is
        audited by fax_job.settle, as done by `actor` (whoever took the report in; default `self.actor`)."""
        from transports.efax.gateway_report import parse_gateway_report

        report = parse_gateway_report(raw)
        if report is None:
            return None
        job = claim_by_external_id(self.worker, "efax", report.fax_id)
        if job is None:  # a second copy, a late report about an attempt since redialled, or not ours
            return "unmatched", None
        effect = settle(job, report.status, "smtp-gateway", self.policy, actor=actor or self.actor)
        return effect, job.referral_id
