"""Getting to the referral screens by keys, shared by the referral-flow tests (Direct, eFax, print): search →
chart → Notes → note → ToC → Send Referral By → dialog → message window. Not a test module."""

from __future__ import annotations

from models.charts import list_notes
from models.contacts import Contact
from models.patients import Note

SIZES = [(80, 24), (120, 40)]
size_ids = lambda s: f"{s[0]}x{s[1]}"  # noqa: E731


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def signed_note() -> Note:
    return (Note.select().where(Note.signed_at.is_null(False)).order_by(Note.patient, Note.written_at.desc())
            .first())


def unsigned_note() -> Note:
    return Note.select().where(Note.signed_at.is_null()).order_by(Note.id).first()


def contact(state: str, reason_part: str = "") -> Contact:
    query = Contact.select().where(Contact.verification == state, Contact.direct_address != "")
    if reason_part:
        query = query.where(Contact.verification_reason.contains(reason_part))
    return query.order_by(Contact.id).first()


async def type_text(pilot, text: str, *, by_keys: bool) -> None:
    """Type into the focused input: key by key in flow tests, at once where only the result is pictured
    (Pilot spends ~60 ms a key)."""
    if by_keys:
        await pilot.press(*text)
    else:
        pilot.app.focused.insert_text_at_cursor(text)
        await pilot.pause()


async def open_chart(pilot, mrn: str, *, by_keys: bool = True) -> None:
    await pilot.pause()
    await type_text(pilot, mrn, by_keys=by_keys)
    await settle(pilot)
    await pilot.press("enter", "enter")  # into the results, then open
    await pilot.pause()


async def open_note(pilot, note: Note, *, by_keys: bool = True) -> None:
    await open_chart(pilot, note.patient.mrn, by_keys=by_keys)
    await pilot.press("2")  # Notes
    await pilot.pause()
    index = [n.id for n in list_notes(note.patient.mrn)].index(note.id)
    await pilot.press(*["down"] * index, "enter")
    await pilot.pause()


async def to_dialog(pilot, note: Note, channel_key: str = "d", *, by_keys: bool = True) -> None:
    await open_note(pilot, note, by_keys=by_keys)
    await pilot.press("t", channel_key)
    await pilot.pause()


async def to_compose(pilot, note: Note, channel_key: str = "d", *, by_keys: bool = True) -> None:
    await to_dialog(pilot, note, channel_key, by_keys=by_keys)
    await pilot.press("tab")  # to the reason field
    await pilot.press("ctrl+a", "ctrl+k")
    await type_text(pilot, "Cardiology evaluation", by_keys=by_keys)
    await pilot.press("ctrl+s")
    await settle(pilot)


def run(steps):
    async def run_before(pilot) -> None:
        await steps(pilot)
        await settle(pilot)

    return run_before
