"""A traced workflow for the tracing tests (tests/e2e/test_tracing*.py): three steps whose
middle one calls a loopback peer, the peer's answers, and the trace context it received."""

from __future__ import annotations

import re
from typing import Any, Final

from tests.support.peers import HttpPeer, RecordedRequest, Reply

# A caller's span: its trace goes on through Switchyard.
CALLER_TRACE_ID: Final = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID: Final = "00f067aa0ba902b7"
CALLER_TRACEPARENT: Final = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"
TRACEPARENT: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def traced_workflow(peer_url: str, trigger_key: str = "orders") -> dict[str, Any]:
    """Three steps; the middle one calls the peer (which fails the first attempt)."""
    return {
        "name": f"Traced {trigger_key}",
        "steps": [
            {
                "key": "shape",
                "kind": "action",
                "action_key": "transform",
                "cfg": {"output": {"total": "{{ trigger.total }}"}},
            },
            {
                "key": "call",
                "kind": "action",
                "action_key": "http_request",
                "cfg": {
                    "method": "POST",
                    "url": f"{peer_url}/orders",
                    "json": {"total": "{{ steps.shape.output.total }}"},
                    "retry": {"max_attempts": 3, "backoff_seconds": 0.05},
                },
            },
            {
                "key": "done",
                "kind": "action",
                "action_key": "transform",
                "cfg": {"output": {"answered": "{{ steps.call.output.status }}"}},
            },
        ],
        "edges": [{"from": "shape", "to": "call"}, {"from": "call", "to": "done"}],
        "subscriptions": [{"trigger_key": trigger_key}],
    }


def fail_once(peer: HttpPeer) -> None:
    answers = iter([Reply(status=503)])
    peer.respond("/orders", lambda _: next(answers, Reply(status=200, body=b"ok")))


def sent_traceparents(peer: HttpPeer) -> list[tuple[str, str]]:
    """(trace id, parent span id) of each call the peer received."""
    found = [TRACEPARENT.fullmatch(r.headers.get("traceparent", "")) for r in calls_to_peer(peer)]
    return [(match[1], match[2]) if match else ("", "") for match in found]


def calls_to_peer(peer: HttpPeer) -> list[RecordedRequest]:
    return peer.requests_to("/orders")
