"""Inspect guests: run appliance workers with a time bound per guest, scan what they copied out.

One worker process (:mod:`cpuguard.guest.worker`) launches one libguestfs
appliance for a batch of guests. A guest that takes longer than its bound
gets its worker killed (with the appliance) and a one-line problem; the
guests of that batch not yet read go to a new worker. A guest that could
not share an appliance (LVM volume group names may clash; one broken file
system fails the inspection of all) is read in a smaller batch: alone, or by
halves until the broken one is alone.
The files copied out are scanned by :func:`cpuguard.scan.scan_paths` here,
with the scan cache, and reported under their guest paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpuguard.guest.errors import one_line
from cpuguard.guest.records import Disk, Found, GuestOs, GuestScan, OsNeed
from cpuguard.scan.records import FileScan, ScanReport

#: Seconds an appliance may take to start (TCG on a busy machine: well over a minute).
LAUNCH_TIMEOUT = 600.0
#: Seconds one guest may take once the appliance runs.
GUEST_TIMEOUT = 900.0
#: Guests one appliance carries at most (libguestfs takes up to 255 disks).
BATCH_GUESTS = 16


@dataclass(frozen=True)
class GuestJob:
    vm: str
    disks: tuple[Disk, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuestFailure:
    vm: str
    problem: str  # one line


@dataclass(frozen=True)
class Event:
    """Progress for a caller's bar: ``launched``, ``start``, ``done`` (with ``vm``)."""

    kind: str
    vm: str = ""
    ok: bool = True
    detail: str = ""


Progress = Callable[[Event], None]


WORKER_MODULE = "cpuguard.guest.worker"


class Worker:
    """One running appliance worker process (``python -m MODULE``, a JSON job on its stdin)
    and its event stream (JSON lines on its stdout)."""

    def __init__(self, job: dict[str, Any], environ: Mapping[str, str], module: str = WORKER_MODULE) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(environ),
            start_new_session=True,  # its own process group: a kill takes the appliance with it
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(job).encode())
        self.process.stdin.close()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.put(event)
        self.events.put(None)

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event; ``{}`` when ``timeout`` passed; None at the end of the stream."""
        try:
            return self.events.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return {}

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()


def disk_json(disk: Disk) -> dict[str, Any]:
    return {"target": disk.target, "path": disk.path, "format": disk.format}


class _Run:
    def __init__(
        self,
        staging: str,
        *,
        all_files: bool,
        launch_timeout: float,
        guest_timeout: float,
        environ: Mapping[str, str],
        progress: Progress | None,
    ) -> None:
        self.staging = staging
        self.all_files = all_files
        self.launch_timeout = launch_timeout
        self.guest_timeout = guest_timeout
        self.environ = environ
        self.progress = progress
        self.lock = threading.Lock()
        self.results: dict[str, dict[str, Any]] = {}

    def tell(self, event: Event) -> None:
        if self.progress is not None:
            with self.lock:
                self.progress(event)

    def finish(self, vm: str, result: dict[str, Any]) -> None:
        with self.lock:
            self.results[vm] = result
        ok = result.get("status") == "ok"
        problems = result.get("problems") or []
        if not ok:
            detail = str(result.get("problem", ""))
        elif problems:
            detail = f"incomplete: {one_line(str(problems[0]))}"
        else:
            detail = ""
        self.tell(Event("done", vm, ok and not problems, detail))

    def batch(self, jobs: Sequence[GuestJob]) -> None:
        """Read ``jobs`` in one appliance; guests left by a kill or a split go to new workers."""
        groups = [list(jobs)]
        while groups:
            group = groups.pop(0)
            if group:
                groups[:0] = self._one_worker(group)

    def _one_worker(self, jobs: Sequence[GuestJob]) -> list[list[GuestJob]]:
        """Run one worker over ``jobs``; the groups of guests still to read."""
        request = {
            "staging": self.staging,
            "all_files": self.all_files,
            "guests": [{"vm": job.vm, "disks": [disk_json(d) for d in job.disks]} for job in jobs],
        }
        worker = Worker(request, self.environ)
        deadline = time.monotonic() + self.launch_timeout
        current: str | None = None
        done: set[str] = set()

        def left() -> list[GuestJob]:
            return [job for job in jobs if job.vm not in done]

        try:
            while True:
                event = worker.next(deadline - time.monotonic())
                if event == {}:  # out of time
                    if current is None:
                        problem = f"appliance did not start within {self.launch_timeout:g} s"
                        return self._fail_all(left(), problem)
                    self.finish(current, {"status": "error", "problem": f"no result within {self.guest_timeout:g} s"})
                    done.add(current)
                    return [left()]
                if event is None:  # the worker ended
                    if current is not None and current not in done:
                        self.finish(current, {"status": "error", "problem": "the inspection worker died"})
                        done.add(current)
                        return [left()]
                    return self._fail_all(left(), "the inspection worker ended without a result")
                kind = event.get("event")
                if kind == "failed":
                    return self._fail_all(left(), str(event.get("problem", "")))
                if kind == "split":
                    rest = left()
                    if event.get("halves"):
                        middle = len(rest) // 2
                        return [rest[:middle], rest[middle:]]
                    alone = set(event.get("alone") or ())
                    return [*([job] for job in rest if job.vm in alone), [job for job in rest if job.vm not in alone]]
                if kind == "launched":
                    self.tell(Event("launched"))
                elif kind == "start":
                    current = str(event.get("vm"))
                    deadline = time.monotonic() + self.guest_timeout
                    self.tell(Event("start", current))
                elif kind == "done":
                    vm = str(event.get("vm"))
                    done.add(vm)
                    current = None
                    self.finish(vm, event.get("result") or {})
                    if not left():
                        return []
        finally:
            worker.kill()

    def _fail_all(self, jobs: Sequence[GuestJob], problem: str) -> list[list[GuestJob]]:
        for job in jobs:
            self.finish(job.vm, {"status": "error", "problem": one_line(problem)})
        return []


def _os(raw: dict[str, Any] | None) -> tuple[GuestOs | None, OsNeed | None]:
    if not raw:
        return None, None
    guest_os = GuestOs(
        kind=str(raw.get("kind", "")),
        distro=str(raw.get("distro", "")),
        name=str(raw.get("name", "")),
        version=str(raw.get("version", "")),
        os_id=str(raw.get("os_id", "")),
        id_like=tuple(str(x) for x in raw.get("id_like", ())),
        version_id=str(raw.get("version_id", "")),
        root=str(raw.get("root", "")),
    )
    floor = raw.get("floor")
    need = OsNeed(floor["level"], floor["family"], floor["source"], floor.get("note", "")) if floor else None
    return guest_os, need


def _scan_found(
    found: list[Found], scan_cache: Path | None, jobs: int | None, now: Callable[[], datetime]
) -> ScanReport:
    """Scan the copied-out files; report them under their guest paths."""
    from cpuguard.scan.scanner import scan_paths
    from cpuguard.scan.summary import totals

    staged = [f for f in found if f.staged]
    by_staged = {f.staged: f.path for f in staged}
    if staged:
        report = scan_paths([Path(f.staged) for f in staged], cache_dir=scan_cache, jobs=jobs, library_dirs=[], now=now)
        files = [replace(scan, path=by_staged.get(scan.path, scan.path)) for scan in report.files]
    else:
        files = []
    files.extend(FileScan(f.path, skipped=f.problem) for f in found if not f.staged)
    return ScanReport(tuple(files), totals(files), now())


def inspect_guests(
    jobs: Sequence[GuestJob],
    *,
    all_files: bool = False,
    concurrency: int = 1,
    batch_guests: int = BATCH_GUESTS,
    launch_timeout: float = LAUNCH_TIMEOUT,
    guest_timeout: float = GUEST_TIMEOUT,
    scan_cache: Path | None = None,
    scan_jobs: int | None = None,
    progress: Progress | None = None,
    environ: Mapping[str, str] = os.environ,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, GuestScan | GuestFailure]:
    """Read every guest of ``jobs``; a failure of one is its own one-line problem."""
    staging = tempfile.mkdtemp(prefix="cpuguard-guest-")
    os.chmod(staging, 0o700)
    try:
        run = _Run(
            staging,
            all_files=all_files,
            launch_timeout=launch_timeout,
            guest_timeout=guest_timeout,
            environ=environ,
            progress=progress,
        )
        size = max(1, min(batch_guests, -(-len(jobs) // max(concurrency, 1))))
        batches = [list(jobs[i : i + size]) for i in range(0, len(jobs), size)]
        if concurrency > 1 and len(batches) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(run.batch, batches))
        else:
            for batch in batches:
                run.batch(batch)
        results: dict[str, GuestScan | GuestFailure] = {}
        for job in jobs:
            raw = run.results.get(job.vm, {"status": "error", "problem": "not inspected"})
            if raw.get("status") != "ok":
                results[job.vm] = GuestFailure(job.vm, one_line(str(raw.get("problem", "inspection failed"))))
                continue
            found = [
                Found(
                    str(f["path"]),
                    str(f["reason"]),
                    str(f["disk"]),
                    str(f.get("staged", "")),
                    str(f.get("problem", "")),
                )
                for f in raw.get("files", [])
            ]
            guest_os, need = _os(raw.get("os"))
            report = _scan_found(found, scan_cache, scan_jobs, now)
            results[job.vm] = GuestScan(
                vm=job.vm,
                disks=job.disks,
                scanned_at=report.scanned_at,
                os=guest_os,
                os_need=need,
                files=tuple(replace(f, staged="") for f in found),
                report=report,
                problems=tuple(one_line(str(p)) for p in raw.get("problems", [])),
                notes=(*job.notes, *(one_line(str(n)) for n in raw.get("notes", []))),
            )
        return results
    finally:
        shutil.rmtree(staging, ignore_errors=True)
