"""`referdesk audit`: the audit log from the command line, newest first, and a check of its hash chain.

Wired into tui/cli.py's parser by `add_audit_parser(commands)`; like every verb, it imports the models only
when it runs, so `referdesk --help` stays fast.

Reading the log is itself audited: `audit.view` (which filters, how many rows) once the rows are read and
`audit.verify` (intact or broken, at which row) once the chain is checked — each written after the answer was
worked out, so the answer never counts its own row. `record_cli` is how every other verb of the command line
writes its row too (tui/cli.py).
"""

from __future__ import annotations

import argparse
from typing import Iterable

DEFAULT_LIMIT = 500


def record_cli(args: argparse.Namespace, action: str, *, patient_mrn: str = "", object_type: str = "",
               object_id: str = "", outcome: str = "ok", detail: str = "") -> None:
    """One audit row for what a command-line verb did or showed: by whoever runs it (tui.commands_users.actor_of:
    the signed-in account, else the login), `via=cli` first in the detail. Called before the verb prints, so
    patient data never reaches the screen unrecorded; if the row cannot be written the verb fails."""
    from models.audit import record
    from tui.commands_users import actor_of

    record(action, username=actor_of(args), patient_mrn=patient_mrn, object_type=object_type, object_id=object_id,
           outcome=outcome, detail="; ".join(part for part in ("via=cli", detail) if part))


def record_shown(args: argparse.Namespace, action: str, mrns: Iterable[str], *, rows: int | None = None,
                 detail: str = "") -> None:
    """The audit row of a verb that lists patients (`search`, `referrals`, `report cms50`): how many rows and how
    many patients it showed, and the MRN only when they were all one patient's.

    Why not more: what a search was for (its text: a name, a date of birth) is itself PHI, and the audit log is
    read by people who need not see charts (models/audit.py), so the text is never kept. Why not every MRN: a
    list shows one line of demographics per patient, not their charts; one row per patient listed would bury the
    chart views that matter under every name a broad search touched, and `referdesk audit --patient` would say
    each of fifty people had been "looked at" when one was searched for. A list that shows a single patient is a
    look-up of that patient, so it carries that MRN. Opening a chart, a note or a document is recorded on its own.
    """
    shown = [mrn for mrn in mrns if mrn]
    patients = sorted(set(shown))
    counts = f"rows={len(shown) if rows is None else rows}; patients={len(patients)}"
    record_cli(args, action, patient_mrn=patients[0] if len(patients) == 1 else "",
               detail="; ".join(part for part in (counts, detail) if part))


def cmd_audit(args: argparse.Namespace) -> int:
    """List audit rows (id, time, user, action, patient MRN, object, outcome), or with --verify check that no
    row was edited, deleted or inserted since it was written."""
    import datetime as dt

    from tui.cli import EXIT_ERROR, CommandError, _open, _print_json, _say

    _open(args)
    from models.audit import AuditError, query, verify_chain

    if args.verify:
        report = verify_chain()
        record_cli(args, "audit.verify", outcome="intact" if report.ok else "broken",
                   detail=f"rows={report.rows}" + (f"; first_bad={report.first_bad_id}" if not report.ok else ""))
        if args.json:
            _print_json(report.as_json())
        elif report.ok:
            print(f"audit chain intact: {report.rows} row{'s' if report.rows != 1 else ''}")
        else:
            print(f"audit chain BROKEN at row {report.first_bad_id} (of {report.rows}): {report.reason}")
        return 0 if report.ok else EXIT_ERROR
    since = None
    if args.since:
        try:
            since = dt.date.fromisoformat(args.since)
        except ValueError:
            raise CommandError(f"--since {args.since!r} is not a date; use YYYY-MM-DD, e.g. 2026-10-31") from None
    try:
        rows = query(patient_mrn=args.patient, username=args.user, action=args.action, since=since,
                     limit=args.limit)
    except AuditError as exc:
        raise CommandError(f"--limit: {exc}") from exc
    # The filters are ids and codes; a --patient that matched nothing is not kept (it may be a mistyped name).
    filters = [f"{name}={value}" for name, value in (("user", args.user), ("action", args.action),
                                                        ("since", args.since)) if value]
    if args.patient and not rows:
        filters.append("patient=unmatched")
    record_cli(args, "audit.view", patient_mrn=args.patient.strip() if args.patient and rows else "",
               detail="; ".join([f"rows={len(rows)}", *filters]))
    if args.json:
        _print_json([row.as_json() for row in rows])
        return 0
    if not rows:
        _say("no audit row matches")
        return 0
    if len(rows) >= args.limit:
        _say(f"showing the newest {args.limit} rows; narrow them with --patient, --user, --action or --since")
    from models import clock

    for row in rows:
        print(f"{row.id:>7}  {clock.local(row.at):%Y-%m-%d %H:%M:%S}  {row.username or '-':<16} {row.action:<24} "
              f"{row.patient_mrn or '-':<10} {row.object or '-':<24} {row.outcome}"
              + (f"  {row.detail}" if row.detail and args.detail else ""))
    return 0


def add_audit_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `audit` to the top-level subcommands (`commands` in tui.cli.build_parser)."""
    help_text = ("the audit log, newest first (id, local time, user, action, patient MRN, object, outcome); "
                 "--verify checks its hash chain")
    audit = commands.add_parser("audit", help=help_text, description=help_text)
    audit.set_defaults(handler=cmd_audit)
    audit.add_argument("--patient", metavar="MRN", help="only rows about this patient")
    audit.add_argument("--user", metavar="U", help="only rows by this user")
    audit.add_argument("--action", metavar="A", help="only this action, or a family of them: 'referral' "
                       "matches referral.create, referral.fax, …")
    audit.add_argument("--since", metavar="YYYY-MM-DD", help="rows from this (local) day on")
    audit.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                       help=f"at most N rows (default {DEFAULT_LIMIT})")
    audit.add_argument("--detail", action="store_true", help="add each row's detail (ids and codes)")
    audit.add_argument("--json", action="store_true", help="the rows (or with --verify the verdict) as JSON")
    audit.add_argument("--verify", action="store_true", help="check the hash chain: exit 0 when intact, 1 "
                       "naming the first row edited, deleted or inserted")
    return audit
