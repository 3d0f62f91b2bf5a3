"""The built-in actions by `action_key`: what the worker looks up to run an action step.

`builtin_actions()` builds a fresh set whose stateful parts (TLS contexts, the OAuth2 token
cache) belong to the instances it creates; `BUILTIN_ACTIONS` is the set a process
uses. Their cfg schemas are in `server.actions.catalog`, one entry per key here.
"""

from __future__ import annotations

import ssl

from server.actions import task_management, transform
from server.actions.base import Action, FunctionAction
from server.actions.email import EmailAction
from server.actions.guarded_http import OutboundClient
from server.actions.http_request import HttpRequestAction
from server.actions.oauth2 import ClientCredentialsTokens
from server.actions.sms import SmsAction


def builtin_actions(*, tls: ssl.SSLContext | None = None) -> dict[str, Action]:
    """Every built-in action; `tls` replaces the default trust store (tests trust their CA)."""
    outbound = OutboundClient(verify=tls)
    http_request = HttpRequestAction(outbound, ClientCredentialsTokens(outbound))
    actions = [
        FunctionAction(
            action_key="task_management", run_function=task_management.run, transactional=True
        ),
        FunctionAction(action_key="email", run_function=EmailAction(tls=tls).run),
        FunctionAction(action_key="sms", run_function=SmsAction(outbound).run),
        FunctionAction(action_key="http_request", run_function=http_request.run),
        FunctionAction(action_key="set_variables", run_function=transform.set_variables),
        FunctionAction(action_key="transform", run_function=transform.transform),
    ]
    return {action.action_key: action for action in actions}


BUILTIN_ACTIONS: dict[str, Action] = builtin_actions()
