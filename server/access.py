"""Who may do what: the roles a token carries and the requirement each route declares.

Every route handler declares `opt={"role": <requirement>}` (on the handler or its controller);
one guard (`server.api.auth.authorize`) compares the caller's `Principal` with it through
`permits`, for the REST API and the console alike. Roles are sets of permissions, not a ladder:

| requirement | what it covers | granted to |
| --- | --- | --- |
| `public` | health, OpenAPI pages, `/hooks` (their own auth), console login | everyone |
| `viewer` | reads (never a secret: every answer masks them) | viewer, operator, editor, admin |
| `operator` | run, cancel, retry, resume, replay, requeue, task updates | operator, admin |
| `editor` | design-time writes: workflows, versions, drafts, variables, subscriptions, webhooks, schedules, event and database sources | editor, admin |
| `ingest` | `POST /api/v1/events` only (an ingest token may be held to listed trigger keys) | ingest, operator, admin |
| `admin` | tokens, credentials (their secret data), the audit log | admin |

Existing tokens and `API_TOKENS` entries are admins; an `API_TOKENS` entry may name its role
(`viewer:sy_...`). Operator commands of the CLI act directly on the database and act as admin.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Final

import msgspec


class AccessRole(StrEnum):
    """A token's role, as stored in `api_token.role`."""

    ADMIN = "admin"
    EDITOR = "editor"
    OPERATOR = "operator"
    VIEWER = "viewer"
    INGEST = "ingest"


PUBLIC: Final = "public"
"""The requirement of a route open to everyone (no token)."""

GRANTED_TO: Final[dict[str, frozenset[AccessRole]]] = {
    AccessRole.VIEWER: frozenset(
        {AccessRole.VIEWER, AccessRole.OPERATOR, AccessRole.EDITOR, AccessRole.ADMIN}
    ),
    AccessRole.OPERATOR: frozenset({AccessRole.OPERATOR, AccessRole.ADMIN}),
    AccessRole.EDITOR: frozenset({AccessRole.EDITOR, AccessRole.ADMIN}),
    AccessRole.INGEST: frozenset({AccessRole.INGEST, AccessRole.OPERATOR, AccessRole.ADMIN}),
    AccessRole.ADMIN: frozenset({AccessRole.ADMIN}),
}
"""Which roles meet each requirement (besides `public`, which needs no token)."""

REQUIREMENTS: Final = frozenset({PUBLIC, *GRANTED_TO})
ROLE_NAMES: Final = frozenset(role.value for role in AccessRole)


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: a stored token (with its id) or an `API_TOKENS` entry (no id).

    `trigger_keys` holds an ingest token to those trigger keys; None allows every key."""

    token_id: uuid.UUID | None
    name: str
    role: AccessRole
    trigger_keys: tuple[str, ...] | None = None

    def may_send(self, trigger_key: str) -> bool:
        return self.trigger_keys is None or trigger_key in self.trigger_keys


def permits(principal: Principal, requirement: str) -> bool:
    """Whether `principal` meets `requirement` (an unknown requirement is never met)."""
    return requirement == PUBLIC or principal.role in GRANTED_TO.get(requirement, frozenset())


def configured_token(entry: str) -> tuple[AccessRole, str]:
    """An `API_TOKENS` entry as (role, token): `role:token`, or a bare token (an admin)."""
    prefix, separator, rest = entry.partition(":")
    if separator and rest and prefix in ROLE_NAMES:
        return AccessRole(prefix), rest
    return AccessRole.ADMIN, entry
