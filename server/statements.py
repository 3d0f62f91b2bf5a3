"""SQL statements with named parameters: `:name` where it is used, `$n` only for asyncpg.

A statement is written (or assembled from fragments) with `:execution_id`-style parameters;
`Statement` numbers them once, at import, and binds values by name on every call, so a
fragment that gains a parameter cannot shift another's: a missing or unknown name raises at
the call instead of sending values in the wrong places. A name used twice is one parameter.
Casts (`::jsonb`) are not parameters; a name is lower case, as in Python.

    START = Statement("UPDATE step_execution SET status = 'RUNNING' WHERE id = :step_id")
    await START.execute(connection, step_id=step_id)
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# `:name`, but not the `::` of a cast (neither colon of `::type` starts a parameter).
PARAMETER: Final = re.compile(r"(?<![:\w]):(?!:)([a-z_][a-z0-9_]*)")


# A raw connection or one borrowed from a pool (Piccolo's `tx.connection` is the latter).
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy


class Statement:
    """One SQL statement; `text` is what PostgreSQL sees, `names` its parameters in order."""

    __slots__ = ("names", "text")

    def __init__(self, sql: str) -> None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        self.text: Final = PARAMETER.sub(number, sql)
        self.names: Final = tuple(names)

    def args(self, values: dict[str, Any]) -> list[Any]:
        """The values in `$n` order.

        Raises:
            TypeError: a parameter has no value, or a value no parameter.
        """
        if len(values) != len(self.names) or any(name not in values for name in self.names):
            missing = sorted(set(self.names) - set(values))
            unknown = sorted(set(values) - set(self.names))
            raise TypeError(f"statement parameters: missing {missing}, unknown {unknown}")
        return [values[name] for name in self.names]

    async def execute(self, connection: Connection, **values: Any) -> str:
        status: str = await connection.execute(self.text, *self.args(values))
        return status

    async def fetch(self, connection: Connection, **values: Any) -> list[Any]:
        rows: list[Any] = await connection.fetch(self.text, *self.args(values))
        return rows

    async def fetchrow(self, connection: Connection, **values: Any) -> Any:
        return await connection.fetchrow(self.text, *self.args(values))

    async def fetchval(self, connection: Connection, **values: Any) -> Any:
        return await connection.fetchval(self.text, *self.args(values))
