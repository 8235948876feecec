"""Opening an inbound S/MIME message for the pipeline in transports/inbound.py: decrypt it with the practice's
key, then accept it only when at least one signer is intact and trusted for the sender's address
(STANDARDS.md "Certificates": a second, expired or untrusted signer does not spoil a good one).

A refusal says why in words staff can act on, naming each signer (who issued it, whether it expired) next to the
trust verdict, because "not bound to the address" alone hides that the certificate is also self-signed and
expired. A wrapped message whose signed From differs from the envelope's From is refused: the signature would
otherwise vouch for an address the trust check never looked at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from email.message import Message
from typing import Callable, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from models import clock
from models.config import Config
from transports.direct.cms_open import SmimeError, open_message
from transports.direct.discovery import Discovery, make_resolver
from transports.direct.identity import DirectSetupError, Identity, load_identity
from transports.direct.recipient import DEFAULT_CACHES, DirectSettings, anchors_for
from transports.direct.setup import DEFAULT_P12_PASSWORD_ENV, direct_settings_missing, passphrase_from_env
from transports.direct.trust import SIGN, TrustChecker, label, naive_utc
from transports.mime_parts import address, read_headers


@dataclass(frozen=True)
class OpenResult:
    """What opening gave: the inner content (for a wrapped message the whole signed RFC 5322 message; else the
    signed MIME entity), or None with `reason` when the message is refused."""

    content: bytes | None
    reason: str = ""
    signer_fingerprint: str = ""  # SHA-256 (hex) of the trusted signer's certificate
    wrapped: bool = False
    content_encryption: str = ""

    @property
    def accepted(self) -> bool:
        return self.content is not None


Opener = Callable[[bytes, Message], OpenResult]


def describe_signer(cert: x509.Certificate | None) -> str:
    """“Name” (issued by “CA”, valid until 2028-01-01) / (self-signed, expired on 2015-06-18)."""
    if cert is None:
        return "a signer whose certificate is not in the message"
    issuer = "self-signed" if cert.issuer == cert.subject else f"issued by “{label(cert.issuer)}”"
    end = naive_utc(cert.not_valid_after_utc)
    validity = f"expired on {end:%Y-%m-%d}" if clock.now() > end else f"valid until {end:%Y-%m-%d}"
    return f"“{label(cert.subject)}” ({issuer}, {validity})"


class DirectOpener:
    """Opens messages for one practice identity. `address` is the practice's Direct address (the From of the
    MDNs the pipeline sends), "" when unknown."""

    def __init__(self, identity: Identity, settings: DirectSettings, address: str = "") -> None:
        self.identity, self.settings, self.address = identity, settings, address

    def _checker(self) -> TrustChecker:
        settings = self.settings
        discovery = Discovery(lambda: make_resolver(settings.nameservers, timeout=settings.dns_timeout,
                                                    lifetime=settings.dns_lifetime),
                              DEFAULT_CACHES.lookups, fetch_timeout=settings.fetch_timeout)
        return TrustChecker(anchors_for(settings), crl_cache=DEFAULT_CACHES.crls, issuers=discovery.issuers,
                            fetch_timeout=settings.fetch_timeout)

    def __call__(self, raw: bytes, message: Message) -> OpenResult:
        """`message`: the outer headers (their From is the address the signer must be trusted for)."""
        try:
            opened = open_message(raw, [self.identity])
        except SmimeError as exc:
            return OpenResult(None, str(exc))
        if not opened.encrypted:
            return OpenResult(None, "the message is not encrypted: Direct messages must be")
        if not opened.signed:
            return OpenResult(None, "the message is not signed: the sender cannot be trusted")
        sender = address(message, "From")
        if not sender:
            return OpenResult(None, "the message has no usable From address, so its signer cannot be checked")
        if opened.wrapped:
            signed_from = address(read_headers(opened.content), "From")
            if signed_from and signed_from.lower() != sender.lower():
                return OpenResult(None, f"the signed message is from {signed_from} but arrived as from {sender}: "
                                        "refused (the signature does not vouch for the sender)")
        try:
            checker = self._checker()
        except DirectSetupError as exc:
            return OpenResult(None, f"the trust bundle cannot be used: {exc}")
        problems = []
        for signer in opened.signers:
            who = describe_signer(signer.certificate)
            if not (signer.digest_ok and signer.signature_ok) or signer.certificate is None:
                problems.append(f"{who}: " + (signer.error or "the signature does not match the content "
                                                              "(altered on the way?)"))
                continue
            others = tuple(c for c in opened.certificates if c != signer.certificate)
            verdict = checker.assess(signer.certificate, sender, intermediates=others, purpose=SIGN)
            if verdict.valid:
                return OpenResult(opened.content, "", signer.certificate.fingerprint(hashes.SHA256()).hex(),
                                  opened.wrapped, opened.content_encryption)
            problems.append(f"{who}: {verdict.reason}")
        if not opened.signers:
            problems.append("no signer")
        return OpenResult(None, "no trusted signature: " + "; ".join(problems))


def make_opener(identity: Identity, settings: DirectSettings, *, address: str = "") -> DirectOpener:
    return DirectOpener(identity, settings, address)


class _Refusing:
    """Direct is configured but its key cannot be used: every S/MIME message is refused with the reason."""

    def __init__(self, reason: str, address: str = "") -> None:
        self.reason, self.address = reason, address

    def __call__(self, raw: bytes, message: Message) -> OpenResult:
        return OpenResult(None, self.reason)


def opener_from_config(config: Config, env: Mapping[str, str] | None = None) -> Opener | None:
    """An opener for the practice's identity, or one that explains why S/MIME cannot be opened here; None
    when Direct is not set up at all."""
    if direct_settings_missing(config):
        return None
    env = os.environ if env is None else env
    direct = config.section("direct")
    practice_address = str(direct.get("address") or "")
    password = passphrase_from_env(str(direct.get("password_env") or DEFAULT_P12_PASSWORD_ENV), env)
    try:
        identity = load_identity(str(direct["certificate"]), password)
        settings = DirectSettings.from_config(config)
    except (DirectSetupError, ValueError) as exc:
        return _Refusing(f"the practice's Direct key cannot be used: {exc}", practice_address)
    return make_opener(identity, settings, address=practice_address)
