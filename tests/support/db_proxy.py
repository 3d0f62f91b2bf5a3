"""A TCP proxy in front of the test's PostgreSQL that can take the database away and back.

`cut()` closes every proxied connection and refuses new ones, as a database that went down or
a network that dropped would; `restore()` accepts again. The app under test connects through
`dsn`, so what it sees is exactly an outage, with no process of ours to stop or restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit, urlunsplit


class DatabaseProxy:
    def __init__(self, target_dsn: str) -> None:
        parts = urlsplit(target_dsn)
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        self._unix_path = f"{socket_dir}/.s.PGSQL.{parts.port or 5432}" if socket_dir else None
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._parts = parts
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def dsn(self) -> str:
        user = self._parts.username or "postgres"
        netloc = f"{user}@127.0.0.1:{self.port}"
        return urlunsplit(("postgresql", netloc, self._parts.path, "", ""))

    async def restore(self) -> None:
        for _ in range(50):  # the port may take a moment to be free again after a cut
            try:
                self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"port {self.port} stayed busy")
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._unix_path:
            upstream = await asyncio.open_unix_connection(self._unix_path)
        else:
            upstream = await asyncio.open_connection(*self._target)
        self._writers |= {writer, upstream[1]}
        pumps = [
            asyncio.create_task(self._pump(reader, upstream[1])),
            asyncio.create_task(self._pump(upstream[0], writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        self._tasks.difference_update(pumps)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)


@asynccontextmanager
async def database_proxy(target_dsn: str) -> AsyncIterator[DatabaseProxy]:
    proxy = DatabaseProxy(target_dsn)
    await proxy.restore()
    try:
        yield proxy
    finally:
        await proxy.cut()
        for task in list(proxy._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
