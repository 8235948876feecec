"""Readable on a 16-colour `TERM=xterm` terminal and with NO_COLOR: every visible character must keep a
foreground different from its background once the theme's colours are reduced as such a terminal reduces them,
and meaning never rides on colour alone (the verdict and status words are checked in the flow tests)."""

from __future__ import annotations

import pytest
from rich.color import ColorSystem
from rich.segment import Segment

from textual.color import Color

from models.contacts import Contact
from models.patients import Note
from tui.app import ReferdeskApp


# Edges drawn with half blocks (radio buttons, tall borders) are decoration: when they merge into the
# background the content they frame is still there.
DECORATION = set("▐▌▊▎▔▁▂▃▄▅▆▇█▉▋▍▏")


def _reduce(color, system: ColorSystem):
    return None if color is None else color.downgrade(system)


def unreadable(app, system: ColorSystem) -> list[tuple[int, str]]:
    """Rows with text whose foreground and background become the same colour under `system`."""
    problems = []
    strips = app.screen._compositor.render_strips()
    for y, strip in enumerate(strips):
        for text, style, _ in Segment.filter_control(strip):
            if style is None or not text.strip() or set(text.strip()) <= DECORATION:
                continue
            fg, bg = _reduce(style.color, system), _reduce(style.bgcolor, system)
            if style.reverse:
                fg, bg = bg, fg
            if fg is not None and bg is not None and fg == bg:
                problems.append((y, text.strip()))
    return problems


async def visit(app, pilot):
    """Yield once per screen state worth checking, driving the app by keys."""
    note = Note.select().where(Note.signed_at.is_null(False)).order_by(Note.id).first()
    await pilot.pause()
    await pilot.press(*"ng")
    await app.workers.wait_for_complete()
    await pilot.pause()
    yield "search results"
    app.open_patient(note.patient.mrn)
    await pilot.pause()
    yield "face sheet"
    app.open_note(note.id)
    await pilot.pause()
    await pilot.press("t")
    yield "note view"
    await pilot.press("d")
    await pilot.pause()
    yield "send dialog"
    await pilot.press("tab", *"Cardiology", "ctrl+s")
    await app.workers.wait_for_complete()
    await pilot.pause()
    good = Contact.get(Contact.verification == "verified")
    app.focused.insert_text_at_cursor(good.direct_address)
    await pilot.press("enter")
    await app.workers.wait_for_complete()
    await pilot.pause()
    yield "compose, verified"
    await pilot.press("f1")
    await pilot.pause()
    yield "help"


@pytest.mark.parametrize("system", [ColorSystem.STANDARD, ColorSystem.EIGHT_BIT], ids=["16-colour", "256-colour"])
async def test_text_stays_visible_when_colours_are_reduced(seeded, direct_ready_config, system):
    app = ReferdeskApp(config=direct_ready_config)
    seen = []
    async with app.run_test(size=(80, 24)) as pilot:
        async for state in visit(app, pilot):
            seen.append(state)
            problems = unreadable(app, system)
            assert problems == [], f"{state}: {problems}"
    assert seen[-1] == "help"


async def test_no_color_keeps_the_cursor_and_highlights_distinguishable(seeded, direct_ready_config, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = ReferdeskApp(config=direct_ready_config)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.no_color
        async for state in visit(app, pilot):
            if state == "search results":
                await pilot.press("down")  # into the list: the cursor row must differ from the others
                region = app.screen.query_one("#results").region
                styles = [app.screen.get_style_at(region.x + 2, region.y + row) for row in (0, 1)]
                for line_filter in app.get_line_filters():
                    styles = [line_filter.apply([Segment("x", style)], Color(0, 0, 0))[0].style for style in styles]
                cursor, other = styles
                assert cursor.bgcolor != other.bgcolor
            assert unreadable(app, ColorSystem.STANDARD) == [], state
