"""Which PostgreSQL a process uses: the configured one, or the embedded server by default."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from config.settings import Settings
from server.db.embedded import embedded_postgres


@contextmanager
def database_dsn(settings: Settings) -> Iterator[str]:
    """Yield the DSN to connect to; starts (and finally leaves) the embedded server if needed."""
    if settings.uses_embedded_postgres:
        with embedded_postgres(settings.data_path) as dsn:
            yield dsn
    else:
        yield settings.external_database_dsn
