"""Run slow per-host jobs (libvirt connections) concurrently, each with a deadline.

libvirt calls cannot be interrupted, and a ``ThreadPoolExecutor`` joins its
workers at interpreter exit, so one hung ``qemu+ssh`` connection would hold
the whole command. Jobs run in daemon threads instead; a job that misses its
deadline is reported as timed out and abandoned.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class JobResult(Generic[T]):
    name: str
    value: T | None = None
    error: BaseException | None = None
    timed_out: bool = False
    seconds: float = 0.0


def run_all(
    jobs: Mapping[str, Callable[[], T]],
    *,
    timeout: float,
    workers: int = 16,
    on_done: Callable[[JobResult[T]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, JobResult[T]]:
    """Run every job; each gets ``timeout`` seconds from the moment it starts."""
    pending = list(jobs.items())
    results: dict[str, JobResult[T]] = {}
    done: queue.Queue[JobResult[T]] = queue.Queue()
    running: dict[str, float] = {}  # name -> start time

    def work(name: str, job: Callable[[], T], started: float) -> None:
        try:
            value = job()
        except BaseException as exc:  # reported per host, never lost in a thread
            done.put(JobResult(name, error=exc, seconds=clock() - started))
        else:
            done.put(JobResult(name, value=value, seconds=clock() - started))

    def finish(outcome: JobResult[T]) -> None:
        results[outcome.name] = outcome
        if on_done is not None:
            on_done(outcome)

    while pending or running:
        while pending and len(running) < max(1, workers):
            name, job = pending.pop(0)
            started = clock()
            running[name] = started
            threading.Thread(target=work, args=(name, job, started), name=f"cpuguard-{name}", daemon=True).start()
        deadline = min(running.values()) + timeout
        try:
            outcome = done.get(timeout=max(0.0, deadline - clock()))
        except queue.Empty:
            now = clock()
            for name, started in list(running.items()):
                if now - started >= timeout:
                    del running[name]
                    finish(JobResult(name, timed_out=True, seconds=now - started))
            continue
        if outcome.name in running:  # not already given up on
            del running[outcome.name]
            finish(outcome)
    return results
