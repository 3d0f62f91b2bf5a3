"""Which database an operator command uses: the running instance's, never a new one.

`switchyard run` on the embedded database records where its data lives in the instance file
(`$XDG_STATE_HOME/switchyard/instance.json`, by default `~/.local/state/switchyard/`): the
absolute data directory, its pid and URL. Every other command then finds the database the same
way, from any directory:

- `DATABASE_URL` or `POSTGRES_HOST` set: that database (and `--data-dir`/`DATA_DIR` or
  `./.switchyard` for the local files, as `run` has them).
- Otherwise the embedded PostgreSQL of: `--data-dir`/`DATA_DIR` if given, else `./.switchyard`
  if it holds one, else the recorded data directory. It must already hold a database (made by
  `switchyard run`): an operator command never initialises one, so it can no longer quietly
  answer "not found" from an empty second database. It joins the server if it is running and
  starts it (and stops it again) if not.

The command says on stderr which database it uses; when there is none it exits with a message
saying how to point it at one.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import msgspec

from config.settings import Settings
from server.db.embedded import PGDATA_FOLDER, process_exists

INSTANCE_FILE: Final = Path("switchyard") / "instance.json"
DEFAULT_STATE_HOME: Final = Path(".local") / "state"


class DatabaseNotFoundError(RuntimeError):
    """No database to use; the message says how to point the command at one."""


class InstanceRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What `switchyard run` leaves for the other commands (no secret in it)."""

    data_dir: str
    database: str  # "embedded" or the DSN with its password masked
    pid: int
    url: str
    started_at: dt.datetime


class LocatedDatabase(msgspec.Struct, frozen=True, kw_only=True):
    settings: Settings  # with the data directory that goes with the database
    description: str  # one line for the operator


def instance_file(environ: Mapping[str, str]) -> Path:
    state_home = environ.get("XDG_STATE_HOME") or str(Path.home() / DEFAULT_STATE_HOME)
    return Path(state_home) / INSTANCE_FILE


def database_label(settings: Settings) -> str:
    """'embedded', or the configured DSN with its password masked."""
    if settings.uses_embedded_postgres:
        return "embedded"
    parts = urlsplit(settings.external_database_dsn)
    if parts.password is None:
        return settings.external_database_dsn
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def record_instance(settings: Settings, environ: Mapping[str, str], url: str) -> Path:
    """Write the instance file for this `switchyard run` (atomically, private to the user)."""
    path = instance_file(environ)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = InstanceRecord(
        data_dir=str(settings.data_path.resolve()),
        database=database_label(settings),
        pid=os.getpid(),
        url=url,
        started_at=dt.datetime.now(dt.UTC),
    )
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(msgspec.json.format(msgspec.json.encode(record)))
    partial.replace(path)
    return path


def read_instance(environ: Mapping[str, str]) -> InstanceRecord | None:
    try:
        raw = instance_file(environ).read_bytes()
        return msgspec.json.decode(raw, type=InstanceRecord)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def locate_database(
    settings: Settings, environ: Mapping[str, str], *, data_dir_given: bool
) -> LocatedDatabase:
    """The database (and data directory) an operator command uses; see the module docstring.

    Raises:
        DatabaseNotFoundError: the embedded default holds no database anywhere it may look.
    """
    if not settings.uses_embedded_postgres:
        source = "DATABASE_URL" if settings.database_url else "POSTGRES_HOST"
        return LocatedDatabase(
            settings=settings, description=f"{database_label(settings)} ({source})"
        )
    record = read_instance(environ)
    if data_dir_given or _holds_database(settings.data_path):
        how = "--data-dir/DATA_DIR" if data_dir_given else "the current directory"
    elif record is not None and record.database == "embedded":
        settings = msgspec.structs.replace(settings, data_dir=record.data_dir)
        state = "running" if process_exists(record.pid) else "not running"
        how = (
            f"recorded by `switchyard run` (pid {record.pid}, {state}) in {instance_file(environ)}"
        )
    else:
        raise DatabaseNotFoundError(
            f"no Switchyard database found: {settings.data_path.resolve()} holds none and "
            f"{instance_file(environ)} records no `switchyard run`. Start `switchyard run` "
            "first (it records where its data lives), pass --data-dir (or DATA_DIR) of a "
            "running instance, or set DATABASE_URL"
        )
    data_dir = settings.data_path.resolve()
    if not _holds_database(data_dir):
        raise DatabaseNotFoundError(
            f"{data_dir} holds no Switchyard database (no {PGDATA_FOLDER}/ in it); only "
            "`switchyard run` creates one. Pass the --data-dir the server runs with, or set "
            "DATABASE_URL"
        )
    return LocatedDatabase(
        settings=settings, description=f"embedded PostgreSQL in {data_dir} ({how})"
    )


def _holds_database(data_dir: Path) -> bool:
    return (data_dir / PGDATA_FOLDER / "PG_VERSION").is_file()
    return True
