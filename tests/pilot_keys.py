"""Driving the app by keys in Pilot tests: wait for loads, press keys one by one, run keys before a snapshot.
Not a test module."""

from __future__ import annotations


async def settle(pilot) -> None:
    """Let loads and actions finish; an action's worker starts a reload worker, hence twice."""
    for _ in range(2):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def press(pilot, *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


def keys(*sequence: str):
    """A `run_before` for snap_compare: these keys, each settled."""
    async def run_before(pilot) -> None:
        await pilot.pause()
        await press(pilot, *sequence)

    return run_before
