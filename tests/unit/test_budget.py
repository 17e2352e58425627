"""The memory budget's rules, on their own: admission, growth, the one head allowed past
the limit, settling and release."""

from __future__ import annotations

import asyncio

import pytest

from app.files.budget import MemoryBudget, NoRoom


async def test_admission_waits_for_room_and_release_gives_it_back_once():
    budget = MemoryBudget(100)
    first, second = budget.reservation(), budget.reservation()
    await first.admit(80)
    waiting = asyncio.create_task(second.admit(50))
    await asyncio.sleep(0)
    assert not waiting.done(), "50 more do not fit under 100"
    first.release()
    first.release()
    await asyncio.wait_for(waiting, 1)
    assert budget.used == 50 and second.held == 50


async def test_growth_past_the_limit_raises_no_room_for_anyone_but_a_head():
    budget = MemoryBudget(100)
    other, head = budget.reservation(), budget.reservation()
    await other.admit(90)
    with pytest.raises(NoRoom):
        other.grow_to(150)
    head.promote()
    head.grow_to(500)  # the head may pass the limit: its commit is never waited on
    assert budget.holder is head and budget.used == 590


async def test_only_one_head_at_a_time_passes_the_limit():
    budget = MemoryBudget(100)
    first, second = budget.reservation(), budget.reservation()
    first.promote()
    second.promote()
    first.grow_to(300)
    with pytest.raises(NoRoom):
        second.grow_to(10)
    waiting = asyncio.create_task(second.admit(10))
    await asyncio.sleep(0)
    assert not waiting.done()
    first.release()  # committed: the next head may go past the limit
    await asyncio.wait_for(waiting, 1)
    second.grow_to(400)
    assert budget.holder is second


async def test_settle_sets_what_is_held_and_shrinking_wakes_waiters():
    budget = MemoryBudget(100)
    first, second = budget.reservation(), budget.reservation()
    await first.admit(100)
    waiting = asyncio.create_task(second.admit(60))
    await asyncio.sleep(0)
    first.settle(30)  # the prepared outputs hold less than the download was counted at
    await asyncio.wait_for(waiting, 1)
    assert budget.used == 90 and first.held == 30
