"""Shared test helpers: real data, real tools, no mocks.

A test that needs a tool (virsh, gcc, qemu, chromium) calls ``need_tool``:
without it the test is skipped locally, but fails under CI=true, where
scripts/install --test must have provided it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cpuguard.knowledge import Knowledge, load_knowledge

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
EXAMPLE_POLICIES = ROOT / "policies"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/install --test installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def need_libguestfs() -> None:
    """libguestfs' Python binding (python3-guestfs): a skip locally, a failure under CI."""
    from cpuguard.guest.worker import import_guestfs

    if import_guestfs() is None:
        message = "libguestfs (python3-guestfs) is not installed (scripts/install installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    return load_knowledge()


def run_cpuguard(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cpuguard`` in a subprocess, the way a user does."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CPUGUARD_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cpuguard", *args],
        cwd=cwd,
        env=full_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def cli():  # type: ignore[no-untyped-def]
    return run_cpuguard
