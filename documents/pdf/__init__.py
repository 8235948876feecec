"""The referral packet as a PDF (fpdf2): optional fax cover sheet, referral letter, clinical summary, note."""

from documents.pdf.packet import build_note_pdf, build_referral_pdf

__all__ = ["build_note_pdf", "build_referral_pdf"]
