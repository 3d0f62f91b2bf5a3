"""The pure side of webhook registration: specs, what counts as the same registration, checks,
callback URLs and retry delays."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from server.triggers.registration import (
    GitHubRegistration,
    HttpCall,
    HttpRegistration,
    Registration,
    callback_url,
    github_api_root,
    retry_delay,
    same_registration,
    spec_problems,
)

GITHUB = GitHubRegistration(credential="gh", repository="acme/shop")
HTTP = HttpRegistration(subscribe=HttpCall(url="https://x.example/subscriptions"))


def test_a_spec_is_decoded_by_its_provider_and_events_default_to_push() -> None:
    decoded = msgspec.json.decode(
        b'{"provider": "github", "credential": "gh", "repository": "acme/shop"}',
        type=Registration,
    )
    assert decoded == GITHUB
    assert decoded.events == ["push"]
    assert msgspec.json.decode(msgspec.json.encode(HTTP), type=Registration) == HTTP


def test_events_and_renewal_change_a_registration_in_place_other_fields_replace_it() -> None:
    assert same_registration(GITHUB, msgspec.structs.replace(GITHUB, events=["release"]))
    assert not same_registration(GITHUB, msgspec.structs.replace(GITHUB, repository="acme/x"))
    assert not same_registration(GITHUB, HTTP)
    assert same_registration(HTTP, msgspec.structs.replace(HTTP, renew_every_seconds=60))
    other = HttpCall(url="https://y.example/subscriptions")
    assert not same_registration(HTTP, msgspec.structs.replace(HTTP, subscribe=other))


def test_spec_problems_name_broken_templates_and_renew_without_a_period() -> None:
    broken = HttpRegistration(
        subscribe=HttpCall(url="https://x.example", json={"to": "{{ callback_url"}),
        renew=HttpCall(method="PATCH", url="https://x.example/{{ subscription.id }}"),
    )
    fields = [field for field, _ in spec_problems(broken)]
    assert fields == ["registration.subscribe.json.to", "registration.renew_every_seconds"]
    assert spec_problems(GITHUB) == []
    assert spec_problems(HTTP) == []


@pytest.mark.parametrize(
    ("failures", "seconds"), [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (40, 300)]
)
def test_retries_back_off_to_five_minutes(failures: int, seconds: float) -> None:
    assert retry_delay(failures, dt.timedelta(hours=1)) == dt.timedelta(seconds=seconds)


def test_a_retry_is_never_later_than_the_next_check() -> None:
    assert retry_delay(9, dt.timedelta(seconds=2)) == dt.timedelta(seconds=2)


def test_callback_url_and_github_api_root() -> None:
    assert callback_url("https://h.example/sy", "github/shop") == (
        "https://h.example/sy/hooks/github/shop"
    )
    assert github_api_root(None) == "https://api.github.com"
    assert github_api_root(" https://ghe.example/api/v3/ ") == "https://ghe.example/api/v3"
