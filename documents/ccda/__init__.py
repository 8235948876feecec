"""The Transition of Care C-CDA (Referral Note / CCD) built from a referral draft."""

from documents.ccda.builder import build_ccda, document_title

__all__ = ["build_ccda", "document_title"]
