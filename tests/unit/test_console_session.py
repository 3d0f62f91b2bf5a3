"""The console's sealed session cookie: opens only unaltered, under a key of the keyring, and
within its maximum age; it never shows the token."""

from __future__ import annotations

import datetime as dt

from server.console.session import (
    SESSION_MAX_AGE,
    check_csrf,
    new_session,
    open_session,
    seal_session,
)
from server.crypto.aead import Keyring, generate_key

NOW = dt.datetime(2026, 12, 8, 9, 0, tzinfo=dt.UTC)


def test_a_sealed_session_opens_with_any_key_of_the_keyring_and_hides_the_token() -> None:
    old = ("k1", generate_key())
    session = new_session("sy_secret-token", NOW)
    cookie = seal_session(Keyring([old]), session)
    assert "sy_secret-token" not in cookie
    rotated = Keyring([("k2", generate_key()), old])
    assert open_session(rotated, cookie, NOW + dt.timedelta(minutes=5)) == session
    assert "sy_secret-token" not in repr(session)


def test_an_altered_foreign_or_old_cookie_does_not_open() -> None:
    keyring = Keyring([("k1", generate_key())])
    cookie = seal_session(keyring, new_session("token", NOW))
    key_id, _, body = cookie.partition(".")
    flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    assert open_session(keyring, f"{key_id}.{flipped}", NOW) is None
    assert open_session(Keyring([("k1", generate_key())]), cookie, NOW) is None
    assert open_session(keyring, "garbage", NOW) is None
    assert open_session(keyring, None, NOW) is None
    assert open_session(keyring, cookie, NOW + SESSION_MAX_AGE + dt.timedelta(seconds=1)) is None


def test_the_csrf_token_must_match_exactly() -> None:
    session = new_session("token", NOW)
    assert check_csrf(session, session.csrf)
    assert not check_csrf(session, session.csrf + "x")
    assert not check_csrf(session, None)
