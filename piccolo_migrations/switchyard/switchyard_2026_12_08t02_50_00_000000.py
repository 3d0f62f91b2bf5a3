"""Tracing (server.tracing): each execution keeps the W3C `traceparent` of the span that
started it (the intake's), so its steps, run later by any worker, join the caller's trace.
NULL when tracing is off or the execution began without one; adding a nullable column without
a default rewrites no rows."""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.db.raw_migration import raw_migration

ID = "2026-12-08T02:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "workflow_execution.traceparent"

STATEMENTS = ["ALTER TABLE workflow_execution ADD COLUMN traceparent text"]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, STATEMENTS)
