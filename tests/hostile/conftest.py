"""Hostile-input tests: a hard time bound per test, and the figures printed at the end."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from tests.hostile.tally import summary_lines

#: No hostile-input test may run longer than this: a hang must fail, not stall CI.
TEST_SECONDS = 120


class Hung(Exception):
    pass


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "time_bound(seconds): a longer bound than TEST_SECONDS for one test")


@pytest.fixture(autouse=True)
def _time_bound(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("time_bound")
    seconds = int(marker.args[0]) if marker else TEST_SECONDS

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hung(f"test still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory for thousands of short-lived files: in memory (/dev/shm) where there is one."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="cpuguard-hostile-", dir=shm))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = summary_lines()
    if lines:
        terminalreporter.section("hostile inputs and fuzzing")
        for line in lines:
            terminalreporter.write_line(line)
