"""A property-based state machine (hypothesis) of the queue against a real PostgreSQL.

Three workers enqueue, claim, heartbeat, complete, fail (retry or bury), release, pause or
crash; time passes (every lease and delay is moved into the past) and a rescuer sweeps. A
paused or crashed worker keeps its stale leases, and later operations may use them. After
every step: at most one live lease per job, terminal states are absorbing, attempts never
decrease, lease columns are set exactly on running jobs, and every fenced operation either
applied with the current lease or changed nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

import asyncpg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from server.queue import client
from server.queue.jobs import Lease, LeaseLostError, NewJob

T = TypeVar("T")
WORKERS = ("w1", "w2", "w3")
LEASE_SECONDS = 60.0
SHIFT_INTO_PAST = """
UPDATE job SET locked_until = locked_until - interval '1 hour', run_at = run_at - interval '1 hour'
"""
ROWS = "SELECT id, state, attempts, max_attempts, lease_token, locked_by, locked_until FROM job"


class QueueMachine(RuleBasedStateMachine):
    loop: ClassVar[asyncio.AbstractEventLoop]
    connections: ClassVar[dict[str, asyncpg.Connection]]

    def __init__(self) -> None:
        super().__init__()
        self.run(self.connections["admin"].execute("DELETE FROM job"))
        self.leases: dict[str, dict[int, Lease]] = {worker: {} for worker in WORKERS}
        self.attempts: dict[int, int] = {}
        self.finished: set[int] = set()  # completed: the row is gone for good
        self.dead: set[int] = set()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def row(self, job_id: int) -> asyncpg.Record | None:
        return self.run(self.connections["admin"].fetchrow(ROWS + " WHERE id = $1", job_id))

    def is_current(self, lease: Lease) -> bool:
        row = self.row(lease.job_id)
        return (
            row is not None
            and row["state"] == "running"
            and row["lease_token"] == lease.lease_token
        )

    def any_lease(self) -> bool:
        return any(self.leases.values())

    @initialize(count=st.integers(1, 4), max_attempts=st.integers(1, 3))
    def start_with_jobs(self, count: int, max_attempts: int) -> None:
        self.enqueue(count, max_attempts)

    @rule(count=st.integers(1, 3), max_attempts=st.integers(1, 3))
    def enqueue(self, count: int, max_attempts: int) -> None:
        jobs = [NewJob(kind="k", max_attempts=max_attempts)] * count
        self.run(client.enqueue_jobs(self.connections["admin"], jobs))

    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(1, 3))
    def claim(self, worker: str, limit: int) -> None:
        claimed = self.run(
            client.claim_jobs(
                self.connections[worker], worker_id=worker, limit=limit, lease_seconds=LEASE_SECONDS
            )
        )
        for job in claimed:
            assert job.id not in self.finished | self.dead
            assert job.attempts == self.attempts.get(job.id, 0) + 1
            self.leases[worker][job.id] = job.lease

    @precondition(any_lease)
    @rule(data=st.data(), outcome=st.sampled_from(["complete", "retry", "bury", "release"]))
    def settle(self, data: st.DataObject, outcome: str) -> None:
        worker = data.draw(st.sampled_from([w for w in WORKERS if self.leases[w]]))
        lease = data.draw(st.sampled_from(sorted(self.leases[worker].values(), key=str)))
        current, before = self.is_current(lease), self.row(lease.job_id)
        applied = self.run(self.apply(worker, lease, outcome))
        assert applied == current, f"{outcome} with a {'current' if current else 'stale'} lease"
        if not applied:
            assert self.row(lease.job_id) == before, "a refused change must change nothing"
        del self.leases[worker][lease.job_id]
        if applied and outcome == "complete":
            self.finished.add(lease.job_id)

    async def apply(self, worker: str, lease: Lease, outcome: str) -> bool:
        connection = self.connections[worker]
        try:
            if outcome == "complete":
                await client.complete_job(connection, lease)
            elif outcome == "retry":
                await client.retry_job(connection, lease, delay_seconds=30, error="retry")
            elif outcome == "bury":
                await client.mark_job_dead(connection, lease, error="bury")
            else:
                return bool(await client.release_jobs(connection, [lease], reason="release"))
        except LeaseLostError:
            return False
        return True

    @rule(worker=st.sampled_from(WORKERS))
    def heartbeat(self, worker: str) -> None:
        leases = list(self.leases[worker].values())
        expected = {lease.job_id for lease in leases if self.is_current(lease)}
        kept = self.run(
            client.extend_leases(self.connections[worker], leases, lease_seconds=LEASE_SECONDS)
        )
        assert kept == expected

    @rule(worker=st.sampled_from(WORKERS))
    def crash(self, worker: str) -> None:
        self.leases[worker].clear()  # it never comes back; its jobs wait for the rescuer

    @rule()
    def time_passes(self) -> None:
        self.run(self.connections["admin"].execute(SHIFT_INTO_PAST))

    @rule()
    def rescue(self) -> None:
        expired = self.run(
            self.connections["admin"].fetch(
                "SELECT id FROM job WHERE state = 'running' AND locked_until < now()"
            )
        )
        rescued = self.run(client.rescue_expired_jobs(self.connections["admin"], limit=100))
        assert {job.id for job in rescued} == {row["id"] for row in expired}

    @invariant()
    def queue_is_consistent(self) -> None:
        rows = {row["id"]: row for row in self.run(self.connections["admin"].fetch(ROWS))}
        assert not self.finished & rows.keys(), "a completed job came back"
        for job_id in self.dead:
            assert rows[job_id]["state"] == "dead", "a dead job left the dead state"
        for job_id, row in rows.items():
            assert row["attempts"] >= self.attempts.get(job_id, 0), "attempts decreased"
            assert row["attempts"] <= row["max_attempts"]
            running = row["state"] == "running"
            lease_columns = (row["lease_token"], row["locked_by"], row["locked_until"])
            assert all(lease_columns) if running else not any(lease_columns)
            holders = [w for w in WORKERS if self.holds_current(w, row)]
            assert len(holders) <= 1, f"job {job_id} has live leases in {holders}"
            self.attempts[job_id] = row["attempts"]
            if row["state"] == "dead":
                self.dead.add(job_id)

    def holds_current(self, worker: str, row: asyncpg.Record) -> bool:
        lease = self.leases[worker].get(row["id"])
        return (
            lease is not None
            and row["state"] == "running"
            and lease.lease_token == row["lease_token"]
        )


def test_queue_state_machine_keeps_its_invariants(database_dsn: str) -> None:
    loop = asyncio.new_event_loop()
    names = ("admin", *WORKERS)
    connections = {name: loop.run_until_complete(asyncpg.connect(database_dsn)) for name in names}
    QueueMachine.loop, QueueMachine.connections = loop, connections
    try:
        run_state_machine_as_test(
            QueueMachine,
            settings=settings(
                max_examples=100,
                stateful_step_count=40,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        for connection in connections.values():
            loop.run_until_complete(connection.close())
        loop.close()
