"""The `github` provider: a repository hook kept with GitHub's REST hooks API.

Every pass starts by listing the repository's hooks (one call per 100 hooks), which is both the
check and the idempotent lookup: "ours" are the hooks whose `config.url` is our callback URL (or
the URL we registered before PUBLIC_URL or the path changed) or whose id we recorded.

- Wanted: the recorded hook is kept if it is still there, else the first of ours (a hook a killed
  replica created but could not record is adopted, not duplicated); if there is none, one is
  created (`call_started` first, its id recorded at once). A kept hook whose URL, events or
  `active` differ from ours, or when a change waits (a rotated secret, which GitHub never shows
  back), is corrected with PATCH, secret included. Any other hook of ours is deleted, so a
  duplicate left by a call that landed late is gone after one pass.
- Not wanted: every hook of ours is deleted (404 counts as deleted).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from server.db.registration_runs import SenderSide
from server.scheduler.registration_pass import Reached, RegistrationPass
from server.scheduler.sender_calls import SenderCallError
from server.triggers.registration import GitHubRegistration, RegistrationState, github_api_root

PAGE_SIZE: Final = 100
MAX_PAGES: Final = 10
HEADERS: Final = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
NOT_FOUND: Final = 404


class Hook(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    url: str | None
    events: list[str]
    active: bool


def github_auth_headers(credential: dict[str, Any]) -> dict[str, str]:
    token = credential.get("api_key")
    return {"Authorization": f"Bearer {token}"} if isinstance(token, str) and token else {}


async def reconcile_github(work: RegistrationPass, spec: GitHubRegistration) -> Reached:
    hooks_url = f"{github_api_root(work.credential.get('base_url'))}/repos/{spec.repository}/hooks"
    hooks = await _list_hooks(work, hooks_url)
    urls = {work.callback_url, work.side.registered_url} - {None}
    ours = [h for h in hooks if h.url in urls or str(h.id) == work.side.external_id]
    if not work.work.should_exist:
        for hook in ours:
            await _delete(work, hooks_url, hook.id)
        await work.record(SenderSide())
        return Reached(state=RegistrationState.REMOVED)
    kept = next((h for h in ours if str(h.id) == work.side.external_id), None)
    kept = kept or (ours[0] if ours else None)
    if kept is None:
        await work.creating()
        _, created = await work.calls.call(
            "POST", hooks_url, body=_hook_body(work, spec, name=True), headers=HEADERS
        )
        hook_id = created.get("id") if isinstance(created, dict) else None
        if not isinstance(hook_id, int):
            raise SenderCallError(f"POST {hooks_url} answered without a hook id")
        await work.record(SenderSide(external_id=str(hook_id), registered_url=work.callback_url))
    else:
        hook_id = kept.id
        if str(hook_id) != work.side.external_id:  # adopted: record it before anything else
            await work.record(SenderSide(external_id=str(hook_id), registered_url=kept.url))
        if work.changed or _differs(kept, work.callback_url, spec):
            await work.calls.call(
                "PATCH", f"{hooks_url}/{hook_id}", body=_hook_body(work, spec), headers=HEADERS
            )
            await work.record(
                SenderSide(external_id=str(hook_id), registered_url=work.callback_url)
            )
    for hook in ours:
        if hook.id != hook_id:
            await _delete(work, hooks_url, hook.id)
    return Reached(state=RegistrationState.REGISTERED)


def _differs(hook: Hook, url: str, spec: GitHubRegistration) -> bool:
    return hook.url != url or set(hook.events) != set(spec.events) or not hook.active


def _hook_body(work: RegistrationPass, spec: GitHubRegistration, *, name: bool = False) -> Any:
    config = {
        "url": work.callback_url,
        "content_type": "json",
        "insecure_ssl": "0",
        "secret": work.secret or "",
    }
    body: dict[str, Any] = {"active": True, "events": list(spec.events), "config": config}
    if name:
        body["name"] = "web"
    return body


async def _list_hooks(work: RegistrationPass, hooks_url: str) -> list[Hook]:
    hooks: list[Hook] = []
    for page in range(1, MAX_PAGES + 1):
        _, answer = await work.calls.call(
            "GET", f"{hooks_url}?per_page={PAGE_SIZE}&page={page}", headers=HEADERS
        )
        if not isinstance(answer, list):
            raise SenderCallError(f"GET {hooks_url} did not answer a list of hooks")
        hooks.extend(_hook(item) for item in answer if isinstance(item, dict))
        if len(answer) < PAGE_SIZE:
            break
    return hooks


def _hook(item: dict[str, Any]) -> Hook:
    config = item.get("config") if isinstance(item.get("config"), dict) else {}
    url = config.get("url") if isinstance(config, dict) else None
    events = item.get("events")
    return Hook(
        id=int(item.get("id", 0)),
        url=url if isinstance(url, str) else None,
        events=[e for e in events if isinstance(e, str)] if isinstance(events, list) else [],
        active=bool(item.get("active", True)),
    )


async def _delete(work: RegistrationPass, hooks_url: str, hook_id: int) -> None:
    await work.calls.call(
        "DELETE", f"{hooks_url}/{hook_id}", headers=HEADERS, expected=(NOT_FOUND,)
    )
