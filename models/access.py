"""Who may do what: the permissions of each staff role, in one table the TUI and the command line both ask.

Roles are not a ladder. Front desk finds patients and sends their referrals; a clinician does that too and also
signs notes and records that a consultant's report came back (it closes the referral loop CMS50 counts); the
administrator sets the practice up (Direct identity, certificates, staff accounts, the audit log) and, because
in a small practice the administrator covers the desk and must try a set-up end to end, may also search and
send. Nobody but a clinician signs a note or marks a report received.

The table applies only when `[access] mode = "accounts"` (see models/users.py); in open mode (a single-user
install, the demo) everything is allowed, as it always was.
"""

from __future__ import annotations

from typing import Any

ROLES = ("front-desk", "clinician", "admin")
ROLE_NAMES = {"front-desk": "front desk", "clinician": "clinician", "admin": "administrator"}

#: action -> (the roles allowed it, what it is, for a sentence: "Only clinicians may <what>.")
PERMISSIONS: dict[str, tuple[frozenset[str], str]] = {
    "search": (frozenset(ROLES), "search for patients"),
    "view-chart": (frozenset(ROLES), "open a patient's chart"),
    "prepare-referral": (frozenset(ROLES), "prepare a referral"),
    "send-referral": (frozenset(ROLES), "send a referral"),
    "sign-note": (frozenset({"clinician"}), "sign a note"),
    "mark-received": (frozenset({"clinician"}), "mark a consultant's report received"),
    "setup": (frozenset({"admin"}), "change the practice's set-up (Direct, HISP, trust anchors)"),
    "certificates": (frozenset({"admin"}), "manage the practice's certificates"),
    "users": (frozenset({"admin"}), "manage staff accounts"),
    "audit": (frozenset({"admin"}), "read the audit log"),
}
ACTIONS = tuple(PERMISSIONS)

_PLURALS = {"front-desk": "front-desk staff", "clinician": "clinicians", "admin": "administrators"}


class AccessDenied(Exception):
    """The signed-in account may not do this; the message is a sentence naming who may."""


def can(role: str | None, action: str) -> bool:
    """Whether `role` may do `action`. An unknown action is a programming error, not a refusal."""
    try:
        allowed, _ = PERMISSIONS[action]
    except KeyError:
        raise ValueError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}") from None
    return role in allowed


def who_may(action: str) -> str:
    """"clinicians", "front-desk staff, clinicians and administrators": the roles allowed `action`, in words."""
    allowed, _ = PERMISSIONS[action]
    names = [_PLURALS[role] for role in ROLES if role in allowed]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def refusal(action: str, username: str = "", role: str | None = None) -> str:
    """The sentence shown when `action` is refused: "Only clinicians may mark a consultant's report received;
    you are signed in as frontdesk (front desk)." """
    allowed, what = PERMISSIONS[action]
    who = f"; you are signed in as {username} ({ROLE_NAMES.get(role or '', role or 'no role')})" if username else ""
    return f"Only {who_may(action)} may {what}{who}."


def require(user: Any, action: str) -> None:
    """Raise AccessDenied unless `user` (anything with `username`, `role` and `active`: a User row or a
    models.users.Account; None for nobody) may do `action`."""
    if user is None:
        raise AccessDenied(f"{refusal(action)[:-1]}; nobody is signed in.")
    if not getattr(user, "active", True):
        raise AccessDenied(f"The account {user.username} is deactivated; ask your administrator.")
    if not can(user.role, action):
        raise AccessDenied(refusal(action, user.username, user.role))
