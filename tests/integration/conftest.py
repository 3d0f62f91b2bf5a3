"""Fixtures of the integration tests beyond the shared ones: the actions' loopback peers."""

from __future__ import annotations

from tests.support.broken_peers import broken_answer_peer  # noqa: F401 - a fixture
from tests.support.peers import (  # noqa: F401 - fixtures, found by pytest by name
    _http_peer,
    _https_peer,
    _other_http_peer,
    _smtp_auth_server,
    _smtp_server,
    _smtps_server,
    _tls_identity,
    http_peer,
    https_peer,
    other_http_peer,
    smtp_auth_server,
    smtp_server,
    smtps_server,
    tls_client_context,
)
