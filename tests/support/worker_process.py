"""A worker in a process of its own, for tests that kill it:
`python -m tests.support.worker_process DSN`.

It handles kind `block` by waiting forever (so its job is running when the test kills it) and
uses a one-second lease, so a rescue happens quickly after the kill.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import asyncpg

from config.settings import Settings
from server.queue.handlers import JobContext
from server.worker.role import running

LEASE_SECONDS = 1.0


async def block(context: JobContext) -> None:
    await asyncio.Event().wait()


def crashed(name: str, error: BaseException) -> None:
    raise SystemExit(f"worker loop {name} crashed: {error!r}")


async def main(dsn: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    settings = Settings(job_lease_seconds=LEASE_SECONDS, job_poll_interval_seconds=0.2)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        async with running(pool, dsn, settings, {"block": block}, on_crash=crashed):
            await stop.wait()
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
