"""The byte budget: what a prepared record holds goes back once, and downloads wait for room."""

from __future__ import annotations

import asyncio

from app.budget import ByteBudget


async def test_a_claim_is_released_once_however_often_it_is_released():
    budget = ByteBudget(100)
    claim = budget.take(30)
    assert budget.used == 30
    claim.release()
    claim.release()
    assert budget.used == 0


async def test_waiting_for_room_blocks_at_the_limit_until_a_claim_is_released():
    budget = ByteBudget(100)
    first = budget.take(60)
    second = budget.take(40)
    waiting = asyncio.create_task(budget.wait_for_room())
    await asyncio.sleep(0)
    assert not waiting.done(), "no room at the limit"
    first.release()
    await asyncio.wait_for(waiting, 1)
    second.release()
    assert budget.used == 0
