"""`switchyard executions list|show|retry|cancel`, `switchyard events replay ID` and
`switchyard jobs dead|requeue`: what an operator reaches for when a run went wrong."""

from __future__ import annotations

import argparse
import uuid

from config.settings import Settings
from server.cli.output import print_json, print_table
from server.db.execution_queries import get_execution_detail, list_executions
from server.db.pool import asyncpg_pool, piccolo_database
from server.engine.planning import ExecutionStatus
from server.queue.admin import dead_jobs_command, requeue_command
from server.runs import control
from server.runs.replay import replay_event

STATUSES = tuple(status.value for status in ExecutionStatus)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    executions = commands.add_parser("executions", help="list, show, retry or cancel executions")
    actions = executions.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="executions, newest first")
    listing.add_argument("--workflow", type=uuid.UUID, help="only this workflow's")
    listing.add_argument("--status", choices=STATUSES, type=str.upper)
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=list_command)
    show = actions.add_parser("show", help="one execution with its steps (JSON)")
    show.add_argument("execution_id", type=uuid.UUID)
    show.set_defaults(handler=show_command)
    retry = actions.add_parser("retry", help="run a FAILED execution again")
    retry.add_argument("execution_id", type=uuid.UUID)
    retry.add_argument("--from-start", action="store_true", help="from the entry step")
    retry.set_defaults(handler=retry_command, audit="execution.retry", audit_target="execution_id")
    cancel = actions.add_parser("cancel", help="cancel an unfinished execution")
    cancel.add_argument("execution_id", type=uuid.UUID)
    cancel.set_defaults(
        handler=cancel_command, audit="execution.cancel", audit_target="execution_id"
    )

    events = commands.add_parser("events", help="replay a recorded event")
    event_actions = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    replay = event_actions.add_parser("replay", help="accept an event's payload again")
    replay.add_argument("event_id", type=uuid.UUID)
    replay.set_defaults(handler=replay_command, audit="event.replay", audit_target="event_id")

    jobs = commands.add_parser("jobs", help="list dead jobs, or re-queue one")
    job_actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    dead = job_actions.add_parser("dead", help="list the most recently dead jobs")
    dead.add_argument("--limit", type=int, default=50)
    dead.set_defaults(handler=dead_jobs)
    requeue = job_actions.add_parser("requeue", help="re-queue a dead job")
    requeue.add_argument("job_id", type=int)
    requeue.set_defaults(handler=requeue_job, audit="job.requeue", audit_target="job_id")


async def list_command(args: argparse.Namespace, settings: Settings) -> int:
    items = await list_executions(
        limit=args.limit, before=None, workflow_id=args.workflow, status=args.status
    )
    print_table(
        ("ID", "WORKFLOW", "STATUS", "TRIGGER", "CREATED", "ERROR"),
        [
            (e.id, e.workflow_id, e.status, e.trigger_type, e.created_at, (e.error or "")[:80])
            for e in items
        ],
    )
    return 0


async def show_command(args: argparse.Namespace, settings: Settings) -> int:
    print_json(await get_execution_detail(args.execution_id))
    return 0


async def retry_command(args: argparse.Namespace, settings: Settings) -> int:
    await control.retry_execution(args.execution_id, from_start=args.from_start)
    detail = await get_execution_detail(args.execution_id)
    print_json({"id": detail.id, "status": detail.status})
    return 0


async def cancel_command(args: argparse.Namespace, settings: Settings) -> int:
    await control.cancel_execution(args.execution_id)
    detail = await get_execution_detail(args.execution_id)
    print_json({"id": detail.id, "status": detail.status})
    return 0


async def replay_command(args: argparse.Namespace, settings: Settings) -> int:
    accepted = await replay_event(args.event_id)
    print_json(
        {
            "event_id": accepted.event_id,
            "replay_of": args.event_id,
            "outcome": accepted.outcome,
            "execution_ids": accepted.execution_ids,
        }
    )
    return 0


async def dead_jobs(args: argparse.Namespace, settings: Settings) -> int:
    async with asyncpg_pool(piccolo_database()).acquire() as connection:
        print(await dead_jobs_command(connection, limit=args.limit))
    return 0


async def requeue_job(args: argparse.Namespace, settings: Settings) -> int:
    async with asyncpg_pool(piccolo_database()).acquire() as connection:
        print(await requeue_command(connection, args.job_id))
    return 0
