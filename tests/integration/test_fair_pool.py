"""The process's connection pool serves waiters in turn: a request that waits for a
connection is never overtaken by borrowers that came after it, however hard they hammer."""

from __future__ import annotations

import asyncio
from typing import Final

from server.db.pool import asyncpg_pool, open_pool
from tests.support.waiting import eventually

POOL_SIZE: Final = 2
BORROWERS: Final = 30  # job handlers acquiring and releasing in a tight loop
REQUESTS: Final = 20  # the API's acquisitions, one after another


async def test_a_waiting_request_is_served_before_borrowers_that_came_after_it(
    database_dsn: str,
) -> None:
    handed_out = 0
    stopping = False
    served_after: list[int] = []
    async with open_pool(database_dsn, min_size=POOL_SIZE, max_size=POOL_SIZE) as engine:
        pool = asyncpg_pool(engine)

        async def borrow() -> None:
            nonlocal handed_out
            while not stopping:
                async with pool.acquire() as connection:
                    handed_out += 1
                    await connection.execute("SELECT 1")

        borrowers = [asyncio.create_task(borrow()) for _ in range(BORROWERS)]
        try:
            await eventually(lambda: handed_out > 10 * BORROWERS, what="borrowers busy")
            for _ in range(REQUESTS):
                asked = handed_out
                async with pool.acquire() as connection:
                    served_after.append(handed_out - asked)
                    await connection.execute("SELECT 1")
        finally:
            stopping = True
            await asyncio.gather(*borrowers)
    # In turn: at most every borrower (each in line at most once) and the holders go first.
    assert max(served_after) <= BORROWERS + POOL_SIZE, served_after
