"""A recording aiosmtpd on 127.0.0.1 for the sending tests: it keeps every envelope it accepts (bytes as they
arrived), can refuse chosen recipients or the DATA with a chosen reply, can require a login, and can be
started on a fixed port (a server that was down and comes back).

Not a test module: imported by test_smtp_send.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from direct_pki import LoopbackSmtp


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes  # envelope.original_content: after dot-unstuffing, before any decoding
    tls: bool


class RecordingSmtp(LoopbackSmtp):
    """`rcpt_replies` maps an address to the reply its RCPT gets (e.g. "550 5.1.1 mailbox unavailable");
    `data_reply` answers DATA instead of 250; `users` (login -> password) makes AUTH required."""

    def __init__(self, *, tls_context: ssl.SSLContext | None = None, ssl_context: ssl.SSLContext | None = None,
                 port: int = 0, rcpt_replies: dict[str, str] | None = None, data_reply: str | None = None,
                 users: dict[str, str] | None = None) -> None:
        super().__init__(tls_context=tls_context, ssl_context=ssl_context)
        self.fixed_port = port
        self.rcpt_replies = rcpt_replies or {}
        self.data_reply = data_reply
        self.users = users
        self.received: list[Received] = []
        self.mail_commands: list[tuple[str, bool]] = []  # (address, over TLS) for every MAIL FROM seen
        self.logins: list[tuple[str, str, bool]] = []  # (mechanism, login, accepted); never the password

    async def _start(self):
        from aiosmtpd.smtp import SMTP, AuthResult

        recorder = self

        class Handler:
            async def handle_MAIL(self, server, session, envelope, address, mail_options):
                recorder.mail_commands.append((address, _over_tls(server)))
                envelope.mail_from = address
                envelope.mail_options.extend(mail_options)
                return "250 OK"

            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                reply = recorder.rcpt_replies.get(address)
                if reply:
                    return reply
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                if recorder.data_reply:
                    return recorder.data_reply
                recorder.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                                  bytes(envelope.original_content), _over_tls(server)))
                return "250 2.0.0 queued as T1"

        def authenticator(server, session, envelope, mechanism, auth_data):
            login = auth_data.login.decode("utf-8", "replace")
            ok = recorder.users.get(login) == auth_data.password.decode("utf-8", "replace")
            recorder.logins.append((mechanism, login, ok))
            return AuthResult(success=ok, handled=False)

        class QuietSMTP(SMTP):
            def __init__(self, *args, implicit_tls: bool, **kwargs):
                super().__init__(*args, **kwargs)
                if implicit_tls:
                    # aiosmtpd counts only STARTTLS as TLS, so would refuse AUTH behind implicit TLS; the whole
                    # connection is encrypted there (set here, not as auth_require_tls=False, which warns).
                    self._auth_require_tls = False

            def connection_lost(self, error):
                super().connection_lost(error)
                closed = getattr(self, "_closed", None)  # see direct_pki.LoopbackSmtp
                if closed is not None and closed.done() and not closed.cancelled():
                    closed.exception()

        auth = dict(authenticator=authenticator, auth_required=True) if self.users is not None else {}
        return await self.loop.create_server(
            lambda: QuietSMTP(Handler(), hostname="hisp.test", tls_context=self.tls_context, require_starttls=False,
                              implicit_tls=self.ssl_context is not None, **auth),
            "127.0.0.1", self.fixed_port, ssl=self.ssl_context, reuse_address=True)


def _over_tls(server) -> bool:
    """True for STARTTLS and implicit TLS alike (aiosmtpd's session.ssl knows only the former)."""
    return server.transport.get_extra_info("ssl_object") is not None
