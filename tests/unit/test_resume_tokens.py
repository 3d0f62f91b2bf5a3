"""Resume tokens: signed by the keyring's primary key, verified by any of its keys, and a
token altered in any part (or made for another step or execution) verifies as nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from server.crypto.aead import Keyring
from server.crypto.resume_tokens import PURPOSE, ResumeTarget, ResumeTokens

OLD_KEY = bytes(range(32))
NEW_KEY = bytes(range(32, 64))
EXECUTION = uuid.UUID("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b")


def tokens(*keys: tuple[str, bytes]) -> ResumeTokens:
    return ResumeTokens(Keyring(list(keys)).derived_keys(PURPOSE))


def test_a_token_names_its_execution_and_step_in_url_safe_characters() -> None:
    signer = tokens(("k1", OLD_KEY))
    token = signer.sign(EXECUTION, "approval")
    assert token.startswith(f"{EXECUTION}.approval.")
    assert all(c.isalnum() or c in "-_." for c in token)
    assert signer.verify(token) == ResumeTarget(execution_id=EXECUTION, step_key="approval")


def test_a_token_signed_before_a_key_rotation_verifies_while_the_old_key_stays() -> None:
    before = tokens(("old", OLD_KEY)).sign(EXECUTION, "approval")
    rotated = tokens(("new", NEW_KEY), ("old", OLD_KEY))
    assert rotated.verify(before) is not None
    assert rotated.sign(EXECUTION, "approval") != before  # the new primary signs
    assert tokens(("new", NEW_KEY)).verify(before) is None


@pytest.mark.parametrize(
    "alter",
    [
        lambda t: t.replace(".approval.", ".approvals."),  # another step
        lambda t: str(uuid.UUID(int=7)) + t[36:],  # another execution
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # another MAC
        lambda t: t[:-2],  # a truncated MAC
        lambda t: t + ".x",  # an extra part
        lambda t: "x" * 300,  # too long to be one
        lambda t: "not-a-uuid.approval." + t.rsplit(".", 1)[1],
    ],
)
def test_an_altered_token_verifies_as_nothing(alter: Callable[[str], str]) -> None:
    signer = tokens(("k1", OLD_KEY))
    assert signer.verify(alter(signer.sign(EXECUTION, "approval"))) is None


def test_the_signing_key_is_derived_not_the_encryption_key_itself() -> None:
    keyring = Keyring([("k1", OLD_KEY)])
    [derived] = keyring.derived_keys(PURPOSE)
    assert len(derived) == 32
    assert derived != OLD_KEY
    assert keyring.derived_keys(b"another purpose") != (derived,)
