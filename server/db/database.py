"""Which PostgreSQL a process uses: the configured one, or the embedded server by default.

A configured database may have two addresses (`DatabaseAddresses`): `pooled`, DATABASE_URL,
which may be a transaction-mode pooler (PgBouncer, RDS Proxy, Supavisor) and serves every
query, and `direct`, DATABASE_DIRECT_URL, which is used only for what needs a session of its
own: the LISTEN connections, session advisory locks and migrations. Without a pooler both are
the same address.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import msgspec

from config.settings import Settings
from server.db.embedded import embedded_postgres


class DatabaseAddresses(msgspec.Struct, frozen=True, kw_only=True):
    pooled: str  # every pooled query: no session state outside a transaction
    direct: str  # LISTEN, session advisory locks, migrations
    behind_pooler: bool
    prepared_statements: bool  # whether pooled connections cache named prepared statements


@contextmanager
def database_addresses(settings: Settings) -> Iterator[DatabaseAddresses]:
    """Yield the addresses to connect to; starts (and finally leaves) the embedded server if
    needed."""
    with database_dsn(settings) as dsn:
        embedded = settings.uses_embedded_postgres
        yield DatabaseAddresses(
            pooled=dsn,
            direct=dsn if embedded else settings.direct_database_dsn,
            behind_pooler=settings.behind_pooler,
            prepared_statements=settings.keeps_prepared_statements,
        )


@contextmanager
def database_dsn(settings: Settings) -> Iterator[str]:
    """Yield the DSN to connect to; starts (and finally leaves) the embedded server if needed."""
    if settings.uses_embedded_postgres:
        with embedded_postgres(settings.data_path) as dsn:
            yield dsn
    else:
        yield settings.external_database_dsn
