"""The worker's claim limit: cut on a late loop, held between cuts, grown only while used."""

from __future__ import annotations

from server.worker.pacing import DECREASE_FACTOR, HOLD_SECONDS, INITIAL_LIMIT, ClaimLimit

TARGET = 0.05
LATE = 0.2
ON_TIME = 0.001


def test_a_late_sample_cuts_the_limit_to_a_share_of_the_jobs_in_flight() -> None:
    limit = ClaimLimit(256, target_seconds=TARGET)
    limit.lag_sampled(LATE, in_flight=12, now=0.0)
    assert (limit.value, limit.cuts) == (int(12 * DECREASE_FACTOR), 1)


def test_cuts_are_held_apart_so_each_shows_its_effect_first() -> None:
    limit = ClaimLimit(256, target_seconds=TARGET)
    limit.lag_sampled(LATE, in_flight=16, now=0.0)
    limit.lag_sampled(LATE, in_flight=16, now=HOLD_SECONDS / 2)
    assert limit.cuts == 1
    limit.lag_sampled(LATE, in_flight=12, now=HOLD_SECONDS)
    assert (limit.value, limit.cuts) == (int(12 * DECREASE_FACTOR), 2)


def test_the_limit_never_falls_below_one_job() -> None:
    limit = ClaimLimit(256, target_seconds=TARGET)
    for step in range(50):
        limit.lag_sampled(LATE, in_flight=limit.value, now=step * HOLD_SECONDS)
    assert limit.value == limit.lowest == 1


def test_samples_on_time_grow_a_used_limit_up_to_the_worker_concurrency() -> None:
    limit = ClaimLimit(20, target_seconds=TARGET)
    for step in range(100):
        limit.lag_sampled(ON_TIME, in_flight=limit.value, now=step * 0.01)
    assert limit.value == 20


def test_an_idle_worker_does_not_grow_its_limit() -> None:
    limit = ClaimLimit(256, target_seconds=TARGET)
    for step in range(100):
        limit.lag_sampled(ON_TIME, in_flight=2, now=step * 0.01)
    assert limit.value == INITIAL_LIMIT


def test_a_target_of_zero_always_allows_the_worker_concurrency() -> None:
    limit = ClaimLimit(256, target_seconds=0)
    limit.lag_sampled(10.0, in_flight=256, now=0.0)
    assert (limit.value, limit.cuts) == (256, 0)
