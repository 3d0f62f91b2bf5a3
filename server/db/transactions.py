"""Piccolo's engine with transactions that always give their connection back.

Piccolo's `PostgresTransaction` releases its connection at the end of `__aexit__` without
`try/finally`, and `__aenter__` keeps the connection it acquired when `BEGIN` fails: during a
database outage each such failure took one connection out of the pool for good, until the pool
was empty and `Pool.close()` waited forever at shutdown. `ReleasingTransaction` gives the
connection back on every path (terminated first when its state is unknown: a failed BEGIN,
COMMIT or ROLLBACK), and a failed rollback never hides the error that caused it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import structlog
from piccolo.engine.postgres import PostgresEngine, PostgresTransaction

log = structlog.get_logger(__name__)


class ReleasingTransaction(PostgresTransaction):
    async def __aenter__(self) -> PostgresTransaction:
        if self._parent is not None:
            return self._parent
        self.connection = await self.get_connection()  # type: ignore[no-untyped-call]
        try:
            self.transaction = self.connection.transaction()
            await self.begin()  # type: ignore[no-untyped-call]
        except BaseException:
            await self._give_back(broken=True)
            raise
        self.context = self.engine.current_transaction.set(self)
        return self

    async def __aexit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if self._parent:
            return exception is None
        broken = False
        try:
            if exception is not None:
                if not self._rolled_back:
                    await self._rollback_after(exception)
            elif not self._committed and not self._rolled_back:
                await self.commit()  # type: ignore[no-untyped-call]
        except BaseException:
            broken = True
            raise
        finally:
            self.engine.current_transaction.reset(self.context)
            await self._give_back(broken=broken or self.connection.is_closed())
        return exception is None

    async def _rollback_after(self, exception: BaseException) -> None:
        try:
            await self.rollback()  # type: ignore[no-untyped-call]
        except Exception as error:  # noqa: BLE001 - the original error is the one to raise
            log.warning(
                "transaction_rollback_failed", error=repr(error), cause=type(exception).__name__
            )
            self.connection.terminate()

    async def _give_back(self, *, broken: bool) -> None:
        if broken:
            self.connection.terminate()  # its state is unknown: never hand it out again
        pool = self.engine.pool
        if pool is None:
            await self.connection.close()
            return
        try:
            await pool.release(self.connection)
        except Exception as error:  # noqa: BLE001 - a connection that cannot be reset is dropped
            log.warning("connection_release_failed", error=repr(error))
            self.connection.terminate()


class ReleasingEngine(PostgresEngine):
    """`PostgresEngine` whose transactions are `ReleasingTransaction`s."""

    def transaction(self, allow_nested: bool = True) -> Any:
        return ReleasingTransaction(engine=self, allow_nested=allow_nested)
