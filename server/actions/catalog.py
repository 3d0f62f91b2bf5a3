"""The built-in actions, credential types and trigger sources, as registry entries.

Each action declares a JSON schema for its step `cfg`; the design-time API validates steps
against it and the registry tables (`workflow_action_registry`, `credential_type`,
`workflow_trigger_registry`) are seeded from these lists at every start-up, idempotently.
The `run` functions live in one module per action.
"""

from __future__ import annotations

from typing import Any

import msgspec

JsonSchema = dict[str, Any]


class ActionSpec(msgspec.Struct, frozen=True, kw_only=True):
    action_key: str
    name: str
    description: str
    cfg_schema: JsonSchema
    credential_type: str | None = None


class CredentialTypeSpec(msgspec.Struct, frozen=True, kw_only=True):
    type_key: str
    name: str
    description: str
    fields_schema: JsonSchema


class TriggerSpec(msgspec.Struct, frozen=True, kw_only=True):
    trigger_key: str
    type: str
    description: str


RETRY_POLICY_SCHEMA: JsonSchema = {
    "type": "object",
    "properties": {
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 50},
        "backoff_seconds": {"type": "number", "minimum": 0, "maximum": 3600},
        "max_backoff_seconds": {"type": "number", "minimum": 0, "maximum": 86400},
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
    },
    "additionalProperties": False,
}


def _cfg(
    properties: JsonSchema, required: list[str], rules: JsonSchema | None = None
) -> JsonSchema:
    """An action cfg schema: its own fields plus the per-step retry policy; `rules` adds
    keywords that relate fields (`allOf`, `not`, `dependentRequired`)."""
    return {
        "type": "object",
        "properties": {**properties, "retry": RETRY_POLICY_SCHEMA},
        "required": required,
        "additionalProperties": False,
        **(rules or {}),
    }


_STR = {"type": "string"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

ACTIONS: list[ActionSpec] = [
    ActionSpec(
        action_key="task_management",
        name="Task management",
        description="Create, update or complete a row in `tasks`; idempotent per step run.",
        cfg_schema=_cfg(
            {
                "operation": {"enum": ["create", "update", "complete"]},
                "task_id": _STR,
                "title": {"type": "string", "maxLength": 500},
                "description": _STR,
                "status": {"enum": ["open", "in_progress", "done", "cancelled"]},
                "assignee": _STR,
                "due_date": _STR,
            },
            ["operation"],
            # `create` needs a title; `update` and `complete` name the task.
            {
                "allOf": [
                    {
                        "if": {"properties": {"operation": {"const": "create"}}},
                        "then": {"required": ["title"]},
                    },
                    {
                        "if": {"properties": {"operation": {"enum": ["update", "complete"]}}},
                        "then": {"required": ["task_id"]},
                    },
                ]
            },
        ),
    ),
    ActionSpec(
        action_key="email",
        name="Email (SMTP)",
        description="Send an email through an SMTP credential, plain text and/or HTML.",
        credential_type="smtp",
        cfg_schema=_cfg(
            {
                "credential": _STR,
                "from": _STR,
                "to": {"oneOf": [_STR, {"type": "array", "items": _STR, "minItems": 1}]},
                "cc": {"type": "array", "items": _STR},
                "subject": _STR,
                "text": _STR,
                "html": _STR,
            },
            ["credential", "to", "subject"],
        ),
    ),
    ActionSpec(
        action_key="sms",
        name="SMS",
        description="Send an SMS through a Twilio-compatible HTTP API with an API-key credential.",
        credential_type="api_key",
        cfg_schema=_cfg(
            {"credential": _STR, "from": _STR, "to": _STR, "body": _STR},
            ["credential", "from", "to", "body"],
        ),
    ),
    ActionSpec(
        action_key="http_request",
        name="HTTP request",
        description=(
            "Call any HTTP endpoint (method, URL, headers, query, JSON or raw body, credential "
            "auth); private, loopback and link-local addresses are refused unless allowed."
        ),
        cfg_schema=_cfg(
            {
                "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
                "url": _STR,
                "headers": _STR_MAP,
                "query": _STR_MAP,
                "json": {},
                "body": _STR,
                "auth": {"enum": ["api_key", "basic_auth", "oauth2_client_credentials"]},
                "credential": _STR,
                "expected_status": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 100, "maximum": 599},
                },
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
                "max_response_bytes": {"type": "integer", "minimum": 1, "maximum": 67_108_864},
                "follow_redirects": {"type": "boolean"},
            },
            ["url"],
            # A body is JSON or raw text, not both; a credential says how it authenticates.
            {
                "not": {"required": ["json", "body"]},
                "dependentRequired": {"credential": ["auth"], "auth": ["credential"]},
            },
        ),
    ),
    ActionSpec(
        action_key="set_variables",
        name="Set variables",
        description="Publish named values (templates allowed) as this step's output.",
        cfg_schema=_cfg({"values": {"type": "object"}}, ["values"]),
    ),
    ActionSpec(
        action_key="transform",
        name="Transform",
        description="Shape data for later steps: render a template object into the output.",
        cfg_schema=_cfg({"output": {}}, ["output"]),
    ),
]

CREDENTIAL_TYPES: list[CredentialTypeSpec] = [
    CredentialTypeSpec(
        type_key="smtp",
        name="SMTP server",
        description="Host, port, security mode and login of an SMTP server.",
        fields_schema={
            "type": "object",
            "properties": {
                "host": _STR,
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "security": {"enum": ["none", "starttls", "tls"]},
                "username": _STR,
                "password": _STR,
            },
            "required": ["host", "port"],
            "additionalProperties": False,
        },
    ),
    CredentialTypeSpec(
        type_key="api_key",
        name="API key",
        description="A key sent in a header (or as basic-auth user), with an optional base URL.",
        fields_schema={
            "type": "object",
            "properties": {
                "api_key": _STR,
                "account_id": _STR,
                "base_url": _STR,
                "header": _STR,
            },
            "required": ["api_key"],
            "additionalProperties": False,
        },
    ),
    CredentialTypeSpec(
        type_key="basic_auth",
        name="HTTP basic auth",
        description="User name and password for HTTP basic authentication.",
        fields_schema={
            "type": "object",
            "properties": {"username": _STR, "password": _STR},
            "required": ["username", "password"],
            "additionalProperties": False,
        },
    ),
    CredentialTypeSpec(
        type_key="oauth2_client_credentials",
        name="OAuth2 client credentials",
        description="Token URL, client id and secret, and scopes for the client-credentials grant.",
        fields_schema={
            "type": "object",
            "properties": {
                "token_url": _STR,
                "client_id": _STR,
                "client_secret": _STR,
                "scopes": {"type": "array", "items": _STR},
            },
            "required": ["token_url", "client_id", "client_secret"],
            "additionalProperties": False,
        },
    ),
]

TRIGGERS: list[TriggerSpec] = [
    TriggerSpec(
        trigger_key="manual",
        type="manual",
        description="Runs started by hand: POST /api/v1/workflows/{id}/run.",
    ),
]
