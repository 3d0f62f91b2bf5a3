from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Callable

import pytest

from server.triggers.signatures import (
    SignatureError,
    generate_standard_secret,
    generate_token,
    github_signature,
    standard_secret_key,
    standard_signature,
    verify_github,
    verify_standard_webhook,
    verify_token,
)

# The example of the Standard Webhooks specification (and of svix's test suite).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = "1614265330"
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SPEC_NOW = dt.datetime.fromtimestamp(int(SPEC_TIMESTAMP), dt.UTC)

OTHER_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def _verify_standard(
    secrets: list[str],
    signature: str | None = SPEC_SIGNATURE,
    *,
    now: dt.datetime = SPEC_NOW,
    message_id: str | None = SPEC_ID,
    timestamp: str | None = SPEC_TIMESTAMP,
    body: bytes = SPEC_BODY,
) -> None:
    verify_standard_webhook(
        secrets, message_id=message_id, timestamp=timestamp, signature=signature, body=body, now=now
    )


def test_standard_signature_matches_the_specification_example() -> None:
    assert standard_signature(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    _verify_standard([SPEC_SECRET])


def test_standard_secret_without_the_whsec_prefix_is_the_same_key() -> None:
    _verify_standard([SPEC_SECRET.removeprefix("whsec_")])


def test_standard_signature_over_other_bytes_is_refused() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        _verify_standard([SPEC_SECRET], body=SPEC_BODY + b" ")
    with pytest.raises(SignatureError, match="does not match"):
        _verify_standard([SPEC_SECRET], message_id="msg_other")
    with pytest.raises(SignatureError, match="does not match"):
        _verify_standard([OTHER_SECRET])


def test_standard_timestamp_outside_five_minutes_is_refused_either_way() -> None:
    _verify_standard([SPEC_SECRET], now=SPEC_NOW + dt.timedelta(minutes=5))
    _verify_standard([SPEC_SECRET], now=SPEC_NOW - dt.timedelta(minutes=5))
    with pytest.raises(SignatureError, match="too old"):
        _verify_standard([SPEC_SECRET], now=SPEC_NOW + dt.timedelta(minutes=5, seconds=1))
    with pytest.raises(SignatureError, match="future"):
        _verify_standard([SPEC_SECRET], now=SPEC_NOW - dt.timedelta(minutes=5, seconds=1))


def test_a_stale_timestamp_is_refused_even_with_a_valid_signature_for_it() -> None:
    stale = str(int(SPEC_TIMESTAMP) - 3600)
    signature = standard_signature(SPEC_SECRET, SPEC_ID, stale, SPEC_BODY)
    with pytest.raises(SignatureError, match="too old"):
        _verify_standard([SPEC_SECRET], signature, timestamp=stale)


@pytest.mark.parametrize(
    ("message_id", "timestamp", "signature"),
    [(None, SPEC_TIMESTAMP, SPEC_SIGNATURE), (SPEC_ID, None, SPEC_SIGNATURE), (SPEC_ID, "", None)],
)
def test_standard_headers_are_all_required(
    message_id: str | None, timestamp: str | None, signature: str | None
) -> None:
    with pytest.raises(SignatureError, match="missing"):
        _verify_standard([SPEC_SECRET], signature, message_id=message_id, timestamp=timestamp)


def test_standard_timestamp_must_be_unix_seconds() -> None:
    with pytest.raises(SignatureError, match="Unix seconds"):
        _verify_standard([SPEC_SECRET], timestamp="2021-02-25T15:02:10Z")


def test_any_of_several_space_separated_signatures_may_match() -> None:
    wrong = "v1," + base64.b64encode(b"x" * 32).decode()
    _verify_standard([SPEC_SECRET], f"{wrong} {SPEC_SIGNATURE}")
    _verify_standard([SPEC_SECRET], f"v1a,abc v1,not-base64!! {SPEC_SIGNATURE}")


def test_only_v1_entries_count() -> None:
    with pytest.raises(SignatureError, match="no v1"):
        _verify_standard([SPEC_SECRET], SPEC_SIGNATURE.replace("v1,", "v2,"))


def test_during_rotation_either_secret_is_accepted() -> None:
    _verify_standard([OTHER_SECRET, SPEC_SECRET])
    _verify_standard([SPEC_SECRET, OTHER_SECRET])
    signed_with_other = standard_signature(OTHER_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    _verify_standard([SPEC_SECRET, OTHER_SECRET], signed_with_other)
    with pytest.raises(SignatureError):
        _verify_standard([SPEC_SECRET], signed_with_other)


def test_standard_secrets_are_checked_for_length_and_base64() -> None:
    assert standard_secret_key(SPEC_SECRET) == base64.b64decode(SPEC_SECRET[6:])
    with pytest.raises(ValueError, match="base64"):
        standard_secret_key("whsec_not base64")
    with pytest.raises(ValueError, match="16 to 128 bytes"):
        standard_secret_key("whsec_" + base64.b64encode(b"short").decode())


def test_generated_secrets_are_random_and_well_formed() -> None:
    first, second = generate_standard_secret(), generate_standard_secret()
    assert first.startswith("whsec_")
    assert len(standard_secret_key(first)) == 32
    assert first != second
    assert len(generate_token()) >= 43
    assert generate_token() != generate_token()


def test_github_signature_is_the_hex_hmac_of_the_body() -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    expected = hmac.new(b"It's a Secret to Everybody", body, hashlib.sha256).hexdigest()
    assert github_signature("It's a Secret to Everybody", body) == f"sha256={expected}"
    verify_github(["It's a Secret to Everybody"], signature=f"sha256={expected}", body=body)
    verify_github(["new", "It's a Secret to Everybody"], signature=f"sha256={expected}", body=body)


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "missing"),
        ("sha1=abc", "not sha256"),
        ("sha256=zz", "not sha256"),
        (github_signature("other", b"{}"), "does not match"),
        (github_signature("secret", b"{} "), "does not match"),
    ],
)
def test_github_signatures_that_do_not_match_are_refused(
    signature: str | None, reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify_github(["secret"], signature=signature, body=b"{}")


def test_header_token_must_equal_one_of_the_secrets() -> None:
    verify_token(["a-long-enough-token"], presented="a-long-enough-token", header="X-Token")
    verify_token(["new-token-value", "old-token-value"], presented="old-token-value", header="X")
    with pytest.raises(SignatureError, match="X-Token does not match"):
        verify_token(["a-long-enough-token"], presented="a-long-enough-toke", header="X-Token")
    with pytest.raises(SignatureError, match="missing X-Token"):
        verify_token(["a-long-enough-token"], presented=None, header="X-Token")


def test_refusal_reasons_never_contain_secrets_or_signatures() -> None:
    attempts: list[Callable[[], None]] = [
        lambda: _verify_standard([SPEC_SECRET], "v1,AAAA"),
        lambda: verify_github([SPEC_SECRET], signature="sha256=00", body=b""),
        lambda: verify_token([SPEC_SECRET], presented="guess", header="X-Token"),
    ]
    for attempt in attempts:
        with pytest.raises(SignatureError) as refused:
            attempt()
        assert SPEC_SECRET not in str(refused.value)
        assert "AAAA" not in str(refused.value)
        assert "guess" not in str(refused.value)


def test_no_secret_configured_means_nothing_matches() -> None:
    with pytest.raises(SignatureError):
        _verify_standard([])
    with pytest.raises(SignatureError):
        verify_token([], presented="anything-at-all", header="X-Token")
