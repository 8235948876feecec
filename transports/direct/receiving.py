"""Opening an inbound S/MIME message for the pipeline in transports/inbound.py: decrypt it with the practice's
key, then accept it only when at least one signer is intact and trusted for the sender's address
(STANDARDS.md "Certificates": a second, expired or untrusted signer does not spoil a good one).
"""

from __future__ import annotations

import email.utils
import os
from email.message import Message
from typing import Callable, Mapping

from models.config import Config
from transports.direct.cms_open import SmimeError, open_message
from transports.direct.identity import DirectSetupError, Identity, load_identity
from transports.direct.notifications import read_message
from transports.direct.discovery import Discovery, make_resolver
from transports.direct.recipient import DEFAULT_CACHES, DirectSettings, anchors_for
from transports.direct.setup import DEFAULT_P12_PASSWORD_ENV, direct_settings_missing, passphrase_from_env
from transports.direct.trust import SIGN, TrustChecker

Opener = Callable[[bytes, Message], tuple[Message | None, str]]


def make_opener(identity: Identity, settings: DirectSettings) -> Opener:
    def opener(raw: bytes, message: Message) -> tuple[Message | None, str]:
        try:
            opened = open_message(raw, [identity])
        except SmimeError as exc:
            return None, str(exc)
        if not opened.encrypted:
            return None, "the message is not encrypted: Direct messages must be"
        if not opened.signed:
            return None, "the message is not signed: the sender cannot be trusted"
        sender = email.utils.parseaddr(str(message.get("From", "")))[1]
        discovery = Discovery(lambda: make_resolver(settings.nameservers, timeout=settings.dns_timeout,
                                                    lifetime=settings.dns_lifetime),
                              DEFAULT_CACHES.lookups, fetch_timeout=settings.fetch_timeout)
        try:
            checker = TrustChecker(anchors_for(settings), crl_cache=DEFAULT_CACHES.crls, issuers=discovery.issuers,
                                   fetch_timeout=settings.fetch_timeout)
        except DirectSetupError as exc:
            return None, f"the trust bundle cannot be used: {exc}"
        problems = []
        for signer in opened.signers:
            if not (signer.digest_ok and signer.signature_ok):
                problems.append(signer.error or "the signature does not match the content (altered on the way?)")
                continue
            others = tuple(c for c in opened.certificates if c != signer.certificate)
            verdict = checker.assess(signer.certificate, sender, intermediates=others, purpose=SIGN)
            if verdict.valid:
                return read_message(opened.content), ""
            problems.append(verdict.reason)
        if not opened.signers:
            problems.append("no signer")
        return None, "no trusted signature: " + "; ".join(problems)

    return opener


def opener_from_config(config: Config, env: Mapping[str, str] | None = None) -> Opener | None:
    """An opener for the practice's identity, or one that explains why S/MIME cannot be opened here; None
    when Direct is not set up at all."""
    if direct_settings_missing(config):
        return None
    env = os.environ if env is None else env
    direct = config.section("direct")
    password = passphrase_from_env(str(direct.get("password_env") or DEFAULT_P12_PASSWORD_ENV), env)
    try:
        identity = load_identity(str(direct["certificate"]), password)
        settings = DirectSettings.from_config(config)
    except (DirectSetupError, ValueError) as exc:
        problem = f"the practice's Direct key cannot be used: {exc}"
        return lambda raw, message: (None, problem)
    return make_opener(identity, settings)
