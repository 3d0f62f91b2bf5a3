"""`make run` installs the runtime dependencies only, with pip's progress; `make test` the dev tools.

The recipes are read with `make -n` (print, do not run): installing for real takes minutes
(the README quotes the measured first start).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _recipe(target: str, cwd: Path = ROOT, *, force: bool = True) -> list[str]:
    flags = ["-n", "-B"] if force else ["-n"]
    done = subprocess.run(
        ["make", "--no-print-directory", *flags, target],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        # Under `make test` the suite runs inside make: a nested make would otherwise print
        # "Entering directory" lines and inherit the outer make's flags.
        env={
            **{k: v for k, v in os.environ.items() if k not in {"MAKELEVEL", "MFLAGS"}},
            "MAKEFLAGS": "",
        },
    )
    return done.stdout.splitlines()


def _installs(lines: list[str]) -> list[str]:
    return [line for line in lines if "pip install" in line and "-e " in line]


def test_make_run_installs_runtime_dependencies_only_and_shows_progress() -> None:
    (install,) = _installs(_recipe("run"))
    assert install.endswith("-e .")
    assert "[dev]" not in install
    assert "--quiet" not in install
    assert "--progress-bar on" in install
    assert _recipe("run")[-1] == ".venv/bin/switchyard run"


def test_make_test_installs_the_dev_tools() -> None:
    (install,) = _installs(_recipe("test"))
    assert '".[dev]"' in install
    assert _recipe("test")[-1] == ".venv/bin/pytest"


def test_a_dev_install_counts_as_the_runtime_install(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert _installs(_recipe("run", tmp_path, force=False)), "a fresh clone installs on run"
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed-dev").touch()
    (tmp_path / ".venv" / ".installed-run").touch()
    assert _recipe("run", tmp_path, force=False) == [".venv/bin/switchyard run"]
    # after `make test`'s dev install (which touches both stamps), `make run` installs nothing
    assert "touch .venv/.installed-dev .venv/.installed-run" in _recipe("install", tmp_path)
