"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def agent_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``algocyte-agent`` console script as a user would."""
    exe = shutil.which("algocyte-agent", path=str(Path(sys.executable).parent)) or "algocyte-agent"
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO
    )


@pytest.fixture
def cli() -> object:
    return agent_cli


@pytest.fixture(scope="session", autouse=True)
def session_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point TMPDIR (ours and every child's) into pytest's own, pruned, temp tree.

    Tests SIGKILL daemons and simulators on purpose; a killed process cannot remove the
    pseudo-terminal folders and work files it made, which would otherwise pile up in /tmp.
    """
    import tempfile

    folder = tmp_path_factory.mktemp("tmpdir")
    saved_env, saved_cached = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    yield folder
    tempfile.tempdir = saved_cached
    if saved_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved_env
