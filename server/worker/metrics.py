"""The worker's Prometheus metrics (module level, in the default registry).

`failed` counts every failed attempt, retried or not; `dead` counts jobs given up on, so
`failed - dead` is the retries. Children are cached per kind because `labels()` takes a lock
and a dict lookup on every call, which shows at thousands of jobs a second.
"""

from __future__ import annotations

import functools
from typing import Final

import msgspec
from prometheus_client import Counter, Gauge, Histogram

from server.queue.jobs import DURATION_BUCKETS_SECONDS

# Job kinds come from enqueuers; past this many distinct ones children are rebuilt, not cached.
CACHED_KINDS: Final = 256

JOBS_CLAIMED = Counter("switchyard_jobs_claimed", "Jobs claimed by this worker.", ["kind"])
JOBS_SUCCEEDED = Counter("switchyard_jobs_succeeded", "Jobs completed successfully.", ["kind"])
JOBS_FAILED = Counter("switchyard_jobs_failed", "Failed job attempts, retried or not.", ["kind"])
JOBS_DEAD = Counter("switchyard_jobs_dead", "Jobs given up on (dead).", ["kind"])
JOBS_LEASE_LOST = Counter(
    "switchyard_jobs_lease_lost", "Jobs whose lease this worker lost; their result was discarded."
)
JOBS_RESCUED = Counter(
    "switchyard_jobs_rescued", "Jobs with an expired lease returned to the queue by this worker."
)
JOBS_RELEASED = Counter(
    "switchyard_jobs_released", "Jobs handed back to the queue at shutdown, unfinished."
)
JOB_DURATION = Histogram(
    "switchyard_job_duration_seconds",
    "Time a handler ran, by kind, whatever its outcome.",
    ["kind"],
    buckets=DURATION_BUCKETS_SECONDS,
)
JOBS_IN_FLIGHT = Gauge("switchyard_jobs_in_flight", "Jobs whose handler is running now.")


class KindMetrics(msgspec.Struct, frozen=True):
    """The labelled children of one job kind."""

    claimed: Counter
    succeeded: Counter
    failed: Counter
    dead: Counter
    duration: Histogram


@functools.lru_cache(maxsize=CACHED_KINDS)
def for_kind(kind: str) -> KindMetrics:
    return KindMetrics(
        claimed=JOBS_CLAIMED.labels(kind),
        succeeded=JOBS_SUCCEEDED.labels(kind),
        failed=JOBS_FAILED.labels(kind),
        dead=JOBS_DEAD.labels(kind),
        duration=JOB_DURATION.labels(kind),
    )


# What the worker paces itself by (server.worker.pacing): the event loop's lag and its jobs'
# waits for a pooled connection, and the limit on jobs held at once it sets from them.
LOOP_LAG_BUCKETS_SECONDS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
LOOP_LAG = Histogram(
    "switchyard_event_loop_lag_seconds",
    "How late the worker's lag monitor woke up: what any callback waits for the loop.",
    buckets=LOOP_LAG_BUCKETS_SECONDS,
)
POOL_WAIT = Histogram(
    "switchyard_worker_pool_wait_seconds",
    "How long a job waited for a pooled connection (the API's requests wait in the same line).",
    buckets=LOOP_LAG_BUCKETS_SECONDS,
)
CLAIM_LIMIT = Gauge(
    "switchyard_worker_claim_limit",
    "Jobs this worker may hold at once now (at most WORKER_CONCURRENCY; lowered while the "
    "event loop lags).",
)
CLAIM_LIMIT_CUTS = Counter(
    "switchyard_worker_claim_limit_cuts",
    "Times the worker lowered its claim limit because the event loop lagged.",
)
