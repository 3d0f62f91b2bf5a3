"""Retry decisions for failed job attempts: exponential backoff with jitter, then give up.

Pure: no clock and no randomness of its own. The caller passes the uniform draw used for
jitter (`random.random()` in production, fixed values in tests), and the decision is a delay
relative to now; the queue adds it to the database clock, so replicas never disagree on when a
retry is due.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta

# Beyond this many doublings every sane policy is at its cap; stops float overflow.
MAX_EXPONENT: Final = 64


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Delay before retry n (n = 1 after the first failure) is `base * factor**(n-1)`, capped
    at `max_seconds`, then shortened by up to `jitter` of itself so that jobs failing together
    (an outage) do not all come back at the same instant."""

    base_seconds: Annotated[float, Meta(ge=0)] = 1.0
    factor: Annotated[float, Meta(ge=1)] = 2.0
    max_seconds: Annotated[float, Meta(ge=0)] = 600.0
    jitter: Annotated[float, Meta(ge=0, le=1)] = 0.5


class Retry(msgspec.Struct, frozen=True, kw_only=True):
    """Run the job again `delay_seconds` from now."""

    delay_seconds: float


class GiveUp(msgspec.Struct, frozen=True, kw_only=True):
    """Do not run the job again; `reason` says why, for the operator reading the dead job."""

    reason: str


def backoff_seconds(failures: int, policy: RetryPolicy, draw: float) -> float:
    """The jittered delay after the `failures`-th failed attempt (1 for the first).

    Args:
        draw: a uniform sample from [0, 1); 0 gives the full delay.

    Raises:
        ValueError: `failures` < 1 or `draw` outside [0, 1).
    """
    if failures < 1:
        raise ValueError(f"failures counts from 1, got {failures}")
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), got {draw}")
    exponent = min(failures - 1, MAX_EXPONENT)
    delay = min(policy.base_seconds * policy.factor**exponent, policy.max_seconds)
    return delay * (1.0 - policy.jitter * draw)


def decide_retry(
    *,
    attempts: int,
    max_attempts: int,
    requested_delay: float | None,
    permanent: bool,
    policy: RetryPolicy,
    draw: float,
) -> Retry | GiveUp:
    """What to do after attempt number `attempts` (counted from 1) of a job failed.

    A permanent failure gives up at once; so does a job that has used `max_attempts`. Otherwise
    the job is retried after `requested_delay` when the handler asked for one (taken as is: a
    service's Retry-After is better information than our backoff), else after the backoff.
    """
    if permanent:
        return GiveUp(reason=f"permanent failure on attempt {attempts}")
    if attempts >= max_attempts:
        return GiveUp(reason=f"gave up after {attempts} of {max_attempts} attempts")
    if requested_delay is not None:
        return Retry(delay_seconds=max(requested_delay, 0.0))
    return Retry(delay_seconds=backoff_seconds(attempts, policy, draw))
