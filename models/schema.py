"""Every table, in creation order (parents before children)."""

from models.clinical import CLINICAL_MODELS
from models.contacts import Contact, DirectoryEntry
from models.patients import Encounter, Note, Patient, PatientNameToken
from models.practice import Practice, Provider, User
from models.referrals import AuditEvent, Document, InboundMessage, OutboxJob, Referral, ReferralEvent

ALL_MODELS = [
    Practice,
    Provider,
    User,
    Patient,
    PatientNameToken,
    Encounter,
    Note,
    *CLINICAL_MODELS,
    Contact,
    DirectoryEntry,
    Referral,
    ReferralEvent,
    Document,
    OutboxJob,
    InboundMessage,
    AuditEvent,
]
