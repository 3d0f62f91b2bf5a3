"""Checks of a webhook endpoint's `registration` before it is stored (DESIGN §6).

Each problem names the field and the fix: PUBLIC_URL must be set (the sender is given PUBLIC_URL
+ /hooks/{path}); the credential must exist and be of a type the provider can use (`api_key`
for `github`; `api_key` or `basic_auth` for `http`); a `github` registration sends the
endpoint's `github` secret, so the endpoint's auth type must be `github`; `http` templates must
compile and `renew` needs `renew_every_seconds`. The provider's own fields are checked by the
request's schema (a missing `repository` or `subscribe` answers 400 naming it).
"""

from __future__ import annotations

from typing import Final

from config.settings import Settings
from server.db.credentials import credential_type_of
from server.errors import ValidationError, field_error
from server.triggers.registration import GitHubRegistration, Registration, spec_problems

CREDENTIAL_TYPES: Final = {"github": ("api_key",), "http": ("api_key", "basic_auth")}


async def check_registration(
    registration: Registration, *, auth_type: str, settings: Settings
) -> None:
    """Raise ValidationError listing every problem of `registration` on an endpoint whose
    auth type is `auth_type`."""
    problems = [field_error(field, message) for field, message in spec_problems(registration)]
    if settings.public_url is None:
        problems.append(
            field_error(
                "registration",
                "needs PUBLIC_URL: set PUBLIC_URL on the api and scheduler processes to the "
                "address senders reach Switchyard at (the sender is given PUBLIC_URL + "
                "/hooks/{path})",
            )
        )
    provider = "github" if isinstance(registration, GitHubRegistration) else "http"
    if isinstance(registration, GitHubRegistration) and auth_type != "github":
        problems.append(
            field_error(
                "auth.type",
                "a github registration sends the endpoint's github secret to GitHub: use "
                '"auth": {"type": "github"} (a secret is generated when none is given)',
            )
        )
    if registration.credential is not None:
        found = await credential_type_of(registration.credential)
        allowed = CREDENTIAL_TYPES[provider]
        if found is None:
            problems.append(
                field_error(
                    "registration.credential",
                    f"no credential is named {registration.credential!r}; create a "
                    f"{' or '.join(allowed)} credential with POST /api/v1/credentials",
                )
            )
        elif found not in allowed:
            problems.append(
                field_error(
                    "registration.credential",
                    f"is a {found!r} credential; a {provider} registration needs "
                    f"{' or '.join(repr(t) for t in allowed)}",
                )
            )
    if problems:
        raise ValidationError(
            "the webhook's registration cannot be kept at the sender; fix each field listed "
            "in errors",
            problems,
        )
