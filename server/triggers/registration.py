"""Webhook registration specs (DESIGN §6): what an endpoint asks the scheduler to keep at its
sender, checked without I/O. Pure.

`registration` is a tagged object, `provider` naming the kind:

- `github`: a repository hook made with GitHub's hooks API. `credential` names an `api_key`
  credential (`api_key` the token, `base_url` the API root, https://api.github.com by default,
  so GitHub Enterprise works), `repository` is `owner/name`, `events` the events to send.
  The hook is sent the endpoint's `github` secret, so the endpoint's auth type must be `github`.
- `http`: any sender with a subscription API. `subscribe` (and the optional `unsubscribe` and
  `renew`) are calls `{"method", "url", "json"?, "headers"?}` whose string values are templates
  over `callback_url` (PUBLIC_URL + /hooks/{path}), `secret` (the endpoint's current secret, or
  null) and, for `unsubscribe` and `renew`, `subscription` (the JSON answer of the subscribe
  call that made it). With `renew_every_seconds` the subscription is renewed that often: with
  the `renew` call when given (its JSON object answer, if any, becomes `subscription`), else by
  subscribing again and then unsubscribing the previous one. `credential` (optional) names an
  `api_key` credential (sent as `Authorization: Bearer <api_key>`, or in its `header`) or a
  `basic_auth` one.

A change to what identifies the registration at the sender (`same_registration` is false: the
provider, a GitHub repository or credential, an `http` subscribe call) retires the old
registration (removed at the sender by the scheduler) and makes a new one; other changes
(events, a rotated secret, a new path) update it in place.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from server.engine.templates import string_leaves, template_error

DEFAULT_GITHUB_API: Final = "https://api.github.com"
DEFAULT_GITHUB_EVENTS: Final = ("push",)
# A failed reconciliation is retried after RETRY_BASE * 2**(failures-1) seconds, at most
# RETRY_MAX and never later than the next periodic check.
RETRY_BASE: Final = dt.timedelta(seconds=1)
RETRY_MAX: Final = dt.timedelta(minutes=5)
# What the templates of each call may read.
SUBSCRIBE_NAMES: Final = frozenset({"callback_url", "secret"})
LATER_NAMES: Final = frozenset({"callback_url", "secret", "subscription"})


class RegistrationState(StrEnum):
    PENDING = "pending"  # a change waits for the scheduler
    REGISTERED = "registered"
    FAILED = "failed"  # the last attempt failed: `last_error` says why; it is retried
    REMOVED = "removed"  # not registered at the sender (disabled or deleted endpoint)


class Provider(StrEnum):
    GITHUB = "github"
    HTTP = "http"


Credential = Annotated[
    str, Meta(min_length=1, max_length=200, description="a credential's name or id")
]
Repository = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$",
        description="the GitHub repository, owner/name",
    ),
]
EventName = Annotated[str, Meta(pattern=r"^(\*|[a-z_]{1,60})$")]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class GitHubRegistration(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="github",
    tag_field="provider",
):
    credential: Credential
    repository: Repository
    events: Annotated[list[EventName], Meta(min_length=1, max_length=100)] = msgspec.field(
        default_factory=lambda: list(DEFAULT_GITHUB_EVENTS)
    )


class HttpCall(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    method: Method = "POST"
    url: Annotated[str, Meta(min_length=1, max_length=2000)]
    json: Any = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class HttpRegistration(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="http",
    tag_field="provider",
):
    subscribe: HttpCall
    unsubscribe: HttpCall | None = None
    renew: HttpCall | None = None
    renew_every_seconds: Annotated[float, Meta(ge=1, le=90 * 86400)] | None = None
    credential: Credential | None = None


Registration = GitHubRegistration | HttpRegistration


def provider_of(spec: Registration) -> Provider:
    return Provider.GITHUB if isinstance(spec, GitHubRegistration) else Provider.HTTP


def same_registration(old: Registration, new: Registration) -> bool:
    """Whether `new` updates the registration `old` made, instead of replacing it."""
    if isinstance(old, GitHubRegistration) and isinstance(new, GitHubRegistration):
        return (old.credential, old.repository) == (new.credential, new.repository)
    if isinstance(old, HttpRegistration) and isinstance(new, HttpRegistration):
        return old.subscribe == new.subscribe and old.credential == new.credential
    return False


def spec_problems(spec: Registration) -> list[tuple[str, str]]:
    """(field, what to do) for each template that does not compile, or an inconsistent
    renewal; empty when the spec is usable."""
    if isinstance(spec, GitHubRegistration):
        return []
    problems: list[tuple[str, str]] = []
    for name, call in (("subscribe", spec.subscribe), ("unsubscribe", spec.unsubscribe),
                       ("renew", spec.renew)):  # fmt: skip
        if call is None:
            continue
        leaves = string_leaves({"url": call.url, "json": call.json, "headers": call.headers})
        for path, source in leaves:
            error = template_error(source)
            if error is not None:
                field = f"registration.{name}.{path.lstrip('.')}"
                problems.append((field, f"is not a usable template: {error}"))
    if spec.renew is not None and spec.renew_every_seconds is None:
        problems.append(
            ("registration.renew_every_seconds", "is required with `renew`: how often to renew")
        )
    return problems


def callback_url(public_url: str, path: str) -> str:
    """The URL a sender is given: PUBLIC_URL + /hooks/{path}."""
    return f"{public_url}/hooks/{path}"


def retry_delay(failures: int, check_interval: dt.timedelta) -> dt.timedelta:
    """When to try again after `failures` consecutive failures (1 for the first)."""
    exponent = min(max(failures, 1) - 1, 20)
    delay: dt.timedelta = min(RETRY_BASE * 2**exponent, RETRY_MAX, check_interval)
    return delay


def github_api_root(base_url: object) -> str:
    """The API root of a GitHub credential's `base_url` (the public API when absent)."""
    if isinstance(base_url, str) and base_url.strip():
        return base_url.strip().rstrip("/")
    return DEFAULT_GITHUB_API
