"""`/api/v1/webhooks`: the endpoints that turn `POST /hooks/{path}` into events of a trigger.

Body: `{"trigger_key", "path", "auth": {"type", "secret"?, "header"?}, "response_mode":
"async"|"sync", "sync_timeout_seconds"?, "enabled"?}`. Secrets are write-only: answers show
`"auth": {"type", "has_secret", "has_previous_secret", "header"}`. When a type that needs a
secret (`header_token`, `hmac_sha256`, `github`) is given none, one is generated (`whsec_...`
for hmac_sha256) and returned once, as `generated_secret` in that answer; it cannot be read
again. Rotation (PATCH): `"auth": {"secret": "new"}` (or `{"generate_secret": true}`) makes the
new secret current and keeps the previous one valid too; `"auth": {"drop_previous_secret":
true}` then retires the previous one. A path in use answers 409; so does a trigger key that
is registered with a type other than `webhook`. Lists are keyset-paginated, oldest first.

`registration` (optional, DESIGN §6) asks the scheduler role to keep the subscription at the
sender: `{"provider": "github", "credential", "repository", "events"}` or `{"provider": "http",
"subscribe", "unsubscribe"?, "renew"?, "renew_every_seconds"?, "credential"?}`
(`server.triggers.registration`); answers show it with `registration_status`. PATCH
`"registration": null` removes it (at the sender too). Registrations of deleted endpoints that
are not yet removed at their sender are listed at `GET /webhooks/registrations/stale`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT
from msgspec import UNSET, UnsetType

from config.settings import Settings
from server.api.deps import Injected, Resources
from server.api.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Page,
    page,
    time_and_id,
)
from server.api.registration_checks import check_registration
from server.db import webhooks
from server.db.webhook_auth import AuthInput
from server.db.webhook_registrations import StaleRegistration, stale_registrations
from server.db.webhooks import (
    DEFAULT_SYNC_TIMEOUT_SECONDS,
    ResponseMode,
    SavedWebhook,
    SyncTimeout,
    WebhookPath,
    WebhookView,
)
from server.engine.document import TriggerKey
from server.engine.templates import template_error, template_step_reads, template_variable_reads
from server.errors import ValidationError
from server.triggers.registration import Registration

_V = TypeVar("_V", WebhookView, SavedWebhook)


def with_public_url(view: _V, settings: Settings) -> _V:
    """`view` with its `url` made absolute on PUBLIC_URL when that is set."""
    if settings.public_url is None:
        return view
    return msgspec.structs.replace(view, url=settings.public_url + view.url)


CorrelationTemplate = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=2000,
        description="a template over `trigger` (the delivery's JSON body) giving each event's "
        "correlation key, such as {{ trigger.data.order_id }}: a delivery resumes the "
        "wait_for_event steps waiting for that key",
    ),
]


class WebhookCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    trigger_key: TriggerKey
    path: WebhookPath
    auth: AuthInput
    response_mode: ResponseMode = ResponseMode.ASYNC
    sync_timeout_seconds: SyncTimeout = DEFAULT_SYNC_TIMEOUT_SECONDS
    enabled: bool = True
    correlation_key: CorrelationTemplate | None = None
    registration: Registration | None = None


class WebhookChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields to change; omitted ones stay as they are (see the module docstring for auth)."""

    trigger_key: TriggerKey | UnsetType = UNSET
    path: WebhookPath | UnsetType = UNSET
    auth: AuthInput | UnsetType = UNSET
    response_mode: ResponseMode | UnsetType = UNSET
    sync_timeout_seconds: SyncTimeout | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    correlation_key: CorrelationTemplate | UnsetType | None = UNSET  # null removes it
    registration: Registration | UnsetType | None = UNSET  # null removes it (at the sender too)


class WebhookController(Controller):
    path = "/webhooks"
    opt: Mapping[str, str] = {"role": "viewer"}
    tags = ("webhooks",)

    @get("/")
    async def list_webhooks(
        self,
        settings: Injected[Settings],
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        trigger_key: FromQuery[str | None] = None,
    ) -> Page[WebhookView]:
        """Webhook endpoints, oldest first; secrets are never shown."""
        items = await webhooks.list_webhooks(
            limit=limit + 1, after=time_and_id(cursor), trigger_key=trigger_key
        )
        shown = [with_public_url(item, settings) for item in items]
        return page(shown, limit, lambda item: (item.created_at, item.id))

    @post("/", status_code=HTTP_201_CREATED, opt={"role": "editor", "audit": "webhook.create"})
    async def create_webhook(
        self,
        data: JSONBody[WebhookCreate],
        resources: Injected[Resources],
    ) -> SavedWebhook:
        """A new endpoint, live at once at POST /hooks/{path}: `url` is the URL to give the
        sender (PUBLIC_URL + /hooks/{path}; relative when PUBLIC_URL is unset). A generated
        secret is in `generated_secret`, shown only in this answer."""
        if data.auth.type is UNSET:
            raise ValidationError(
                "auth.type is required: none, header_token, hmac_sha256 or github",
                [{"field": "auth.type", "message": "is required"}],
            )
        _check_correlation_key(data.correlation_key)
        if data.registration is not None:
            await check_registration(
                data.registration, auth_type=data.auth.type.value, settings=resources.settings
            )
        created = await webhooks.create_webhook(
            registration=data.registration,
            correlation_key=data.correlation_key,
            keyring=resources.keyring,
            trigger_key=data.trigger_key,
            path=data.path,
            auth=data.auth,
            response_mode=data.response_mode,
            sync_timeout_seconds=data.sync_timeout_seconds,
            enabled=data.enabled,
        )
        return with_public_url(created, resources.settings)

    @get("/{webhook_id:uuid}")
    async def get_webhook(
        self, webhook_id: FromPath[uuid.UUID], settings: Injected[Settings]
    ) -> WebhookView:
        return with_public_url(await webhooks.get_webhook(webhook_id), settings)

    @patch("/{webhook_id:uuid}", opt={"role": "editor", "audit": "webhook.update"})
    async def update_webhook(
        self,
        webhook_id: FromPath[uuid.UUID],
        data: JSONBody[WebhookChange],
        resources: Injected[Resources],
    ) -> SavedWebhook:
        """Change an endpoint; takes effect on the next request on every replica."""
        changes: dict[str, Any] = {
            name: value
            for name in data.__struct_fields__
            if name != "auth" and (value := getattr(data, name)) is not UNSET
        }
        if isinstance(data.correlation_key, str):
            _check_correlation_key(data.correlation_key)
        await _check_changed_registration(webhook_id, data, resources.settings)
        auth = None if data.auth is UNSET else data.auth
        changed = await webhooks.update_webhook(
            webhook_id, keyring=resources.keyring, changes=changes, auth=auth
        )
        return with_public_url(changed, resources.settings)

    @delete(
        "/{webhook_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        opt={"role": "editor", "audit": "webhook.delete"},
    )
    async def delete_webhook(self, webhook_id: FromPath[uuid.UUID]) -> None:
        """Delete an endpoint; its path answers 404 at once. The trigger source stays. Its
        registration is removed at the sender by the scheduler; until that succeeds it is
        listed at GET /webhooks/registrations/stale."""
        await webhooks.delete_webhook(webhook_id)

    @get("/registrations/stale")
    async def list_stale_registrations(
        self, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
    ) -> Page[StaleRegistration]:
        """Registrations of deleted endpoints (or replaced registrations) not yet removed at
        their sender, oldest first; the scheduler retries each with backoff."""
        items = await stale_registrations(limit=limit + 1, after=time_and_id(cursor))
        return page(items, limit, lambda item: (item.detached_at, item.id))


async def _check_changed_registration(
    webhook_id: uuid.UUID, data: WebhookChange, settings: Settings
) -> None:
    """Check the registration the endpoint will have after `data` (new or kept)."""
    if data.registration is None or (data.registration is UNSET and data.auth is UNSET):
        return
    current = await webhooks.get_webhook(webhook_id)
    registration = current.registration if data.registration is UNSET else data.registration
    if registration is None:
        return
    auth_type = current.auth.type.value
    if data.auth is not UNSET and data.auth.type is not UNSET:
        auth_type = data.auth.type.value
    await check_registration(registration, auth_type=auth_type, settings=settings)


def _check_correlation_key(template: str | None) -> None:
    """A correlation key template must compile and may read only `trigger` (the delivery)."""
    if template is None:
        return
    error = template_error(template)
    if error is None and template_step_reads(template).keys:
        error = "it may read trigger (the delivery's body) only, not steps"
    if error is None and template_variable_reads(template).keys:
        error = "it may read trigger (the delivery's body) only, not vars"
    if error is not None:
        raise ValidationError(
            f"correlation_key is not a usable template: {error}",
            [{"field": "correlation_key", "message": error}],
        )
