"""The referral packet as a PDF (fpdf2): optional fax cover sheet, referral letter, clinical summary, note."""

from documents.pdf.packet import build_referral_pdf

__all__ = ["build_referral_pdf"]
