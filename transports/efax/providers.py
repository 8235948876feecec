"""Which fax provider the practice uses, from `[efax]`; FaxNotReady says what to set when none is usable."""

from __future__ import annotations

from collections.abc import Mapping

from models.config import Config
from transports.efax.base import FaxProvider

PROVIDERS = ("smtp-gateway", "phaxio")


class FaxNotReady(Exception):
    """eFax is not set up, or its settings are wrong: fax referrals stay queued until it is."""


def provider_from_config(config: Config, env: Mapping[str, str]) -> FaxProvider:
    section = config.section("efax")
    name = str(section.get("provider") or "").strip()
    if not name:
        raise FaxNotReady("eFax is not set up: add an [efax] section with provider = \"smtp-gateway\" or "
                          "\"phaxio\" to the configuration")
    try:
        if name == "smtp-gateway":
            from transports.efax.smtp_gateway import SmtpGatewayProvider

            return SmtpGatewayProvider.from_config(section, config.section("smtp"), env,
                                                   config.section("direct").get("address") or "")
        if name == "phaxio":
            from transports.efax.phaxio import PhaxioProvider

            return PhaxioProvider.from_config(section, env)
    except ValueError as exc:
        raise FaxNotReady(f"eFax settings: {exc}") from exc
    raise FaxNotReady(f"[efax] provider {name!r} is not known; use one of {', '.join(PROVIDERS)}")
