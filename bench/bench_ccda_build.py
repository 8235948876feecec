"""C-CDA building speed: a Referral Note for a patient with 20 problems, 30 medications and 50 results, in a
temporary seeded database (target: median under 50 ms).

    python bench/bench_ccda_build.py [--runs N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from documents.ccda import build_ccda  # noqa: E402
from models import clock, codes  # noqa: E402
from models.clinical import Medication, Problem, Result  # noqa: E402
from models.db import close_database, open_database, sqlite_url  # noqa: E402
from models.patients import Note, Patient  # noqa: E402
from models.referring import ReferralDraft  # noqa: E402
from models.seed import seed  # noqa: E402


def busy_patient() -> Patient:
    """The first seeded patient with a signed note, its lists replaced by 20 problems, 30 meds, 50 results."""
    patient = next(p for p in Patient.select().order_by(Patient.id)
                   if p.notes.where(Note.signed_at.is_null(False)).exists())
    for model in (Problem, Medication, Result):
        model.delete().where(model.patient == patient.id).execute()
    day = dt.date(2020, 1, 1)
    Problem.insert_many([dict(patient=patient.id, snomed_code=s, icd10_code=i, display=d, onset_date=day)
                         for s, i, d in codes.PROBLEMS[:20]]).execute()
    meds = (codes.MEDICATIONS * 2)[:30]
    Medication.insert_many([dict(patient=patient.id, rxnorm_code=r, display=d, dose=dose, frequency=f,
                                 route_code=codes.ORAL_ROUTE[0], route=codes.ORAL_ROUTE[1], start_date=day)
                            for r, d, dose, f in meds]).execute()
    tests = [t for panel in codes.RESULT_PANELS.values() for t in panel]
    rows = []
    for n in range(50):
        loinc, display, unit, low, high, mean, _ = tests[n % len(tests)]
        rows.append(dict(patient=patient.id, resulted_at=dt.datetime(2026, 1 + n // 11, 1 + n % 11, 8),
                         panel_code="", panel="", loinc_code=loinc, display=display, value=mean, unit=unit,
                         reference_low=low, reference_high=high, interpretation="N"))
    Result.insert_many(rows).execute()
    return patient


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    clock.freeze(dt.datetime(2026, 11, 2, 10, 0, 0))
    with tempfile.TemporaryDirectory() as folder:
        open_database(sqlite_url(Path(folder) / "bench.db"))
        try:
            seed(20)
            patient = busy_patient()
            note = patient.notes.where(Note.signed_at.is_null(False)).first()
            draft = ReferralDraft(patient_id=patient.id, note_id=note.id, channel="direct",
                                  recipient="cardio@direct.valley-cardio.example", recipient_name="Dr. Ana Ruiz")
            build_ccda(draft)  # warm-up: imports, first queries
            timings = []
            for _ in range(args.runs):
                started = time.perf_counter()
                data = build_ccda(draft)
                timings.append((time.perf_counter() - started) * 1000)
        finally:
            close_database()
    print(f"build_ccda Referral Note, 20 problems / 30 medications / 50 results ({len(data) / 1024:.0f} KB): "
          f"median {statistics.median(timings):.1f} ms, max {max(timings):.1f} ms over {args.runs} runs")


if __name__ == "__main__":
    main()
