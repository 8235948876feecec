"""The audit log: who viewed, sent, received, verified, exported, printed, faxed or set up what, when, about
which patient, and how it went. Append-only and hash-chained, so an edit, a deletion or an insertion made
behind referdesk's back shows when the chain is checked.

Every row's `hash` is SHA-256 over a canonical serialisation of the previous row's hash and the row's own
values (`at`, `username`, `action`, `patient_mrn`, `object_type`, `object_id`, `outcome`, `detail`); the
previous row's hash is kept in `prev_hash` too, so a gap (a deleted row) can be told from an edit. Appends are
serialised: on SQLite the insert comes first in its transaction, which takes the single write lock before the
previous row is read; on PostgreSQL a transaction-scoped advisory lock is taken before reading it. Either way
two writers can never both chain onto the same row, also when `record()` runs inside a caller's transaction.

Rows hold ids only — the patient's MRN, a referral or document number — never names, dates of birth or note
text: an audit log is read by people who need not see the chart. Callers keep `detail` to ids and codes.

What is recorded, and by whom (`username`: the signed-in account; on an open install the account the login maps
to, else the login; a system actor for what no person did — `worker` (the outbox, IMAP polling, fax status
polls), `listener` (the SMTP listener), `inbound` (a fax gateway report handed in other than by those two)):

- views: `chart.view`, `note.view`, `document.view`, `inbound.view`, and opening a list of several patients'
  data: `referral.list`, `inbound.list`, `document.list`, `report.cms50`, and `referral.view` (TUI; a search as it is typed is not recorded, the chart
  it opens is); `patient.search`, `note.list`,
  `referral.list`, `report.cms50`, `ccda.export` (command line, `via=cli` in the detail; a list of patients
  carries an MRN only when it showed one patient: see tui.commands_audit.record_shown); `audit.view`,
  `audit.verify` (reading the log is itself recorded, after the answer is worked out).
- sends and their results: `referral.create`, `referral.direct` and `referral.fax` (each hand-over, by
  `worker`: outcome ok, retry or failed), `referral.print`,
  `referral.export`, `referral.delivered`, `referral.failed`, `referral.unconfirmed`, `document.save-copy`.
- receiving: `inbound.received` (outcome filed, unfiled, rejected, failed or duplicate), `inbound.attach`.
- verifying: `direct.verify`. Set-up: `setup.direct`, `setup.directory-import`, `users.add`, `users.set-role`,
  `users.activate`, `users.deactivate`, `users.passwd`. Refusals: `access.denied` (outcome `denied`; in the
  app also each wrong password). Sign-ins in accounts mode: `session.start` (trusted SSH or password).

Only this module writes AuditEvent rows; a row written any other way has no valid hash and breaks the chain.
A hash chain shows tampering by someone who does not recompute the hashes after it; it cannot prove the
newest rows were not cut off (keep `verify_chain()`'s row count, or a copy of the log, elsewhere for that).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import peewee as pw

from models import clock
from models.db import database, is_sqlite, starts_with
from models.patients import Patient
from models.referrals import AuditEvent, Referral
from models.safe_text import storable

#: The `prev_hash` of the first row.
GENESIS = "0" * 64
DEFAULT_LIMIT = 500
#: The PostgreSQL advisory lock (transaction-scoped) that serialises appends: any constant unique to referdesk.
PG_LOCK_KEY = 0x52444155  # "RDAU"
#: How far back `verify_chain` looks to tell a row inserted into the chain from one deleted out of it.
_LOOKBACK = 64


class AuditError(Exception):
    """An audit query that cannot be run as asked; the message says what to change."""


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: dt.datetime  # naive UTC, as stored
    username: str
    action: str
    patient_mrn: str
    object_type: str
    object_id: str
    outcome: str
    detail: str

    @property
    def object(self) -> str:
        """The record acted on, as "referral 12" (or "" when the action was about no one record)."""
        return " ".join(part for part in (self.object_type, self.object_id) if part)

    def as_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["at"] = self.at.isoformat() if isinstance(self.at, dt.datetime) else str(self.at)
        return values


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    rows: int  # rows in the log
    first_bad_id: int | None = None  # the first row edited, inserted, or following a deleted one
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# --- the hash ---------------------------------------------------------------------------------------------


def _at_text(at: dt.datetime | str) -> str:
    """`at` as one fixed text, whatever the engine hands back (a datetime, or SQLite's own text)."""
    if isinstance(at, str):
        try:
            at = dt.datetime.fromisoformat(at)
        except ValueError:
            return at
    if at.tzinfo is not None:
        at = at.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return at.isoformat(sep=" ", timespec="microseconds")


def row_hash(prev_hash: str, at: dt.datetime | str, username: str, action: str, patient_mrn: str,
             object_type: str, object_id: str, outcome: str, detail: str) -> str:
    """SHA-256 (hex) of the canonical serialisation: a compact JSON array of the previous hash and the values,
    in this order, UTF-8 encoded. JSON quoting makes the fields unambiguous ("a|b","c" differs from "a","b|c")."""
    canonical = json.dumps([prev_hash, _at_text(at), username, action, patient_mrn, object_type, object_id,
                            outcome, detail], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _hash_of(row: Any, prev_hash: str) -> str:
    return row_hash(prev_hash, row.at, row.username, row.action, row.patient_mrn, row.object_type, row.object_id,
                    row.outcome, row.detail)


def _serialise_appends() -> None:
    """PostgreSQL: hold the append lock until this transaction ends (SQLite needs none: see `record`)."""
    if not is_sqlite():
        database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK_KEY,))


def _last_hash(before_id: int | None = None) -> str:
    query = AuditEvent.select(AuditEvent.hash)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    last = query.order_by(AuditEvent.id.desc()).limit(1).scalar()
    return last if last is not None else GENESIS


# --- writing ----------------------------------------------------------------------------------------------


def record(action: str, *, username: str = "", patient_mrn: str = "", object_type: str = "", object_id: str = "",
           outcome: str = "ok", detail: str = "") -> AuditEvent:
    """Append one row to the audit log and return it. Runs in its own transaction, or as a savepoint inside
    the caller's: if the caller's work rolls back, so does its audit row (the action did not happen)."""
    if not str(action or "").strip():
        raise ValueError("an audit row needs an action, e.g. 'chart.view'")
    # storable(): the values exactly as the store will keep them (no NUL), so the hash matches what is read back
    values = {"at": clock.now(), "username": storable(str(username or "")), "action": storable(str(action).strip()),
              "patient_mrn": storable(str(patient_mrn or "")), "object_type": storable(str(object_type or "")),
              "object_id": storable(str(object_id if object_id is not None else "")),
              "outcome": storable(str(outcome or "")), "detail": storable(str(detail or ""))}
    with database.atomic():
        if is_sqlite():
            # The write first: it takes SQLite's one write lock (waiting out the busy timeout for another
            # writer) before the previous row is read, so nothing can be appended between the read and ours.
            event = AuditEvent.create(**values, prev_hash="", hash="")
            event.prev_hash = _last_hash(before_id=event.id)
            event.hash = row_hash(event.prev_hash, **values)
            AuditEvent.update(prev_hash=event.prev_hash, hash=event.hash).where(AuditEvent.id == event.id).execute()
        else:
            _serialise_appends()
            prev = _last_hash()
            event = AuditEvent.create(**values, prev_hash=prev, hash=row_hash(prev, **values))
    return event


def patient_mrn_for(patient_id: int | None) -> str:
    """The MRN of patient `patient_id` ("" for none): the key audit rows carry, never the name."""
    if patient_id is None:
        return ""
    return Patient.select(Patient.mrn).where(Patient.id == patient_id).scalar() or ""


def referral_mrn(referral_id: int | None) -> str:
    if referral_id is None:
        return ""
    return (Patient.select(Patient.mrn).join(Referral, on=Referral.patient == Patient.id)
            .where(Referral.id == referral_id).scalar()) or ""


def record_referral(action: str, referral_id: int, *, username: str = "", outcome: str = "ok",
                    detail: str = "") -> AuditEvent:
    """`record` for something done to a referral: the referral's id and its patient's MRN filled in."""
    return record(action, username=username, patient_mrn=referral_mrn(referral_id), object_type="referral",
                  object_id=str(referral_id), outcome=outcome, detail=detail)


def chain_unhashed_rows() -> int:
    """Give each row without a hash (written before the log was chained) its hash, in id order, chained onto
    the row before it; returns how many were chained. Migration 6 runs it on an upgraded database."""
    _serialise_appends()
    fields = (AuditEvent.id, AuditEvent.at, AuditEvent.username, AuditEvent.action, AuditEvent.patient_mrn,
              AuditEvent.object_type, AuditEvent.object_id, AuditEvent.outcome, AuditEvent.detail,
              AuditEvent.hash)
    prev = GENESIS
    changes: list[tuple[str, str, int]] = []
    for row in AuditEvent.select(*fields).order_by(AuditEvent.id).namedtuples().iterator():
        if row.hash:
            prev = row.hash
            continue
        digest = _hash_of(row, prev)
        changes.append((prev, digest, row.id))
        prev = digest
    if changes:
        db = database.obj
        table = f"{db.quote[0]}{AuditEvent._meta.table_name}{db.quote[1]}"
        sql = (f"UPDATE {table} SET {db.quote[0]}prev_hash{db.quote[1]} = {db.param}, "
               f"{db.quote[0]}hash{db.quote[1]} = {db.param} WHERE {db.quote[0]}id{db.quote[1]} = {db.param}")
        db.cursor().executemany(sql, changes)
    return len(changes)


# --- checking ---------------------------------------------------------------------------------------------


def verify_chain() -> ChainReport:
    """Recompute every row's hash in id order and follow the links; report the first row that was edited
    (its hash no longer matches its values), inserted (the row after it links past it) or that follows a
    deleted row (it links to a hash no row has)."""
    fields = (AuditEvent.id, AuditEvent.at, AuditEvent.username, AuditEvent.action, AuditEvent.patient_mrn,
              AuditEvent.object_type, AuditEvent.object_id, AuditEvent.outcome, AuditEvent.detail,
              AuditEvent.prev_hash, AuditEvent.hash)
    with database.atomic():  # one snapshot: rows appended meanwhile are not half-seen
        total = AuditEvent.select().count()
        recent: deque[tuple[str, int]] = deque(maxlen=_LOOKBACK)  # (hash, id) of the rows just checked
        expected, previous_id, first_id = GENESIS, None, None
        for row in AuditEvent.select(*fields).order_by(AuditEvent.id).namedtuples().iterator():
            if not row.hash:
                return ChainReport(False, total, row.id, f"row {row.id} has no hash: it was written around the "
                                                         "audit log, not through models.audit.record")
            if row.prev_hash != expected:
                return ChainReport(False, total, *_broken_link(row, previous_id, first_id, recent))
            if _hash_of(row, row.prev_hash) != row.hash:
                return ChainReport(False, total, row.id, f"row {row.id} was changed after it was written: its "
                                                         "values no longer match its hash")
            recent.append((row.hash, row.id))
            expected, previous_id = row.hash, row.id
            first_id = row.id if first_id is None else first_id
    return ChainReport(True, total)


def _broken_link(row: Any, previous_id: int | None, first_id: int | None,
                 recent: Iterable[tuple[str, int]]) -> tuple[int, str]:
    """(first bad id, why) for a row whose `prev_hash` is not the previous row's hash."""
    checked = list(recent)
    for index, (digest, row_id) in enumerate(checked):
        if digest == row.prev_hash:  # it links to an earlier row: the rows after that one were slipped in
            inserted = checked[index + 1][1]
            return inserted, (f"row {inserted} was inserted: row {row.id} follows row {row_id}, "
                              f"not row {previous_id}")
    if row.prev_hash == GENESIS and first_id is not None:
        return first_id, f"row {first_id} was inserted: row {row.id} is the first row of the chain"
    if previous_id is None:
        return row.id, f"row {row.id} is the first row but follows another: the rows before it were deleted"
    return row.id, (f"row {row.id} does not follow row {previous_id}: a row between them was deleted "
                    f"(or row {previous_id} was changed and its hash recomputed)")


# --- reading ----------------------------------------------------------------------------------------------


def _utc_start(day: dt.date) -> dt.datetime:
    """The stored (naive UTC) time at which the user's local `day` begins."""
    return dt.datetime.combine(day, dt.time()).astimezone(dt.timezone.utc).replace(tzinfo=None)


def _matches_word(word: str) -> pw.Expression:
    return (starts_with(AuditEvent.username, word) | starts_with(AuditEvent.patient_mrn, word)
            | starts_with(AuditEvent.action, word))


def query(patient_mrn: str | None = None, username: str | None = None, action: str | None = None,
          since: dt.date | dt.datetime | None = None, limit: int = DEFAULT_LIMIT,
          text: str | None = None) -> list[AuditRow]:
    """Audit rows newest first. `action` matches exactly or as a dotted prefix ("referral" finds
    "referral.create"); `since` is a local date (from its start) or a stored UTC time; `text` is what the
    screen's filter holds: every word must begin a username, an MRN or an action (typed as far as it goes)."""
    if limit is not None and limit < 1:
        raise AuditError("the limit must be 1 or more")
    q = AuditEvent.select()
    if patient_mrn:
        q = q.where(AuditEvent.patient_mrn == patient_mrn.strip())
    if username:
        q = q.where(AuditEvent.username == username.strip())
    if action:
        action = action.strip().rstrip(".")
        q = q.where((AuditEvent.action == action) | starts_with(AuditEvent.action, action + "."))
    if since is not None:
        start = since if isinstance(since, dt.datetime) else _utc_start(since)
        q = q.where(AuditEvent.at >= start)
    for word in (text or "").split():
        q = q.where(_matches_word(word))
    q = q.order_by(AuditEvent.id.desc())
    if limit is not None:
        q = q.limit(limit)
    return [AuditRow(e.id, e.at, e.username, e.action, e.patient_mrn, e.object_type, e.object_id, e.outcome,
                     e.detail) for e in q]

