from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from server.supervision import LoopExitedError, start_supervised


async def test_a_crashed_loop_is_logged_and_reported() -> None:
    crashes: list[tuple[str, BaseException]] = []

    async def loop() -> None:
        raise ConnectionError("database went away")

    with capture_logs() as logs:
        task = start_supervised("claim", loop(), on_crash=lambda n, e: crashes.append((n, e)))
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert [(name, type(error)) for name, error in crashes] == [("claim", ConnectionError)]
    assert logs[0]["event"] == "role_loop_crashed"
    assert logs[0]["loop"] == "claim"


async def test_a_loop_that_returns_while_not_stopping_counts_as_a_crash() -> None:
    crashes: list[BaseException] = []

    async def loop() -> None:
        return

    with capture_logs():
        await start_supervised("tick", loop(), on_crash=lambda _, e: crashes.append(e))
        await asyncio.sleep(0)
    assert isinstance(crashes[0], LoopExitedError)


async def test_cancelled_or_stopping_loops_are_not_crashes() -> None:
    crashes: list[BaseException] = []

    async def forever() -> None:
        await asyncio.Event().wait()

    async def done() -> None:
        return

    task = start_supervised("forever", forever(), on_crash=lambda _, e: crashes.append(e))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await start_supervised(
        "done", done(), on_crash=lambda _, e: crashes.append(e), stopping=lambda: True
    )
    await asyncio.sleep(0)
    assert crashes == []
