"""Per-host jobs run concurrently; a hung one is abandoned at its deadline."""

from __future__ import annotations

import threading
import time

from cpuguard.planning.concurrency import JobResult, run_all


def test_results_errors_and_timeouts() -> None:
    release = threading.Event()

    def hang() -> str:
        release.wait(10)
        return "late"

    def fail() -> str:
        raise OSError("connection refused")

    seen: list[str] = []
    started = time.monotonic()
    results = run_all(
        {"ok": lambda: "facts", "bad": fail, "hung": hang},
        timeout=0.3,
        on_done=lambda r: seen.append(r.name),
    )
    release.set()
    assert time.monotonic() - started < 2
    assert results["ok"].value == "facts" and results["ok"].error is None
    assert isinstance(results["bad"].error, OSError)
    assert results["hung"].timed_out and results["hung"].value is None
    assert sorted(seen) == ["bad", "hung", "ok"] and seen[-1] == "hung"


def test_workers_limit_concurrency() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def job() -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return 1

    results: dict[str, JobResult[int]] = run_all({f"h{i}": job for i in range(12)}, timeout=5, workers=3)
    assert sum(r.value or 0 for r in results.values()) == 12
    assert peak == 3
