"""One inbound message through the pipeline (ARCHITECTURE.md "Receiving"): stored raw first, so nothing is lost
if a later step fails; opened and trust-checked; then either applied as a delivery notification or accepted,
acknowledged and filed as a clinical message (a consultant's report).

- Delivery notifications (MDNs, DSNs), plain or S/MIME, move our referrals (models.delivery). An S/MIME one must
  carry a trusted signature; a plain one is accepted as a HISP's own. Notifications are never acknowledged.
- Clinical messages must be encrypted and signed by a certificate trusted for their sender
  (transports.direct.receiving). Anything else is quarantined: state `rejected`, the reason in `error`, no MDN.
- An accepted clinical message gets a *processed* MDN queued in the same transaction that files it; then a
  *dispatched* MDN when it reached a chart (or a held one, released when staff file it from the to-be-filed
  list), or a *failed* MDN when it cannot be filed (state `failed`, the reason in `error`).
- Filing: documents as the patient's and the practice's (transports.filing), matched to the referral it answers
  (transports.matching), which is then closed (models.referral_history.mark_report_received).

Idempotent by Message-ID: a message that was filed, left for staff, or acknowledged as failed is a duplicate
when it comes again, and nothing is queued twice; a rejected one may be tried again (e.g. once the trust bundle
is fixed). Never raises for what a message contains: any error after the raw bytes are stored becomes a stored
failure. Nothing is logged (messages are PHI).

Every message ends in one `inbound.received` audit row whatever became of it — filed, unfiled (waiting for
staff), rejected (quarantined), failed or duplicate — as its outcome, by the system actor that took it in
(SYSTEM_ACTORS: the SMTP listener, the worker polling IMAP) or the person running `referdesk receive`. Its
detail holds ids and codes (kind, channel, referral id), never the reason text, which can quote a file name
or a certificate subject: staff read the reason on the message itself (the inbox), by the row's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

from models import clock
from models.audit import patient_mrn_for, record, referral_mrn
from models.db import database
from models.delivery import record_notification
from models.practice import Practice
from models.referral_history import HistoryError, local_today, mark_report_received
from models.referrals import InboundMessage, ReferralEvent
from models.safe_text import one_line
from transports import filing
from transports.direct import acknowledge
from transports.direct.notifications import parse_notification
from transports.matching import match_report
from transports.mime_parts import MimeError, address, contents, header, message_id, parse, read_headers, \
    referenced_ids

MAX_BYTES = 50 * 1024 * 1024
SMIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
SIGNED_TYPES = ("multipart/signed",)
NOTIFICATION_REPORTS = ("disposition-notification", "delivery-status")
CHANNELS = ("file", "smtp", "imap")
#: States in which a Message-ID counts as handled: a second copy of it is a duplicate.
HANDLED = ("filed", "unfiled")
#: Who the audit log names as receiving a message, by channel (a person running `referdesk receive` is named).
SYSTEM_ACTORS = {"smtp": "listener", "imap": "worker", "file": "receive"}


@dataclass(frozen=True)
class ReceiveOutcome:
    outcome: str  # accepted | rejected | duplicate
    reason: str
    message_id: str
    matched_referral: int | None = None

    def __post_init__(self) -> None:
        # A reason can quote what the message carried (a zip member's name, a certificate's subject, an
        # exception's text): one line, no control characters, wherever it goes (the stored error, the
        # failed MDN's Failure field, `referdesk receive` on a terminal).
        object.__setattr__(self, "reason", one_line(self.reason))

    def as_json(self) -> dict:
        return {"outcome": self.outcome, "reason": self.reason, "message_id": self.message_id,
                "matched_referral": self.matched_referral}


class _Duplicate(Exception):
    def __init__(self, earlier: InboundMessage) -> None:
        self.earlier = earlier


@dataclass
class _Receipt:
    """One message being processed: its stored row, the envelope and (once opened) the inner message."""

    row: InboundMessage
    raw: bytes
    outer: Message
    message_id: str
    opener: object
    inner: Message | None = None
    signer_fingerprint: str = ""
    target: acknowledge.MdnTarget | None = None  # set once the message is accepted for trust

    inner_headers: Message | None = None  # the inner message's header block (read even when its body is not)
    fax_reports: object = None
    actor: str = ""  # who the audit row names as receiving it
    channel: str = "file"

    def practice_address(self) -> str:
        configured = str(getattr(self.opener, "address", "") or "")
        if configured:
            return configured
        practice = Practice.select(Practice.direct_address).first()
        return (practice.direct_address if practice else "") or address(self.outer, "To")


# --- the stored row ---------------------------------------------------------------------------------------

def _earlier(message_id: str) -> InboundMessage | None:
    """An earlier copy of this message that was handled (filed, waiting for staff, or acknowledged as failed)."""
    return (InboundMessage.select(InboundMessage.id, InboundMessage.state, InboundMessage.referral)
            .where(InboundMessage.message_id == message_id,
                   InboundMessage.state.in_(HANDLED)
                   | ((InboundMessage.state == "failed") & InboundMessage.processed_at.is_null(False)))
            .order_by(InboundMessage.id).first())


def _store(raw: bytes, outer: Message, message_id: str, channel: str) -> InboundMessage:
    return InboundMessage.create(message_id=message_id, in_reply_to=header(outer, "In-Reply-To"),
                                 from_address=address(outer, "From"), to_address=address(outer, "To"),
                                 subject=header(outer, "Subject"), received_at=clock.now(), raw=raw,
                                 channel=channel)


def _settle(receipt: _Receipt, outcome: ReceiveOutcome, *, state: str | None = None, kind: str = "") -> ReceiveOutcome:
    state = state or ("filed" if outcome.outcome == "accepted" else "rejected")
    changes = {"state": state, "error": "" if state == "filed" else outcome.reason,
               "referral": outcome.matched_referral}
    if kind:
        changes["kind"] = kind
    with database.atomic():
        InboundMessage.update(**changes).where(InboundMessage.id == receipt.row.id).execute()
        _audit(receipt.actor, state, receipt.row.id, referral_id=outcome.matched_referral, kind=kind,
               channel=receipt.channel)
    return outcome


def _audit(actor: str, state: str, inbound_id: int, *, referral_id: int | None = None, kind: str = "",
           channel: str = "") -> None:
    """The `inbound.received` row of a message that was not filed to a chart by `_accept_and_file` (which
    writes its own): rejected, failed, duplicate, or a notification or fax report applied to a referral."""
    detail = "; ".join(part for part in (f"kind={kind}" if kind else "", f"channel={channel}" if channel else "",
                                         f"referral_id={referral_id}" if referral_id is not None else "") if part)
    record("inbound.received", username=actor, patient_mrn=referral_mrn(referral_id), outcome=state,
           object_type="inbound_message", object_id=str(inbound_id), detail=detail)


def _duplicate(message_id: str, earlier: InboundMessage) -> ReceiveOutcome:
    return ReceiveOutcome("duplicate", f"this message was processed before (inbound message {earlier.id}, "
                                       f"{earlier.state}); nothing changed", message_id, earlier.referral_id)


# --- the entry point -----------------------------------------------------------------------------------------

def receive_message(raw: bytes, *, opener=None, channel: str = "file", fax_reports=None,
                    actor: str = "") -> ReceiveOutcome:
    """Process one RFC 5322 message. `opener(raw, outer headers) -> OpenResult` decrypts and trust-checks an
    S/MIME message (transports.direct.receiving builds one from the practice's identity); `channel` is how it
    came: file (the command line), smtp (our listener) or imap (the HISP's mailbox). `fax_reports`
    (transports.efax.reports.FaxReports) takes the email-to-fax gateway's reports about our faxes. `actor` is
    who the audit log names as receiving it (default: the channel's system actor, SYSTEM_ACTORS)."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown inbound channel {channel!r}")
    actor = actor or SYSTEM_ACTORS[channel]
    try:
        outer = read_headers(raw)
    except Exception:  # noqa: BLE001 - a header block the parser cannot take is an empty one
        outer = Message()
    found_id = message_id(outer)
    if found_id:
        earlier = _earlier(found_id)
        if earlier is not None:
            _audit(actor, "duplicate", earlier.id, referral_id=earlier.referral_id, channel=channel)
            return _duplicate(found_id, earlier)
    receipt = _Receipt(_store(raw if len(raw) <= MAX_BYTES else b"", outer, found_id, channel), raw, outer,
                       found_id, opener, fax_reports=fax_reports, actor=actor, channel=channel)
    try:
        return _process(receipt)
    except Exception as exc:  # noqa: BLE001 - whatever a message does, it ends as a stored failure
        return _fail(receipt, f"internal error while processing it ({type(exc).__name__}: {str(exc)[:200]}); "
                              "the message is kept")


def _process(receipt: _Receipt) -> ReceiveOutcome:
    raw, outer, found_id = receipt.raw, receipt.outer, receipt.message_id
    if len(raw) > MAX_BYTES:
        return _settle(receipt, ReceiveOutcome("rejected", f"message too large ({len(raw) / 1_048_576:.0f} MB; the "
                                                           f"limit is {MAX_BYTES // 1_048_576} MB)", found_id))
    if not found_id:
        reason = ("the message's Message-ID is not usable (not ASCII, or malformed)" if header(outer, "Message-ID")
                  else "the message has no Message-ID")
        return _settle(receipt, ReceiveOutcome("rejected", reason, ""))
    content_type = outer.get_content_type()
    if content_type in SMIME_TYPES + SIGNED_TYPES:
        if receipt.opener is None:
            return _settle(receipt, ReceiveOutcome(
                "rejected", "an S/MIME message arrived but Direct is not set up here (no key to open it)", found_id))
        opened = _open(receipt)
        if not opened.accepted:
            return _settle(receipt, ReceiveOutcome("rejected", opened.reason, found_id))
        receipt.signer_fingerprint = opened.signer_fingerprint
        receipt.inner_headers = read_headers(opened.content)
        InboundMessage.update(signer_fingerprint=opened.signer_fingerprint).where(
            InboundMessage.id == receipt.row.id).execute()
        try:
            receipt.inner = parse(opened.content)
        except MimeError as exc:
            if _is_notification(receipt.inner_headers):  # never acknowledge a notification, even a broken one
                return _settle(receipt, ReceiveOutcome("rejected", str(exc), found_id), kind="notification")
            return _accept_and_fail(receipt, str(exc))
        if _is_notification(receipt.inner):
            return _notification(receipt, receipt.inner)
        return _accept_and_file(receipt)
    try:
        message = parse(raw)
    except MimeError as exc:
        return _settle(receipt, ReceiveOutcome("rejected", str(exc), found_id))
    if receipt.fax_reports is not None and receipt.fax_reports.from_gateway(message):
        return _fax_report(receipt)
    if _is_notification(message):
        return _notification(receipt, message)
    return _settle(receipt, ReceiveOutcome(
        "rejected", "the message is not encrypted: Direct messages must be encrypted and signed (only a HISP's "
                    "own delivery notifications may come unencrypted)", found_id), kind="other")


def _open(receipt: _Receipt):
    from transports.direct.receiving import OpenResult

    result = receipt.opener(receipt.raw, receipt.outer)
    if isinstance(result, tuple):  # an opener of the earlier shape: (inner message or None, reason)
        inner, reason = result
        return OpenResult(inner.as_bytes() if inner is not None else None, reason)
    return result


def _is_notification(message: Message) -> bool:
    return (message.get_content_type() == "multipart/report"
            and str(message.get_param("report-type") or "").lower() in NOTIFICATION_REPORTS)


# --- delivery notifications ----------------------------------------------------------------------------------

def _notification(receipt: _Receipt, message: Message) -> ReceiveOutcome:
    found_id = receipt.message_id
    notification = parse_notification(message)
    if notification is None:
        return _settle(receipt, ReceiveOutcome("rejected", "a delivery notification that cannot be read (no "
                                                           "processed, dispatched or failed disposition)", found_id),
                       kind="notification")
    if not notification.original_message_id:
        return _settle(receipt, ReceiveOutcome("rejected", "the notification does not say which message it is about",
                                               found_id), kind="notification")
    result = record_notification(notification.original_message_id, notification.kind,
                                 sender=notification.reporter or address(message, "From") or address(receipt.outer,
                                                                                                     "From"),
                                 detail=notification.detail)
    if result.effect == "unmatched":
        return _settle(receipt, ReceiveOutcome("rejected", f"a {notification.kind} notification about "
                                                           f"{notification.original_message_id}, which is not a "
                                                           "message we sent", found_id), kind="notification")
    reason = {"delivered": "delivery confirmed: the referral is delivered",
              "failed": "delivery failed: the referral is marked failed",
              "recorded": f"{notification.kind} notification recorded",
              "late": f"{notification.kind} notification arrived after the referral settled; recorded",
              "duplicate": f"{notification.kind} notification already recorded"}[result.effect]
    return _settle(receipt, ReceiveOutcome("accepted", reason, found_id, result.referral_id), kind="notification")


def _fax_report(receipt: _Receipt) -> ReceiveOutcome:
    applied = receipt.fax_reports.apply(receipt.raw, actor=receipt.actor)
    if applied is None:
        return _settle(receipt, ReceiveOutcome("rejected", "mail from the fax gateway that is not a fax report",
                                               receipt.message_id), kind="fax-report")
    effect, referral_id = applied
    if effect == "unmatched":
        return _settle(receipt, ReceiveOutcome("rejected", "a fax report about no fax that is waiting for one (a "
                                                           "second copy, or an attempt since redialled)",
                                               receipt.message_id), kind="fax-report")
    reason = {"delivered": "fax delivered: the referral is delivered",
              "retry": "fax not delivered yet: it will be sent again",
              "failed": "fax failed: the referral is marked failed",
              "waiting": "fax report recorded; still waiting for the outcome"}[effect]
    return _settle(receipt, ReceiveOutcome("accepted", reason, receipt.message_id, referral_id), kind="fax-report")


# --- clinical messages ----------------------------------------------------------------------------------------

def _claim(receipt: _Receipt, **changes) -> None:
    """Mark the row accepted (first write of the transaction, so SQLite serialises concurrent copies here), then
    make sure no other copy of the message was handled meanwhile."""
    signed = receipt.inner_headers  # a wrapped message's own headers are the signed, authoritative ones
    if header(signed, "Subject"):
        changes.setdefault("subject", header(signed, "Subject"))
    if header(signed, "In-Reply-To"):
        changes.setdefault("in_reply_to", header(signed, "In-Reply-To"))
    InboundMessage.update(processed_at=clock.now(), signer_fingerprint=receipt.signer_fingerprint,
                          mdn_requested=receipt.target.requested if receipt.target else False,
                          final_delivery_requested=receipt.target.final_destination if receipt.target else False,
                          **changes).where(InboundMessage.id == receipt.row.id).execute()
    earlier = (InboundMessage.select(InboundMessage.id, InboundMessage.state, InboundMessage.referral)
               .where(InboundMessage.message_id == receipt.message_id, InboundMessage.id != receipt.row.id,
                      InboundMessage.state.in_(HANDLED)
                      | ((InboundMessage.state == "failed") & InboundMessage.processed_at.is_null(False)))
               .first())
    if earlier is not None:
        raise _Duplicate(earlier)


def _target(receipt: _Receipt) -> acknowledge.MdnTarget | None:
    if receipt.target is None and receipt.inner_headers is not None:
        receipt.target = acknowledge.target_for(receipt.inner_headers, receipt.outer,
                                                practice_address=receipt.practice_address())
    return receipt.target


def _accept_and_file(receipt: _Receipt) -> ReceiveOutcome:
    found_id = receipt.message_id
    target = _target(receipt)
    try:
        prepared = filing.prepare(contents(receipt.inner))
    except (MimeError, filing.FilingError) as exc:
        return _accept_and_fail(receipt, str(exc))
    sender = address(receipt.outer, "From")
    try:
        with database.atomic():
            _claim(receipt, kind=prepared.kind)
            if target is not None:
                acknowledge.queue(receipt.row.id, target, "processed")
            match = match_report(references=referenced_ids(receipt.inner, receipt.outer), sender=sender,
                                 demographics=prepared.demographics)
            filed = filing.store(prepared, inbound_id=receipt.row.id, patient_id=match.patient_id)
            note = match.note
            closed = False
            if match.closes and match.referral_id is not None:
                if prepared.kind == "report":
                    closed, note = _close(receipt, match, filed)
                else:
                    note = "the message carries no report document (only its text), so the referral stays open"
            state = "filed" if match.patient_id is not None else "unfiled"
            InboundMessage.update(state=state, error=note if state == "unfiled" else "", patient=match.patient_id,
                                  referral=match.referral_id if match.patient_id is not None else None).where(
                InboundMessage.id == receipt.row.id).execute()
            if target is not None:
                acknowledge.queue(receipt.row.id, target, "dispatched", held=state == "unfiled")
            record("inbound.received", username=receipt.actor, patient_mrn=patient_mrn_for(match.patient_id),
                   outcome=state,
                   object_type="inbound_message", object_id=str(receipt.row.id),
                   detail=f"state={state}; patient_id={match.patient_id or ''}; "
                          f"referral_id={match.referral_id or ''}; closed={closed}")
    except _Duplicate as dup:
        InboundMessage.update(state="rejected", error=f"a second copy of inbound message {dup.earlier.id}, "
                                                      "processed at the same time; ignored").where(
            InboundMessage.id == receipt.row.id).execute()
        _audit(receipt.actor, "duplicate", receipt.row.id, referral_id=dup.earlier.referral_id,
               channel=receipt.channel)
        return _duplicate(found_id, dup.earlier)
    except Exception as exc:  # noqa: BLE001 - filing failed: the sender is told, staff see why
        return _accept_and_fail(receipt, f"it could not be filed ({type(exc).__name__}: {str(exc)[:200]})")
    documents = len(prepared.documents)
    what = f"{documents} document{'s' if documents != 1 else ''}"
    if state == "unfiled":
        return ReceiveOutcome("accepted", f"accepted ({what}) but not filed to a chart: {note}; it waits in the "
                                          "to-be-filed list", found_id, None)
    if closed:
        reason = f"report filed to the patient's chart ({what}); referral {match.referral_id} is report-received"
    elif match.referral_id is not None:
        reason = f"report filed to the patient's chart ({what}); referral {match.referral_id} not closed: {note}"
    else:
        reason = f"report filed to the patient's chart ({what}); {note}"
    return ReceiveOutcome("accepted", reason, found_id, match.referral_id)


def _close(receipt: _Receipt, match, filed: filing.Filed) -> tuple[bool, str]:
    """Mark the referral report-received on the local day the report arrived; (closed, why not)."""
    received_on = min(clock.local(receipt.row.received_at).date(), local_today())
    try:
        mark_report_received(match.referral_id, received_on, document_id=filed.primary_patient_id)
    except HistoryError as exc:
        return False, str(exc)
    filing.link_to_referral(filed.patient_ids, match.referral_id)
    how = "a reply to the referral message" if match.how == "reply" else "the patient's name, date of birth " \
                                                                         "and the referral's recipient"
    ReferralEvent.create(referral=match.referral_id, at=clock.now(), kind="note",
                         detail=f"consultant's report received by Direct (inbound message {receipt.row.id}), "
                                f"matched by {how}")
    return True, ""


def _accept_and_fail(receipt: _Receipt, reason: str) -> ReceiveOutcome:
    """A trusted message that cannot be filed: processed, then failed, MDNs; stored as failed."""
    reason = one_line(reason)  # also the MDN's Failure field: a CR LF in it would add fields to the report
    target = _target(receipt)
    try:
        with database.atomic():
            _claim(receipt, state="failed", error=reason, kind="report")
            if target is not None:
                acknowledge.queue(receipt.row.id, target, "processed")
                acknowledge.queue(receipt.row.id, target, "failed", failure=reason)
            _audit(receipt.actor, "failed", receipt.row.id, kind="report", channel=receipt.channel)
    except _Duplicate as dup:
        InboundMessage.update(state="rejected", error=f"a second copy of inbound message {dup.earlier.id}").where(
            InboundMessage.id == receipt.row.id).execute()
        _audit(receipt.actor, "duplicate", receipt.row.id, referral_id=dup.earlier.referral_id,
               channel=receipt.channel)
        return _duplicate(receipt.message_id, dup.earlier)
    told = " (the sender is told: failed MDN queued)" if target is not None else ""
    return ReceiveOutcome("rejected", f"accepted from a trusted sender but not filed: {reason}{told}",
                          receipt.message_id)


def _fail(receipt: _Receipt, reason: str) -> ReceiveOutcome:
    """An unexpected error: stored as failed. A message that had passed the trust check is acknowledged as
    failed (if the acknowledgement itself cannot be made, the failure is still stored)."""
    reason = one_line(reason)
    if receipt.inner_headers is not None and receipt.signer_fingerprint:
        try:
            return _accept_and_fail(receipt, reason)
        except Exception:  # noqa: BLE001 - fall through to the bare record
            pass
    InboundMessage.update(state="failed", error=reason).where(InboundMessage.id == receipt.row.id).execute()
    try:
        _audit(receipt.actor, "failed", receipt.row.id, channel=receipt.channel)
    except Exception:  # noqa: BLE001 - the database itself may be what failed: the stored failure stands
        pass
    return ReceiveOutcome("rejected", reason, receipt.message_id)
