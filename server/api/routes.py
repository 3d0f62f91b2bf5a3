"""The `/api/v1` router: every controller of the API role. Each declares the role its routes
need (`opt["role"]`), checked by the app's one guard (`server.api.auth.authorize`)."""

from __future__ import annotations

from litestar import Router

from server.api.audit import AuditController
from server.api.audit_trail import audit_trail
from server.api.credentials import CredentialController
from server.api.deps import DEPENDENCIES
from server.api.drafts import DraftController
from server.api.events import EventController
from server.api.executions import ExecutionController, ManualRunController
from server.api.jobs import JobController
from server.api.registry import RegistryController
from server.api.schedules import ScheduleController
from server.api.strict_bodies import decode_body_strictly
from server.api.subscriptions import SubscriptionController
from server.api.tasks import TaskController
from server.api.tokens import TokenController
from server.api.variables import VariableController
from server.api.versions import VersionController
from server.api.webhooks import WebhookController
from server.api.workflows import WorkflowController

API_PREFIX = "/api/v1"


def api_router() -> Router:
    return Router(
        path=API_PREFIX,
        before_request=decode_body_strictly,
        middleware=[audit_trail],  # here, not app-wide: webhooks and probes skip the layer
        dependencies=DEPENDENCIES,
        route_handlers=[
            WorkflowController,
            VersionController,
            DraftController,
            SubscriptionController,
            ManualRunController,
            ExecutionController,
            EventController,
            JobController,
            TaskController,
            RegistryController,
            CredentialController,
            VariableController,
            WebhookController,
            ScheduleController,
            TokenController,
            AuditController,
        ],
        security=[{"BearerToken": []}],
    )
