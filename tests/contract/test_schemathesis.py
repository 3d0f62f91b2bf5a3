"""Contract fuzzing: schemathesis against a real `switchyard run --roles api` and its live spec.

Every operation of `/schema/openapi.json` is called with a valid token (examples, coverage,
fuzzing and stateful phases, following the spec's links from creates to what they created),
with every check: no 5xx, every status code, content type, header (`Allow`) and body as
declared, schema-valid requests accepted and schema-violating ones refused. The few narrow
exceptions live in `schemathesis.toml` next to this file, each with its reason. The CLI runs as
a subprocess (its pytest plugin's `from_fixture` does not work under pytest 9).

`CONTRACT_EXAMPLES` sets the examples per operation (20 here; `make contract` runs more).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Final

import httpx
import pytest

from tests.support.credentials import API_TOKEN, ENCRYPTION_KEY
from tests.support.processes import SWITCHYARD, environment, free_port
from tests.support.waiting import eventually

CONFIG: Final = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS: Final = Path(sys.executable).with_name("st")
EXAMPLES: Final = int(os.environ.get("CONTRACT_EXAMPLES", "20"))
START_TIMEOUT_SECONDS: Final = 60.0
RUN_TIMEOUT_SECONDS: Final = 170.0 if EXAMPLES <= 20 else 3000.0


@pytest.mark.timeout(RUN_TIMEOUT_SECONDS + 60)
async def test_the_live_api_keeps_its_openapi_contract_under_fuzzing(
    database_dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    env = environment(
        DATABASE_URL=database_dsn,
        ROLES="api",
        API_TOKENS=API_TOKEN,
        ENCRYPTION_KEYS=ENCRYPTION_KEY,
        HTTP_ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="WARNING",
    )
    log_path = tmp_path / "api.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(  # noqa: ASYNC220 - started once; it runs beside the loop
            [*SWITCHYARD, "run", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            await _wait_ready(url, server, log_path)
            returncode, report = await _schemathesis(url, tmp_path)
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert returncode == 0, (
        _summary(report) + "\n--- server log ---\n" + log_path.read_text()[-4000:]
    )
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    tested = re.search(r"Tested: (\d+)", report)
    assert selected is not None, report[-3000:]
    assert tested is not None, report[-3000:]
    assert selected[1] == selected[2] == tested[1], "every operation is tested"


async def _wait_ready(url: str, server: subprocess.Popen[str], log_path: Path) -> None:
    async with httpx.AsyncClient(timeout=2) as client:

        async def ready_status() -> int | str:
            if server.poll() is not None:
                raise AssertionError("the api exited early")
            try:
                return (await client.get(url + "/ready")).status_code
            except httpx.TransportError as error:
                return repr(error)

        try:
            await eventually(
                ready_status,
                until=lambda status: status == 200,
                what="the api ready (GET /ready answering 200)",
                within=START_TIMEOUT_SECONDS,
                every=0.1,
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{log_path.read_text()}") from None  # noqa: ASYNC240


async def _schemathesis(url: str, workdir: Path) -> tuple[int, str]:
    """Run `st run` against the live spec; its exit code and its whole report."""
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS), "--no-color", "--config-file", str(CONFIG),
        "run", f"{url}/schema/openapi.json",
        "--header", f"Authorization: Bearer {API_TOKEN}",
        "--max-examples", str(EXAMPLES),
        "--generation-deterministic",
        "--report-dir", str(workdir / "schemathesis-report"),
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"schemathesis ran over {RUN_TIMEOUT_SECONDS} s") from None
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def _summary(report: str) -> str:
    """The failures and the summary of a schemathesis report (the whole report is long)."""
    start = report.find("= FAILURES =")
    return report[start - 40 :] if start >= 0 else report[-6000:]
