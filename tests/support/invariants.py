"""`switchyard check` as a test's last word: the invariants hold on this test's database.

Tests call `assert_invariants(settings)` (or, for queue tests with no workflow, the database's
DSN) once their runs have settled, with no grace at all: nothing may be stalled, pending,
leased past its end or left behind by a finished execution.
"""

from __future__ import annotations

import tempfile

import msgspec

from config.settings import Settings
from server.db.check_report import CheckOptions, CheckReport, check_deployment, render_text
from server.db.database import database_addresses
from server.db.invariants import Graces
from server.storage.object_store import open_object_store

NO_GRACE = Graces(pending_seconds=0, stall_seconds=0, lease_seconds=0, finish_seconds=0)


async def check_invariants(settings: Settings, graces: Graces = NO_GRACE) -> CheckReport:
    """The checker's report on the database and object store `settings` name."""
    with database_addresses(settings) as addresses:  # as `switchyard check`: direct
        async with open_object_store(settings) as store:
            return await check_deployment(addresses.direct, store, CheckOptions(graces=graces))


async def assert_invariants(target: Settings | str, graces: Graces = NO_GRACE) -> None:
    """Every invariant holds. `target`: the app's settings (database and object store), or a
    database DSN with an empty object store (no published workflow may exist then)."""
    if isinstance(target, Settings):
        report = await check_invariants(target, graces)
    else:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = msgspec.convert({"database_url": target, "data_dir": data_dir}, Settings)
            report = await check_invariants(settings, graces)
    assert report.exit_code == 0, render_text(report)
