"""The fixed credentials the suite runs with: the API token every test app and process accepts,
and an encryption keyring entry for processes started with ENCRYPTION_KEYS."""

from __future__ import annotations

from typing import Final

API_TOKEN: Final = "sy_test-token-for-the-api-suite"
ENCRYPTION_KEY: Final = "test:" + "A" * 43 + "="  # key id `test`, 32 zero bytes in base64
