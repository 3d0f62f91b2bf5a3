"""The `keyring` dependency: the process's encryption keys, loaded once by the lifespan."""

from __future__ import annotations

from litestar.datastructures import State

from server.crypto.aead import Keyring


def provide_keyring(state: State) -> Keyring:
    keyring: Keyring = state.keyring
    return keyring
