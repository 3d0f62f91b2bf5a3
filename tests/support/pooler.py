"""A real PgBouncer in transaction mode in front of the test's PostgreSQL.

`SWITCHYARD_TEST_POOLER=pgbouncer` makes the database fixtures hand the apps and processes under
test PgBouncer's address as DATABASE_URL and the database's own as DATABASE_DIRECT_URL (what
production looks like behind PgBouncer, RDS Proxy or Supavisor), so the suite's end-to-end
subset and fault scenarios run through it (`.ci/run`'s last pass). Unset, nothing changes.

PgBouncer (Debian's 1.18: no prepared statements in transaction mode) listens on a free loopback
port with `auth_type = trust` and forwards every database name to the same name on the test's
server (`* = host=... port=...`), the embedded one's unix socket or 127.0.0.1:5432. It never
resets server connections between clients (`server_reset_query` runs in session mode only), so
session state left by one client shows under another's transactions, as in production.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlsplit

POOLER_VARIABLE: Final = "SWITCHYARD_TEST_POOLER"
PGBOUNCER: Final = os.environ.get("PGBOUNCER", "/usr/sbin/pgbouncer")
START_TIMEOUT_SECONDS: Final = 10.0
# PgBouncer refuses to run as root; when the tests run as root (CI) it drops to the embedded
# server's system user, which can reach that server's unix socket, else to nobody.
UNPRIVILEGED_USERS: Final = ("pgserver", "nobody")


def pooler_requested() -> bool:
    """Whether this run goes through a pooler; refuses values it does not know."""
    wanted = os.environ.get(POOLER_VARIABLE, "")
    if wanted not in ("", "pgbouncer"):
        raise RuntimeError(f"{POOLER_VARIABLE}={wanted!r}: only 'pgbouncer' (or unset) is known")
    return wanted == "pgbouncer"


def _unprivileged_user() -> str:
    for name in UNPRIVILEGED_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError(f"pgbouncer will not run as root and none of {UNPRIVILEGED_USERS} exists")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PgBouncer:
    """A PgBouncer process in front of the server `admin_dsn` names; `close()` stops it."""

    def __init__(self, admin_dsn: str, *, default_pool_size: int = 20) -> None:
        parts = urlsplit(admin_dsn)
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        self._host = socket_dir or parts.hostname or "127.0.0.1"
        self._server_port = parts.port or 5432
        self._user = parts.username or "postgres"
        self.port = _free_port()
        self._folder = Path(tempfile.mkdtemp(prefix="switchyard-pgbouncer-"))
        self._folder.chmod(0o755)  # readable by the unprivileged user
        config = self._write_config(default_pool_size)
        self.log_path = self._folder / "pgbouncer.log"
        command = [PGBOUNCER, str(config)]
        if os.geteuid() == 0:
            command[1:1] = ["-u", _unprivileged_user()]
        with self.log_path.open("w") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def _write_config(self, default_pool_size: int) -> Path:
        users = self._folder / "users.txt"
        users.write_text(f'"{self._user}" ""\n')
        config = self._folder / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={self._host} port={self._server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            f"admin_users = {self._user}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 4000\n"
            f"default_pool_size = {default_pool_size}\n"
            "server_check_delay = 1\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )
        for path in (users, config):
            path.chmod(0o644)
        return config

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited:\n{self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
            else:
                return
        self.close()
        raise RuntimeError(f"pgbouncer did not listen within {START_TIMEOUT_SECONDS} s")

    @property
    def pid(self) -> int:
        return self._process.pid

    def serves(self, dsn: str) -> bool:
        """Whether `dsn` is on the server behind this PgBouncer (not a cluster a test owns)."""
        parts = urlsplit(dsn)
        host = parse_qs(parts.query).get("host", [None])[0] or parts.hostname or "127.0.0.1"
        return (host, parts.port or 5432) == (self._host, self._server_port)

    def dsn(self, database: str) -> str:
        """PgBouncer's address for `database` on the server behind it."""
        return f"postgresql://{self._user}@127.0.0.1:{self.port}/{database}"

    def pooled(self, direct_dsn: str) -> str:
        """PgBouncer's address for the database `direct_dsn` names."""
        return self.dsn(urlsplit(direct_dsn).path.lstrip("/"))

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._folder, ignore_errors=True)


def database_settings(direct_dsn: str, pooler: PgBouncer | None) -> dict[str, str]:
    """The environment variables that point a process at `direct_dsn`'s database: through
    `pooler` when there is one (DATABASE_DIRECT_URL then keeps the session-capable address)."""
    if pooler is None or not pooler.serves(direct_dsn):
        return {"DATABASE_URL": direct_dsn}
    return {"DATABASE_URL": pooler.pooled(direct_dsn), "DATABASE_DIRECT_URL": direct_dsn}
