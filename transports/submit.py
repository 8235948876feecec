"""Handing a referral to the outbox: the one call the TUI and `referdesk send` make to send something."""

from __future__ import annotations

from models.documents import Attachment
from models.referrals import Referral
from models.referring import ReferralDraft, create_referral


def submit_referral(draft: ReferralDraft, attachments: list[Attachment]) -> Referral:
    """Queue the referral with exactly the attachments the user saw. Delivery happens in the outbox worker;
    Direct has one (transports/outbox.py); eFax and print referrals stay `queued`, and say so, until theirs
    exist."""
    return create_referral(draft, attachments)
