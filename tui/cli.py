"""The `referdesk` command line: the same verbs the TUI uses, for scripts, cron jobs and checks.

Heavy modules (Textual, the models) are imported inside each command so `referdesk --help` stays fast.
With `--json`, stdout carries JSON only; messages and errors go to stderr, errors with a non-zero status.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from models.safe_text import UNSAFE, one_line

EXIT_ERROR = 1


class CommandError(Exception):
    """A failure to report on stderr as it is, without a traceback."""


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _print_json(value: Any) -> None:
    # json escapes C0 controls itself; C1 and bidi controls (a name from a received C-CDA) it writes as they are,
    # and a terminal obeys them: written as \uXXXX escapes instead, the same JSON
    text = json.dumps(value, ensure_ascii=False, indent=2)
    sys.stdout.write(UNSAFE.sub(lambda found: f"\\u{ord(found.group()):04x}", text) + "\n")


def _open(args: argparse.Namespace):
    """Load the configuration and open (and migrate) the database it names."""
    from models.config import ConfigError, load_config
    from models.db import DatabaseError, open_database

    try:
        config = load_config(args.config, data_dir=args.data_dir, db_url=args.db)
        open_database(config.database_url)
    except (ConfigError, DatabaseError) as exc:
        raise CommandError(str(exc)) from exc
    from tui.commands_users import authorize_cli

    authorize_cli(args, config)  # [access] mode = "accounts": who runs this, and may they (exit 1 if not)
    return config


# --- commands ---------------------------------------------------------------------------------------------


def _run_app(config, *, demo: bool = False, start: str = "search") -> object:
    import os

    # Textual paints at most 60 times a second, and a keystroke that searches paints twice (the echo, then the
    # results): at 120 the wait between key and results halves (p95 54 -> 33 ms in bench/bench_tui.py).
    os.environ.setdefault("TEXTUAL_FPS", "120")
    from tui.app import ReferdeskApp

    app = ReferdeskApp(config=config, demo=demo, start=start)
    result = app.run()
    if app.return_code:  # the sign-in refused the user (no account, three wrong passwords)
        raise SystemExit(app.return_code)
    return result


def cmd_tui(args: argparse.Namespace) -> int:
    _run_app(_open(args))
    return 0


def _sandbox_dir(args: argparse.Namespace) -> Path:
    """--data-dir, else the per-user demo folder (kept between runs; --reset starts over)."""
    if args.data_dir is not None:
        return Path(args.data_dir).expanduser().resolve()
    from platformdirs import user_data_path

    return user_data_path("referdesk") / "demo"


def _seeded_sandbox(args: argparse.Namespace):
    """The sandbox's data folder with its database seeded (first run) and open."""
    from models.db import open_database, sqlite_url
    from models.seed import SeedError, seed
    from transports.sandbox.sandbox import reset

    folder = _sandbox_dir(args)
    if getattr(args, "reset", False):
        reset(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    open_database(sqlite_url(folder / "referdesk.db"))
    try:
        seed(args.patients)
        _say(f"Seeded {args.patients} synthetic patients into {folder}")
    except SeedError:
        pass  # seeded on an earlier run: the demo carries on where it was left
    return folder


def cmd_demo(args: argparse.Namespace) -> int:
    """The app on the demo database with the whole sandbox behind it: a Direct partner that answers, a fax
    gateway, DNS with good and bad certificates. Nothing leaves 127.0.0.1."""
    from models.config import load_config
    from transports.sandbox.sandbox import BackgroundSandbox, Sandbox, SandboxError

    folder = _seeded_sandbox(args)
    sandbox = BackgroundSandbox(Sandbox(folder, practice_outbox=False))
    try:
        try:
            sandbox.start()
        except SandboxError as exc:
            raise CommandError(f"the demo sandbox did not start: {exc}") from exc
        _run_app(load_config(data_dir=folder), demo=True)
    finally:
        sandbox.stop()
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    """The sandbox services in the foreground, with this practice's own workers; Ctrl-C stops them."""
    import asyncio
    import signal

    from transports.sandbox.sandbox import Sandbox, SandboxError

    folder = _seeded_sandbox(args)

    async def run() -> None:
        sandbox = Sandbox(folder, practice_outbox=True, report=_say)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            info = await sandbox.start()
        except SandboxError as exc:
            raise CommandError(f"the sandbox did not start: {exc}") from exc
        try:
            if args.json:
                print(json.dumps(info.as_json()), flush=True)
            else:
                _describe_sandbox(info)
            await stop.wait()
        finally:
            await sandbox.stop()
        _say("referdesk sandbox: stopped")

    asyncio.run(run())
    return 0


def _describe_sandbox(info) -> None:
    print(f"referdesk sandbox in {info.data_dir} (Ctrl-C stops it)")
    print(f"  practice        {info.practice}")
    for partner in info.partners:
        print(f"  partner         {partner}  (answers with a consult report a few seconds after a referral)")
    for kind, address in info.invalid.items():
        print(f"  {kind:<15} {address}")
    print(f"  HISP (SMTP)     127.0.0.1:{info.smtp}    DNS 127.0.0.1:{info.dns}")
    print(f"  eFax            {info.fax['number']} (gateway {info.fax['gateway_domain']}, faxes in "
          f"{info.fax['folder']})")
    print(f"From another shell:  referdesk --data-dir {info.data_dir} send --patient 1000001 --via direct "
          f"--to {info.partners[0]}", flush=True)


def cmd_seed(args: argparse.Namespace) -> int:
    config = _open(args)
    from models.seed import SeedError, seed

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done:,}/{total:,} patients", end="", file=sys.stderr, flush=True)

    try:
        report = seed(args.patients, args.seed, progress=progress)
    except SeedError as exc:
        raise CommandError(str(exc)) from exc
    if sys.stderr.isatty():
        print(file=sys.stderr)
    _say(f"Seeded {report.patients:,} patients ({report.notes:,} notes, {report.rows:,} rows) "
         f"in {report.seconds:.1f} s into {config.database_url}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    _open(args)
    from models.search import search_patients

    results = [search_patients(text, limit=args.limit) for text in args.text]
    from tui.commands_audit import record_shown

    for hits in results:  # one row per search: its counts, never its text (see record_shown)
        record_shown(args, "patient.search", [hit.mrn for hit in hits])
    if args.json:
        _print_json([[hit.as_json() for hit in hits] for hits in results])
        return 0
    for text, hits in zip(args.text, results):
        if len(args.text) > 1:
            print(f"# {text}")
        if not hits:
            _say(f"no patient matches {text!r}")
        for hit in hits:
            print(f"{hit.mrn}  {one_line(f'{hit.last_name}, {hit.first_name}')}  {hit.birth_date.isoformat()}  "
                  f"{hit.sex}")
    return 0


def cmd_notes(args: argparse.Namespace) -> int:
    _open(args)
    from models.charts import PatientNotFound, list_notes
    from tui.commands_audit import record_cli

    try:
        notes = list_notes(args.patient)
    except PatientNotFound as exc:
        record_cli(args, "note.list", outcome="not-found")  # what was typed is not kept: it may be a name
        raise CommandError(f"{exc}; find it with: referdesk search NAME") from exc
    record_cli(args, "note.list", patient_mrn=args.patient.strip(), detail=f"notes={len(notes)}")
    if args.json:
        _print_json([note.as_json() for note in notes])
        return 0
    for note in notes:
        state = "signed" if note.signed else "UNSIGNED"
        print(f"{note.id:>8}  {note.date:%Y-%m-%d %H:%M}  {one_line(note.type):<26} {one_line(note.author):<28} "
              f"{state}")
    return 0


def cmd_directory_import(args: argparse.Namespace) -> int:
    _open(args)
    from models.directory import DirectoryImportError, import_directory_file

    try:
        report = import_directory_file(args.file)
    except DirectoryImportError as exc:
        raise CommandError(str(exc)) from exc
    for where, reason in report.skipped:
        label = "line" if report.format == "nppes" else "entry"
        _say(f"{args.file}: {label} {where}: skipped: {reason}")
    summary = {"format": report.format, "imported": report.imported, "updated": report.updated,
               "skipped": len(report.skipped)}
    from tui.commands_audit import record_cli

    record_cli(args, "setup.directory-import", object_type="directory",
               detail="; ".join(f"{key}={value}" for key, value in summary.items()))
    if args.json:
        _print_json(summary)
    else:
        _say(f"Imported {report.imported}, updated {report.updated}, skipped {len(report.skipped)} "
             f"({report.format} format)")
    return 0


def cmd_directory_search(args: argparse.Namespace) -> int:
    _open(args)
    from models.directory import search_directory

    entries = search_directory(" ".join(args.text), limit=args.limit)
    if args.json:
        _print_json([
            {"npi": e.npi, "name": e.name, "organization": e.organization, "specialty": e.specialty,
             "endpoint": e.endpoint, "endpoint_type": e.endpoint_type, "city": e.city, "state": e.state}
            for e in entries
        ])
        return 0
    if not entries:
        _say("no directory entry matches")
    for e in entries:
        print(f"{e.npi:<10}  {one_line(e.name):<32} {one_line(e.organization):<32} {one_line(e.city)}, "
              f"{one_line(e.state)}  {one_line(e.endpoint)}")
    return 0


def cmd_referrals(args: argparse.Namespace) -> int:
    import datetime as dt

    _open(args)
    from models.referral_history import DEFAULT_LIMIT, HistoryError, events_by_referral, list_referrals

    bounds = {}
    for name in ("since", "until"):
        text = getattr(args, name)
        try:
            bounds[name] = dt.date.fromisoformat(text) if text else None
        except ValueError:
            raise CommandError(f"--{name} {text!r} is not a date; use YYYY-MM-DD, e.g. 2026-10-31") from None
    try:
        rows = list_referrals(status=args.status, **bounds)
    except HistoryError as exc:
        raise CommandError(str(exc)) from exc
    from tui.commands_audit import record_shown

    record_shown(args, "referral.list", [row.mrn for row in rows],
                 detail="; ".join(f"{name}={getattr(args, name)}" for name in ("status", "since", "until")
                                  if getattr(args, name)))
    if len(rows) >= DEFAULT_LIMIT:
        _say(f"showing the newest {DEFAULT_LIMIT} referrals; narrow them with --since/--until")
    if args.json:
        events = events_by_referral([row.id for row in rows])
        _print_json([{**row.as_json(), "events": [e.as_json() for e in events[row.id]]} for row in rows])
        return 0
    if not rows:
        _say("no referral matches")
    for row in rows:
        status = row.status
        if row.status_reason:
            status += f" ({row.status_reason})"
        if row.report_received_on:
            status += f" {row.report_received_on.isoformat()}"
        print(f"{row.id:>6}  {row.created_at:%Y-%m-%d %H:%M}  {row.mrn:<10} {row.channel:<6} "
              f"{one_line(row.recipient):<40} {one_line(status)}  {row.message_id}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """The Send of the message window, for scripts: the same checks (signed note, verified recipient), the same
    attachments and the same outbox."""
    config = _open(args)
    from tui.commands_users import acting_user

    username = acting_user(args, config, args.user)  # accounts mode: the signed-in account, never another
    from documents.packet import build_attachments
    from models.charts import PatientNotFound, get_patient, latest_signed_note
    from models.documents import DocumentError
    from models.referring import SECTION_KEYS, ReferralDraft, ReferralError, default_message
    from transports.submit import submit_referral
    from transports.verify import direct_settings, verify_recipient

    try:
        patient = get_patient(args.patient)
        note_id = args.note if args.note is not None else latest_signed_note(args.patient)
    except PatientNotFound as exc:
        raise CommandError(f"{exc}; find it with: referdesk search NAME") from exc
    if note_id is None:
        raise CommandError(f"patient {args.patient} has no signed note to send; name one with --note ID")
    unknown = set(args.exclude) - SECTION_KEYS
    if unknown:
        raise CommandError(f"unknown section(s) {', '.join(sorted(unknown))}; "
                           f"choose from {', '.join(sorted(SECTION_KEYS))}")
    try:
        verdict = verify_recipient(args.via, args.to, direct_settings(config) if args.via == "direct" else None,
                                   username=username)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if not verdict.ok:
        source = " (address book)" if verdict.source == "address-book" else ""
        raise CommandError(f"cannot send to {args.to!r}: {verdict.state}: {verdict.reason}{source}")
    extra = {}
    if args.via == "efax":
        _confirm_first_fax(verdict.recipient, args.confirm_number)
    if args.via == "print":
        printer = args.printer if args.printer is not None else str(config.section("print").get("printer") or "")
        extra = {"printer": printer.strip(), "ccda": args.with_ccda, "xdm": args.with_xdm}
    draft = ReferralDraft(
        patient_id=patient.id, note_id=note_id, channel=args.via, direction=args.direction,
        include_note=not args.no_encounter_note, excluded_sections=tuple(args.exclude), reason=args.reason or "",
        urgency=args.urgency, recipient=verdict.recipient, recipient_name=args.recipient_name or "",
        subject=args.subject or "",
        message=(args.message if args.message is not None
                 else default_message(patient, args.direction, args.reason or "", args.via)),
        username=username, extra=extra,
    )
    try:
        referral = submit_referral(draft, build_attachments(draft))
    except (ReferralError, DocumentError) as exc:
        raise CommandError(str(exc)) from exc
    print(referral.id)
    if args.via == "print":  # the user is waiting for the file: save (and print) now, not when a worker runs
        from transports.print_job import print_now

        done = print_now(referral.id)
        if done is not None and done[0] == "failed":
            raise CommandError(f"referral {referral.id}: {done[1]}")
        _say(f"referral {referral.id}: {done[1] if done else 'queued for the worker'}")
        return 0
    _say(f"referral {referral.id} queued for {args.via} to {verdict.recipient} ({referral.message_id})")
    return 0


def _confirm_first_fax(number: str, typed: str | None) -> None:
    """The command line's version of the screen's confirmation: the number typed a second time."""
    from models.addresses import AddressError, check_fax_number, format_fax
    from models.referring import faxed_before

    if faxed_before(number):
        return
    if typed is None:
        raise CommandError(f"nothing has been faxed to {format_fax(number)} before: check the number and repeat "
                           f"it with --confirm-number")
    try:
        same = check_fax_number(typed) == number
    except AddressError:
        same = False
    if not same:
        raise CommandError(f"--confirm-number {typed!r} is not the number given with --to ({format_fax(number)})")


def cmd_verify(args: argparse.Namespace) -> int:
    """Certificate discovery and the trust verdict for a Direct address; without trust anchors configured,
    only the form and the address book's last verdict (said so)."""
    config = _open(args)
    from transports.verify import direct_settings, verify_direct_address

    try:
        settings = direct_settings(config)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    from tui.commands_users import actor_of

    verdict = verify_direct_address(args.address, settings, username=actor_of(args))
    if settings is not None:
        return _print_direct_verdict(args, verdict)
    if args.json:
        _print_json({"address": verdict.recipient, "state": verdict.state, "reason": verdict.reason,
                     "source": verdict.source,
                     "checked_at": verdict.checked_at.isoformat() if verdict.checked_at else None})
    else:
        print(f"{verdict.recipient}: {verdict.state}" + (f" — {verdict.reason}" if verdict.reason else "")
              + (f" ({verdict.source})" if verdict.source else ""))
    return 0 if verdict.ok else EXIT_ERROR


def cmd_worker(args: argparse.Namespace) -> int:
    """The outbox worker: send what is due (and fail Direct referrals never confirmed), once or until stopped."""
    config = _open(args)
    import asyncio
    import signal

    from models.redact import redact
    from transports.outbox import OutboxWorker

    def _say(line: str) -> None:  # the worker's lines end up in a journal: a log, so redacted like one
        print(redact(line), file=sys.stderr, flush=True)

    if args.once:
        imap = None
        if config.section("inbound").get("imap_url"):  # first, so what it receives can be answered below
            from transports.imap_poll import poll_once

            imap = poll_once(config)
            _say(f"IMAP: {imap.error}" if imap.error else
                 f"IMAP: fetched {imap.fetched} (accepted {imap.accepted}, rejected {imap.rejected}, "
                 f"duplicates {imap.duplicates})")
        summary = asyncio.run(OutboxWorker(config).run_once())
        for line in summary.details:
            _say(line)
        if summary.not_ready:
            _say(f"Direct referrals stay queued: {summary.not_ready}")
        _say(f"sent {summary.sent}, retry later {summary.retried}, failed {summary.failed}, "
             f"unconfirmed {summary.unconfirmed}")
        if args.json:
            _print_json({**summary.as_json(), **({"imap": imap.as_json()} if imap else {})})
        return EXIT_ERROR if summary.not_ready or (imap and imap.error) else 0

    async def forever() -> None:
        from transports.service import Service

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        service = Service(config, report=_say, poll=args.poll)
        _say(f"referdesk worker {service.outbox.name}: running the outbox (Ctrl-C or SIGTERM stops it)")
        await service.run(stop)
        _say("referdesk worker: stopped")

    asyncio.run(forever())
    return 0


def cmd_receive(args: argparse.Namespace) -> int:
    """One inbound message from a file or stdin through the receiving pipeline."""
    from pathlib import Path

    config = _open(args)
    if args.file in (None, "-"):
        raw = sys.stdin.buffer.read()
    else:
        try:
            raw = Path(args.file).read_bytes()
        except OSError as exc:
            raise CommandError(f"{args.file}: cannot read: {exc.strerror}") from exc
    from transports.direct.receiving import opener_from_config
    from transports.inbound import receive_message

    from transports.efax.reports import FaxReports

    from tui.commands_users import actor_of

    outcome = receive_message(raw, opener=opener_from_config(config), fax_reports=FaxReports.from_config(config),
                              actor=actor_of(args))
    if args.json:
        _print_json(outcome.as_json())
    else:
        matched = f" (referral {outcome.matched_referral})" if outcome.matched_referral else ""
        print(f"{outcome.outcome}: {outcome.reason}{matched}")
    return 3 if outcome.outcome == "rejected" else 0


def _print_direct_verdict(args: argparse.Namespace, verdict) -> int:
    found = verdict.detail
    if args.json:
        _print_json(found.as_json() if found is not None else
                    {"address": verdict.recipient, "state": verdict.kind, "reason": verdict.reason})
    else:
        print(f"{verdict.recipient}: {verdict.kind}")
        print(f"  {found.reason if found is not None else verdict.reason}")
        if found is not None and found.certificate is not None:
            print(f"  certificate: {found.subject}")
            print(f"  issuer:      {found.issuer}")
            print(f"  binding:     {found.binding or 'none'}-bound, found by {found.source or 'dns'}")
            if found.not_after:
                print(f"  expires:     {found.not_after:%Y-%m-%d}")
            print(f"  sha-256:     {found.fingerprint}")
    return 0 if verdict.ok else EXIT_ERROR


def cmd_ccda(args: argparse.Namespace) -> int:
    """The Transition of Care document the referral would carry, built now from the chart."""
    config = _open(args)
    from documents.ccda import build_ccda
    from models.charts import PatientNotFound, get_patient, latest_signed_note
    from models.referring import SECTION_KEYS, ReferralDraft, ReferralError

    try:
        patient = get_patient(args.patient)
        note_id = args.note if args.note is not None else latest_signed_note(args.patient)
    except PatientNotFound as exc:
        raise CommandError(f"{exc}; find it with: referdesk search NAME") from exc
    unknown = set(args.exclude) - SECTION_KEYS
    if unknown:
        raise CommandError(f"unknown section(s) {', '.join(sorted(unknown))}; "
                           f"choose from {', '.join(sorted(SECTION_KEYS))}")
    draft = ReferralDraft(patient_id=patient.id, note_id=note_id, channel="direct", direction=args.direction,
                          include_note=note_id is not None, excluded_sections=tuple(args.exclude),
                          reason=args.reason or "", recipient_name=args.recipient_name or "")
    try:
        document = build_ccda(draft)
    except ReferralError as exc:
        raise CommandError(str(exc)) from exc
    if args.html:
        from documents.ccda_html import RenderError, render_html

        stylesheet = args.html_stylesheet or config.section("ccda").get("stylesheet")
        if not stylesheet:
            raise CommandError("--html needs HL7's CDA.xsl: give --stylesheet FILE or [ccda] stylesheet in the config")
        try:
            document = render_html(document, stylesheet)
        except RenderError as exc:
            raise CommandError(str(exc)) from exc
    from tui.commands_audit import record_cli

    to_file = bool(args.output and args.output != "-")
    record_cli(args, "ccda.export", patient_mrn=patient.mrn, object_type="note" if note_id is not None else "",
               object_id=str(note_id) if note_id is not None else "",
               detail=f"direction={args.direction}; format={'html' if args.html else 'xml'}; "
                      f"to={'file' if to_file else 'stdout'}")
    if args.output and args.output != "-":
        import os

        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(document)
        _say(f"wrote {len(document):,} bytes to {args.output}")
    else:
        sys.stdout.buffer.write(document)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Read a C-CDA or an XDM zip and report what it holds and what is wrong with it. Findings are the
    answer, not a failure: the exit status is 0 whenever the file could be read at all."""
    from pathlib import Path

    from models.config import ConfigError, load_config

    try:
        ccda = load_config(args.config, data_dir=args.data_dir, db_url=args.db).section("ccda")
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc
    from documents.ccda_validate import inspect_file

    schema = args.schema or ccda.get("schema_dir")
    schematron = args.schematron or ccda.get("schematron")
    try:
        max_mb = float(ccda.get("max_mb", 20))
    except (TypeError, ValueError):
        raise CommandError(f"[ccda] max_mb must be a number of megabytes, not {ccda.get('max_mb')!r}") from None
    try:
        report = inspect_file(args.file, schema_dir=Path(schema).expanduser() if schema else None,
                              schematron=Path(schematron).expanduser() if schematron else None,
                              max_bytes=int(max_mb * 1024 * 1024))
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    if args.json:
        _print_json(report)
        return 0
    kind = report.get("document_type") or {}
    patient = report.get("patient") or {}
    # everything below comes from the document: one line each, its control characters shown, not obeyed
    print(one_line(f"{kind.get('name') or 'unknown document'} ({kind.get('code') or '?'}, "
                   f"{kind.get('template') or '?'})"))
    print(one_line(f"Patient: {patient.get('last_name', '')}, {patient.get('first_name', '')}  ")
          + f"  born {one_line(patient.get('birth_date')) or '?'}  sex {one_line(patient.get('sex')) or '?'}")
    for section in report.get("sections", []):
        print("  " + one_line(f"{section.get('title') or '(untitled)'} [{section.get('code') or '-'}]: "
                              f"{len(section.get('entries', []))} entries"))
    findings = report.get("findings", [])
    print(f"{len(findings)} finding(s)")
    for finding in findings:
        line = f" line {finding['line']}" if finding.get("line") else ""
        print("  " + one_line(f"{finding['severity']}: {finding['message']} ({finding.get('location', '')}{line})"))
    return 0


def cmd_setup_direct(args: argparse.Namespace) -> int:
    config = _open(args)
    saved = _run_app(config, start="direct-setup")
    return 0 if saved else EXIT_ERROR


def cmd_report_cms50(args: argparse.Namespace) -> int:
    """CMS50, Closing the Referral Loop, for one year: the figures and the first referrals without a report."""
    _open(args)
    from models.cms50 import TITLE, Cms50Error, cms50_report, parse_year

    try:
        report = cms50_report(parse_year(args.year))
    except Cms50Error as exc:
        raise CommandError(f"--year: {exc}") from exc
    from tui.commands_audit import record_shown

    record_shown(args, "report.cms50", [gap.mrn for gap in report.gaps], detail=f"year={report.year}")
    if args.json:
        _print_json(report.as_json())
        return 0
    print(f"CMS50 {TITLE}, {report.year}")
    print(f"Denominator       {report.denominator:>7,}  patients with an eligible visit and a referral "
          f"made 01/01-10/31")
    print(f"Numerator         {report.numerator:>7,}  whose first referral's report came back in time")
    print(f"Performance rate  {report.rate_text:>7}")
    if not report.gaps:
        return 0
    print(f"\nGap: {len(report.gaps):,} first referral(s) without their report, oldest first")
    print(f"{'ID':>6}  {'Made':<10}  {'MRN':<10} {'Patient':<24} {'Recipient':<32} {'Status':<16} {'Days':>5}")
    for gap in report.gaps:
        status = gap.status if gap.report_received_on is None else f"{gap.status} ({gap.why})"
        print(f"{gap.referral_id:>6}  {gap.referred_on.isoformat():<10}  {gap.mrn:<10} "
              f"{one_line(gap.patient_name)[:24]:<24} {one_line(gap.recipient_name or gap.recipient)[:32]:<32} "
              f"{status:<16} {gap.days_open:>5}")
    return 0


# --- parser -----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="referdesk",
        description="Send patient referrals by Direct, eFax or print, and close the loop. "
        "Without a command, opens the app on the configured database.",
    )
    parser.add_argument("--config", metavar="FILE", help="configuration file (else $REFERDESK_CONFIG, "
                        "else the user config folder)")
    parser.add_argument("--data-dir", metavar="DIR", help="folder of the SQLite database "
                        "(else $REFERDESK_DATA_DIR, else the user data folder)")
    parser.add_argument("--db", metavar="URL", help="database URL: sqlite:///PATH or postgresql://…")
    parser.set_defaults(handler=cmd_tui)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    demo = command("demo", cmd_demo, "the app on a demo database with a local sandbox behind it: a Direct partner "
                   "practice that answers, a fax gateway, DNS with good and bad certificates (all on 127.0.0.1)")
    demo.add_argument("--reset", action="store_true", help="start over: a new database, keys and partner")
    demo.add_argument("--patients", type=int, default=2000, help="synthetic patients to seed (default 2000)")

    sandbox = command("sandbox", cmd_sandbox, "the demo's sandbox services in the foreground (DNS, HISP, fax "
                      "gateway, partner practice, this practice's workers); `referdesk --data-dir DIR <verb>` "
                      "works against it from another shell; Ctrl-C stops it")
    sandbox.add_argument("--reset", action="store_true", help="start over: a new database, keys and partner")
    sandbox.add_argument("--patients", type=int, default=2000, help="synthetic patients to seed (default 2000)")
    sandbox.add_argument("--json", action="store_true", help="first stdout line: one JSON object with the "
                         "addresses and ports, printed once everything listens")

    seed = command("seed", cmd_seed, "fill a new database with synthetic, deterministic demo data")
    seed.add_argument("--patients", type=int, required=True, metavar="N")
    seed.add_argument("--seed", type=int, default=20261126, help="random seed (same seed, same data)")

    search = command("search", cmd_search, "find patients by name, 'last, first', MRN or date of birth")
    search.add_argument("text", nargs="+", metavar="TEXT", help="one search per TEXT")
    search.add_argument("--json", action="store_true", help="one JSON list per TEXT on stdout")
    search.add_argument("--limit", type=int, default=50)

    notes = command("notes", cmd_notes, "a patient's notes (id, date, type, author, signed)")
    notes.add_argument("--patient", required=True, metavar="MRN")
    notes.add_argument("--json", action="store_true")

    referrals = command("referrals", cmd_referrals, "referral history (id, patient mrn, channel, recipient, "
                        "status, message_id, events), newest first")
    referrals.add_argument("--status", metavar="S", help="open, queued, sending, sent, delivered, "
                           "report-received, failed or cancelled")
    referrals.add_argument("--since", metavar="YYYY-MM-DD", help="made on or after this day")
    referrals.add_argument("--until", metavar="YYYY-MM-DD", help="made on or before this day")
    referrals.add_argument("--json", action="store_true")

    send = command("send", cmd_send, "queue a referral: the encounter note and Summary of Care to a verified "
                   "recipient; prints the referral id")
    send.add_argument("--patient", required=True, metavar="MRN")
    send.add_argument("--note", type=int, metavar="ID", help="default: the patient's latest signed note")
    send.add_argument("--via", required=True, choices=("direct", "efax", "print"))
    send.add_argument("--to", required=True, metavar="ADDRESS|NUMBER|FOLDER")
    send.add_argument("--direction", choices=("transferring", "receiving"), default="transferring")
    send.add_argument("--reason", metavar="R")
    send.add_argument("--urgency", choices=("routine", "urgent", "stat"), default="routine")
    send.add_argument("--subject", metavar="S")
    send.add_argument("--message", metavar="M")
    send.add_argument("--recipient-name", metavar="NAME", help="for the fax cover sheet")
    send.add_argument("--no-encounter-note", action="store_true")
    send.add_argument("--exclude", nargs="+", default=[], metavar="SECTION", help="Summary of Care sections "
                      "to leave out, e.g. goals immunizations")
    send.add_argument("--user", metavar="USERNAME", help="who is sending (for the audit log)")
    send.add_argument("--confirm-number", metavar="NUMBER", help="eFax: the first fax to a number needs the "
                      "number typed again here, as the screen asks for it to be confirmed")
    send.add_argument("--printer", metavar="QUEUE", help="print: also send the PDF to this CUPS queue "
                      "(default: [print] printer)")
    send.add_argument("--with-ccda", action="store_true", help="print: save the C-CDA XML beside the PDF")
    send.add_argument("--with-xdm", action="store_true", help="print: save the XDM package beside the PDF")

    verify = command("verify", cmd_verify, "is this Direct address usable? Certificate discovery (DNS CERT, "
                     "LDAP) and trust: verified, malformed-address, no-certificate, untrusted, expired, "
                     "revoked or dns-error")
    verify.add_argument("address", metavar="ADDRESS")
    verify.add_argument("--json", action="store_true")

    worker = command("worker", cmd_worker, "run the outbox worker: send queued referrals, retry the ones that "
                     "could not go yet, fail the ones never confirmed")
    worker.add_argument("--once", action="store_true", help="send what is due now (after polling the IMAP mailbox "
                        "once, when [inbound] imap_url is set), then exit")
    worker.add_argument("--poll", type=float, default=5.0, metavar="SECONDS", help="how often to look for "
                        "new work (default 5)")
    worker.add_argument("--json", action="store_true", help="with --once: a summary as JSON on stdout")

    receive = command("receive", cmd_receive, "process one inbound message (RFC 5322, plain or S/MIME) from "
                      "FILE or stdin: delivery notifications update the referral they answer")
    receive.add_argument("file", nargs="?", metavar="FILE|-")
    receive.add_argument("--json", action="store_true")

    ccda = command("ccda", cmd_ccda, "write the Transition of Care C-CDA for a patient (Referral Note when "
                   "transferring, CCD when receiving), built now from the chart")
    ccda.add_argument("--patient", required=True, metavar="MRN")
    ccda.add_argument("--note", type=int, metavar="ID", help="default: the patient's latest signed note")
    ccda.add_argument("--direction", choices=("transferring", "receiving"), default="transferring")
    ccda.add_argument("--exclude", nargs="+", default=[], metavar="SECTION")
    ccda.add_argument("--reason", metavar="R")
    ccda.add_argument("--recipient-name", metavar="NAME")
    ccda.add_argument("-o", "--output", metavar="FILE", help="default: stdout")
    ccda.add_argument("--html", action="store_true", help="render with HL7's CDA.xsl instead of writing XML")
    ccda.add_argument("--stylesheet", dest="html_stylesheet", metavar="FILE", help="CDA.xsl (else [ccda] "
                      "stylesheet)")

    inspect = command("inspect", cmd_inspect, "read a C-CDA or an XDM zip: document type, patient, sections "
                      "and entries, and what is wrong with it (exit 0 even when findings exist)")
    inspect.add_argument("file", metavar="FILE")
    inspect.add_argument("--json", action="store_true")
    inspect.add_argument("--schema", metavar="DIR", help="HL7 CDA schema folder for XSD validation "
                         "(else [ccda] schema_dir in the config)")
    inspect.add_argument("--schematron", metavar="FILE", help="C-CDA schematron to run too (slow; "
                         "else [ccda] schematron in the config)")

    setup = command("setup", lambda a: _usage(setup), "first-use set-up")
    setup_verbs = setup.add_subparsers(title="setup commands", metavar="WHAT")
    setup_direct = setup_verbs.add_parser("direct", help="the practice's Direct identity: address, certificate, "
                                          "HISP/SMTP, trust anchors (a keyboard wizard)")
    setup_direct.set_defaults(handler=cmd_setup_direct)

    directory = command("directory", lambda a: _usage(directory), "the provider directory: import, search")
    verbs = directory.add_subparsers(title="directory commands", metavar="VERB")
    imp = verbs.add_parser("import", help="import an NPPES Endpoint CSV or a FHIR R4 Bundle (JSON)")
    imp.set_defaults(handler=cmd_directory_import)
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--json", action="store_true")
    find = verbs.add_parser("search", help="search the directory by name, NPI, organization or city")
    find.set_defaults(handler=cmd_directory_search)
    find.add_argument("text", nargs="*", metavar="TEXT")
    find.add_argument("--json", action="store_true")
    find.add_argument("--limit", type=int, default=50)

    report = command("report", lambda a: _usage(report), "quality measures")
    report_verbs = report.add_subparsers(title="report commands", metavar="MEASURE")
    cms50 = report_verbs.add_parser("cms50", help="CMS50 Closing the Referral Loop: Receipt of Specialist Report "
                                    "(denominator, numerator, rate and the referrals behind the gap)")
    cms50.set_defaults(handler=cmd_report_cms50)
    cms50.add_argument("--year", required=True, metavar="YYYY", help="the measurement year")
    cms50.add_argument("--json", action="store_true")

    from tui.commands_audit import add_audit_parser
    from tui.commands_users import add_users_parser

    add_audit_parser(commands)
    add_users_parser(commands)
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _storage_problem(exc: BaseException) -> str | None:
    """A database that is full or locked, said plainly (models.db.database_problem), instead of a traceback."""
    if "peewee" not in sys.modules or not isinstance(exc, sys.modules["peewee"].OperationalError):
        return None
    from models.db import database_problem

    return database_problem(exc)


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from models.redact import configure_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    # Everything this process creates is its owner's only: the database, its WAL, exports, SQLite's and
    # other libraries' temporary files. Files referdesk writes itself get 0600 explicitly too (models/db.py,
    # transports/printing.py…), so library use and tests are covered; the umask catches what they miss.
    umask = os.umask(0o077)
    configure_logging()  # redacting PHI from every log record; $REFERDESK_LOG_LEVEL (models/redact.py)
    try:
        return args.handler(args)
    except CommandError as exc:
        _say(f"referdesk: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        problem = _storage_problem(exc)
        if problem is None:
            raise
        _say(f"referdesk: {problem}")
        return EXIT_ERROR
    finally:
        os.umask(umask)
        if "models.db" in sys.modules:
            sys.modules["models.db"].close_database()


if __name__ == "__main__":
    sys.exit(main())
