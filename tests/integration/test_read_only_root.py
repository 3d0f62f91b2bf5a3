"""The server works on a read-only root filesystem with only its emptyDirs writable, as the
Kubernetes manifests run it (`readOnlyRootFilesystem: true`, emptyDirs at /tmp and /data).

The process runs in a private mount namespace (`unshare -m`, so root only) where `/` is
remounted read-only and one tmpfs stands for the emptyDirs (TMPDIR, DATA_DIR and the object
store folder); every role runs a workflow end to end there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.support.processes import SWITCHYARD, ServerProcess, environment, free_port
from tests.support.waiting import eventually_sync

TOKEN = "read-only-root-token-0123"
WAIT_SECONDS = 20.0
# In a private mount namespace: `/` read-only, then a tmpfs for what the pod may write.
SANDBOX = (
    "mount --bind / / && mount -o remount,bind,ro / && "
    'mount -t tmpfs -o size=128m tmpfs "$WRITABLE" && mkdir "$WRITABLE/tmp" "$WRITABLE/data" && '
    'cd "$WRITABLE" && exec "$@"'
)


def _sandboxed(command: list[str]) -> list[str]:
    unshare = shutil.which("unshare")
    assert unshare is not None
    return [unshare, "-m", "--propagation", "private", "sh", "-c", SANDBOX, "sh", *command]


def _can_sandbox() -> bool:
    """Whether this machine lets us build the sandbox (root, unshare, mount in a namespace)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as writable:
        probe = subprocess.run(
            _sandboxed(["true"]),
            env=environment(WRITABLE=writable),
            capture_output=True,
            check=False,
            timeout=10,
        )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _can_sandbox(), reason="needs root and unshare for a private read-only mount namespace"
)


def test_the_sandbox_refuses_writes_outside_the_writable_folder(tmp_path: Path) -> None:
    writable = tmp_path / "writable"
    writable.mkdir()
    outside = tmp_path / "outside"
    result = subprocess.run(
        _sandboxed(["sh", "-c", f'touch "$WRITABLE/tmp/inside" && touch "{outside}"']),
        env=environment(WRITABLE=str(writable)),
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    assert not outside.exists()


def test_every_role_runs_a_workflow_on_a_read_only_root(database_dsn: str, tmp_path: Path) -> None:
    writable = tmp_path / "writable"
    writable.mkdir()
    port = free_port()
    env = environment(
        WRITABLE=str(writable),
        DATABASE_URL=database_dsn,
        API_TOKENS=TOKEN,
        TMPDIR=str(writable / "tmp"),
        DATA_DIR=str(writable / "data"),
        OBJECT_STORE_URL=f"file://{writable}/data/objects",
        ENCRYPTION_KEYS="k1:" + "A" * 43 + "=",
        PYTHONDONTWRITEBYTECODE="0",  # let Python try to write bytecode, as in the image
    )
    command = [*SWITCHYARD, "run", "--port", str(port), "--roles", "api,worker,scheduler"]
    process = subprocess.Popen(
        _sandboxed(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    server = ServerProcess(process, port)
    try:
        server.wait_ready()
        _run_a_workflow(server.url)
        assert server.stop() == 0, server.output()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output = server.output()
    assert "Read-only file system" not in output
    assert "Traceback" not in output


def _run_a_workflow(url: str) -> None:
    document = {
        "name": "Echo",
        "steps": [
            {
                "key": "echo",
                "kind": "action",
                "action_key": "transform",
                "cfg": {"output": {"total": "{{ trigger.total }}"}},
            }
        ],
        "subscriptions": [{"trigger_key": "orders"}],
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        source = {"trigger_key": "orders", "type": "event"}
        assert client.post("/api/v1/registry/triggers", json=source).status_code == 201
        imported = client.post(
            "/api/v1/workflows/import", params={"publish": "true"}, json=document
        )
        assert imported.status_code == 201, imported.text  # the document went to the store
        workflow_id = imported.json()["id"]
        started = client.post(f"/api/v1/workflows/{workflow_id}/run", json={"input": {"total": 3}})
        assert started.status_code == 202, started.text
        execution_id = started.json()["execution_id"]
        body = eventually_sync(
            lambda: client.get(f"/api/v1/executions/{execution_id}").json(),
            until=lambda body: body["status"] in {"SUCCESS", "FAILED"},
            what=f"execution {execution_id} finished",
            within=WAIT_SECONDS,
            every=0.1,
        )
        assert body["status"] == "SUCCESS", body
