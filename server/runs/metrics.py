"""Prometheus metrics of workflow runs: step durations by kind and status, finished executions."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from server.queue.jobs import DURATION_BUCKETS_SECONDS

STEP_DURATION = Histogram(
    "switchyard_step_duration_seconds",
    "Time one step attempt took, by step kind and the status it ended in.",
    ["kind", "status"],
    buckets=DURATION_BUCKETS_SECONDS,
)
# By workflow id: one series per workflow and final status, bounded by the workflows a team
# defines (as n8n's optional workflow-id label), so a dashboard can show each one's failure rate.
EXECUTIONS_FINISHED = Counter(
    "switchyard_executions_finished",
    "Executions that reached a final status, by status and workflow id.",
    ["status", "workflow_id"],
)
