"""One Download/Print referral through the outbox: its stored files saved in the chosen folder (owner-only,
never over an existing file) and, with a printer chosen, the PDF sent to CUPS. Saved (and printed) is
`delivered`; a folder that cannot take the files or a printer that refuses the job is `failed` with the reason,
and not retried, since saving twice would leave two copies of the patient's packet."""

from __future__ import annotations

import json
import tempfile

from models.audit import record_referral
from models.documents import referral_files
from models.outbox import ClaimedJob, job_delivered, job_failed
from models.referrals import Referral
from transports.printing import PrintError, print_pdf, write_files

PRINTER_PREFIX = "printer:"


def print_options(payload: bytes | None) -> dict:
    try:
        options = json.loads(bytes(payload or b"{}"))  # PostgreSQL hands a BYTEA back as a memoryview
    except ValueError:
        return {}
    return options if isinstance(options, dict) else {}


def run_print_job(job: ClaimedJob, *, lp: str = "lp") -> tuple[str, str]:
    """Save (and print) the claimed job's referral; returns (delivered | failed, what happened). A recipient
    `printer:QUEUE` only prints (the PDF goes to CUPS from a private temporary folder, removed afterwards)."""
    referral = Referral.get_by_id(job.referral_id)
    files = [(f.filename, bytes(f.content)) for f in referral_files(referral.id)]
    if referral.recipient.startswith(PRINTER_PREFIX):
        printer = referral.recipient[len(PRINTER_PREFIX):]
        with tempfile.TemporaryDirectory(prefix="referdesk-print-") as scratch:
            state, what = _deliver(job, referral.id, scratch, files[:1], printer, lp, keep=False)
    else:
        printer = str(print_options(job.payload).get("printer") or "").strip()
        state, what = _deliver(job, referral.id, referral.recipient, files, printer, lp, keep=True)
    # Audited by printer queue only: the folder's path (and the reason, which names it) may carry a name.
    record_referral("referral.print" if printer else "referral.export", referral.id,
                    outcome="ok" if state == "delivered" else "failed",
                    detail=f"printer={printer}" if printer else "saved to a folder")
    return state, what


def _deliver(job: ClaimedJob, referral_id: int, folder: str, files: list[tuple[str, bytes]], printer: str,
             lp: str, *, keep: bool) -> tuple[str, str]:
    try:
        paths = write_files(folder, files)
    except PrintError as exc:
        job_failed(job, f"not saved: {exc}")
        return "failed", str(exc)
    done = f"saved {', '.join(path.name for path in paths)} in {paths[0].parent}" if keep and paths else ""
    if printer:
        pdf = next((path for path in paths if path.suffix.lower() == ".pdf"), None)
        try:
            if pdf is None:
                raise PrintError("there is no PDF to print")
            job_id = print_pdf(pdf, printer, title=f"referdesk referral {referral_id}", lp=lp)
        except PrintError as exc:
            reason = f"{done}, but not printed: {exc}" if done else f"not printed: {exc}"
            job_failed(job, reason)
            return "failed", reason
        printed = f"sent to printer {printer}" + (f" as job {job_id}" if job_id else "")
        done = f"{done}; {printed}" if done else printed
    job_delivered(job, done)
    return "delivered", done


def print_now(referral_id: int, *, worker: str = "print", lp: str = "lp") -> tuple[str, str] | None:
    """Save (and print) a just-made referral while the user waits, rather than when a worker comes round;
    None if a worker already has it."""
    from models.outbox import claim_job, pending_job_id

    job_id = pending_job_id(referral_id)
    job = claim_job(worker, job_id) if job_id is not None else None
    if job is None:
        return None
    return run_print_job(job, lp=lp)
